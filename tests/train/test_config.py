"""The shipped training configs load, and bad values are refused with ConfigError."""

import dataclasses
import re
import shutil
import subprocess

import pytest

from lsqface.config import from_dict
from lsqface.errors import ConfigError
from lsqface.train.config import TrainConfig, load_train_config
from tests.conftest import REPOSITORY_ROOT


LSQFACE_CONFIGS = sorted(path.stem for path in (REPOSITORY_ROOT / "configs").glob("*.toml") if not path.stem.startswith("mofa-"))


@pytest.mark.parametrize("name", LSQFACE_CONFIGS)
def test_shipped_configs_load(name):
    config = load_train_config(REPOSITORY_ROOT / "configs" / f"{name}.toml")
    assert config.input_size % 16 == 0
    assert config.pretrain.batch_size % config.micro_batches == 0


def test_paper_config_has_the_paper_settings():
    config = load_train_config(REPOSITORY_ROOT / "configs" / "paper.toml")
    assert config.network.variant == "regular" and config.solver.sample_count == 10000
    assert (config.pretrain.steps, config.pretrain.batch_size, config.pretrain.image_count) == (14000, 5, 1000)
    assert config.adaptive.update_ratio == 0.05 and config.adaptive.rate_range == (0.99, 1.01)


@pytest.mark.parametrize("values", [
    {"input_size": 40},
    {"micro_batches": 0},
    {"pretrain": {"landmarks_5": [1.0, 2.0]}},
    {"data": {"source": "imagenet"}},
    {"train": {"supervision": "landmarks"}},
    {"train": {"learning_rate_decay": "linear"}},
    {"pretrain": {"final_learning_rate_fraction": 1.5}},
    {"train": {"supervision": "true_maps"}, "data": {"source": "celeba", "root": "/nowhere"}},
    {"data": {"shadows": 1.5}},
    {"data": {"wild_textures": -0.1}},
])
def test_bad_values_are_config_errors(values):
    with pytest.raises(ConfigError):
        from_dict(TrainConfig, values)


@pytest.mark.parametrize("name", ["finetune-shape", "finetune-landmarks", "finetune-fit", "finetune-fit-long"])
def test_the_fine_tunes_continue_the_default_model(name):
    default = load_train_config(REPOSITORY_ROOT / "configs" / "default.toml")
    finetune = load_train_config(REPOSITORY_ROOT / "configs" / f"{name}.toml")
    # --init needs the same network and input; the data are the same kind of faces, new ones.
    assert finetune.network == default.network and finetune.input_size == default.input_size
    assert finetune.data == default.data and finetune.seed != default.seed
    assert finetune.train.supervision == "true_maps" and finetune.losses.true_shape_weight > 0
    assert finetune.solver.shape_weight == default.solver.shape_weight
    assert (finetune.losses.true_landmark_weight > 0) == (name != "finetune-shape")


def test_the_second_true_map_stage_is_the_first_at_a_lower_rate_on_new_faces():
    default = load_train_config(REPOSITORY_ROOT / "configs" / "default.toml")
    second = load_train_config(REPOSITORY_ROOT / "configs" / "continue-true-maps.toml")
    assert second.seed != default.seed and second.train.learning_rate < default.train.learning_rate
    same = dataclasses.replace(second, seed=default.seed,
                               train=dataclasses.replace(second.train, learning_rate=default.train.learning_rate))
    assert same == default


def test_the_long_fine_tune_is_the_shipped_one_run_longer_on_new_faces():
    shipped = load_train_config(REPOSITORY_ROOT / "configs" / "finetune-fit.toml")
    long = load_train_config(REPOSITORY_ROOT / "configs" / "finetune-fit-long.toml")
    assert long.seed != shipped.seed and long.train.steps > shipped.train.steps
    assert dataclasses.replace(long, seed=shipped.seed, train=dataclasses.replace(long.train, steps=shipped.train.steps)) == shipped


def test_the_shipped_model_was_trained_by_its_committed_config():
    # The config stored in the shipped checkpoint is the committed config of the recipe's last stage.
    from lsqface.nets.checkpoint import load_checkpoint

    payload = load_checkpoint(REPOSITORY_ROOT / "lsqface" / "weights" / "default.pt")
    last = payload["metadata"]["notes"]["recipe"][-1].split()
    assert last[last.index("--config") + 1] == "configs/photo-continue.toml"
    stored = from_dict(TrainConfig, payload["metadata"]["training_config"])
    assert stored == load_train_config(REPOSITORY_ROOT / last[last.index("--config") + 1])


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_default_model_runs_the_model_cards_recipe(tmp_path):
    # `make default-model` trains by the recipe stored in the shipped checkpoint's notes, and its export
    # flags give the shipped inference settings: exporting the shipped file itself with them changes nothing.
    from lsqface.cli import main
    from lsqface.nets.checkpoint import load_checkpoint

    runs = tmp_path / "runs"
    listing = subprocess.run(["make", "-n", "default-model", f"RUNS={runs}"], cwd=REPOSITORY_ROOT, check=True,
                             capture_output=True, text=True).stdout
    shipped_path = REPOSITORY_ROOT / "lsqface" / "weights" / "default.pt"
    shipped = load_checkpoint(shipped_path)
    trained = [re.sub(r"^.*?lsqface train ", "lsqface train ", line).split(" $(test")[0].split()
               for line in listing.splitlines() if "lsqface train " in line]
    recipe = [line.replace("runs/", f"{runs}/").split() for line in shipped["metadata"]["notes"]["recipe"]]
    assert sorted(map(sorted, trained)) == sorted(map(sorted, recipe)) and len(trained) == len(recipe)
    exports = [line.split("lsqface export ")[1].split() for line in listing.splitlines() if "lsqface export " in line]
    # The weights stage 6 continues: stage 5's checkpoints averaged with the whole-head stage's step 3,500,
    # the export line stored in the notes; one stage of the recipe starts from them.
    average, export = exports
    assert ["lsqface", "export", *average] == shipped["metadata"]["notes"]["average"].replace("runs/", f"{runs}/").split()
    averaged = average[average.index("-o") + 1]
    assert [stage[stage.index("--init") + 1] for stage in recipe if "--init" in stage].count(averaged) == 1
    # The final export line is the one in the notes, from the last stage's last checkpoint.
    assert export[0] == recipe[-1][recipe[-1].index("--run-dir") + 1] + "/last.pt"
    noted = shipped["metadata"]["notes"]["export"].replace("runs/", f"{runs}/").split()
    assert ["lsqface", "export", *export] == noted
    settings = export[3:]
    output = tmp_path / "default.pt"
    assert main(["export", str(shipped_path), "-o", str(output), *settings]) == 0
    exported = load_checkpoint(output)
    assert exported["solver_config"] == shipped["solver_config"]
    assert exported["reconstruct_config"] == shipped["reconstruct_config"]
