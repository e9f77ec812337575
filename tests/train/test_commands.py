"""lsqface pretrain / train on the command line: a tiny run end to end, and a refused checkpoint."""

import pytest

from lsqface.cli import main
from tests.conftest import REPOSITORY_ROOT

TINY = str(REPOSITORY_ROOT / "configs" / "tiny.toml")


def test_pretrain_then_train_then_refuse_a_cut_checkpoint(ict_archive, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pretrain_dir, train_dir = tmp_path / "pretrain", tmp_path / "train"
    common = ["--config", TINY, "--source", str(ict_archive), "--quiet", "--steps", "2"]
    assert main(["pretrain", *common, "--run-dir", str(pretrain_dir)]) == 0
    assert (pretrain_dir / "last.pt").is_file()
    assert main(["train", *common, "--run-dir", str(train_dir), "--init", str(pretrain_dir / "last.pt")]) == 0
    assert "train finished at step 2" in capsys.readouterr().out
    # --resume continues the same run: two more steps.
    assert main(["train", *common[:-1], "4", "--run-dir", str(train_dir), "--resume"]) == 0
    assert "train finished at step 4" in capsys.readouterr().out
    cut = tmp_path / "cut.pt"
    data = (train_dir / "last.pt").read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    assert main(["train", *common, "--run-dir", str(train_dir), "--resume", str(cut)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("lsqface: error:") and "cut short" in error and len(error.splitlines()) == 1
    # export: the shipped form keeps the network (same maps) and drops the training state.
    notes = tmp_path / "notes.json"
    notes.write_text('{"fitted_mean": 4.2}')
    exported = tmp_path / "exported.pt"
    assert main(["export", str(train_dir / "last.pt"), "-o", str(exported), "--notes", str(notes),
                 "--solver", "robust_iterations=5", "--ensemble", "4", "--refine", "1", "--refine-fraction", "0.75"]) == 0
    import torch

    from lsqface.nets.checkpoint import load_checkpoint, network_from_checkpoint

    original, shipped = load_checkpoint(train_dir / "last.pt"), load_checkpoint(exported)
    assert "training" not in shipped and exported.stat().st_size < (train_dir / "last.pt").stat().st_size / 2
    assert shipped["metadata"]["training_step"] == 4 and shipped["metadata"]["notes"] == {"fitted_mean": 4.2}
    assert shipped["metadata"]["training_config"]["input_size"] == original["input_size"]
    assert shipped["solver_config"] == {**original["solver_config"], "robust_iterations": 5}
    assert shipped["reconstruct_config"] == {"rotation_ensemble": 4, "refine_passes": 1, "refine_fraction": 0.75}
    from lsqface.morphable.cache import load_uv_model
    from lsqface.reconstruct import Reconstructor

    reconstructor = Reconstructor.from_checkpoint(exported, uv_model=load_uv_model(source=str(ict_archive), size=128))
    assert reconstructor.config.rotation_ensemble == 4 and reconstructor.config.solver.robust_iterations == 5
    assert reconstructor.config.refine_passes == 1 and reconstructor.config.refine_fraction == 0.75
    assert main(["export", str(train_dir / "last.pt"), "-o", str(tmp_path / "bad.pt"), "--refine", "-1"]) == 2
    assert main(["export", str(train_dir / "last.pt"), "-o", str(tmp_path / "bad.pt"), "--refine-fraction", "2"]) == 2
    assert main(["export", str(train_dir / "last.pt"), "-o", str(tmp_path / "bad.pt"), "--ensemble", "3"]) == 2
    assert main(["export", str(train_dir / "last.pt"), "-o", str(tmp_path / "bad.pt"), "--solver", "no_such_key=1"]) == 2
    assert main(["export", str(train_dir / "last.pt"), "-o", str(tmp_path / "bad.pt"), "--solver", "robust_iterations"]) == 2
    image = torch.rand(1, 3, original["input_size"], original["input_size"])
    first, second = network_from_checkpoint(original).eval(), network_from_checkpoint(shipped).eval()
    with torch.no_grad():
        assert torch.equal(first(image).logits, second(image).logits)
    assert main(["export", str(cut), "-o", str(tmp_path / "never.pt")]) == 2
    assert not (tmp_path / "never.pt").exists()


def test_unknown_config_key_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[train]\nstep = 3\n")
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "train.step" in error


@pytest.mark.parametrize("command", ["pretrain", "train"])
def test_help_names_the_config_option(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "--config" in out and "--seed" in out
