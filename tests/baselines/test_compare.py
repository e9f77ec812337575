"""lsqface compare: the report's numbers recomputed from direct benchmark calls and the MoFA loss logs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lsqface.baselines.mofa import MoFANetworkConfig, MoFAReconstructor
from lsqface.baselines.train_mofa import MoFAMainConfig, MoFAPretrainConfig, MoFATrainConfig, MoFATrainer
from lsqface.evaluate.benchmark import evaluate_synthetic
from lsqface.baselines.compare import model_names
from lsqface.reconstruct import Reconstructor
from lsqface.train.config import DataConfig

RANGES = (0.0, 90.0)
COUNT = 3
SIZE = 32


@pytest.fixture(scope="module")
def mofa_checkpoint(tmp_path_factory, ict_uv_model):
    """A tiny MoFA run of 6 steps (2 per phase) in its run folder, with its losses.jsonl."""
    config = MoFATrainConfig(
        input_size=32, network=MoFANetworkConfig(width=0.125), data=DataConfig(synthetic_pool=4), checkpoint_every=100,
        pretrain=MoFAPretrainConfig(rotation_xy_steps=2, rotation_translation_steps=2, batch_size=2, learning_rate=1e-3),
        train=MoFAMainConfig(steps=2, batch_size=2, learning_rate=1e-3),
    )
    run_dir = tmp_path_factory.mktemp("mofa-run")
    trainer = MoFATrainer(config, run_dir, ict_uv_model)
    summary = trainer.run(progress=False)
    trainer.close()
    return summary["checkpoint"]


def _cells(markdown: str) -> dict[tuple[str, str], list[str]]:
    """{(model, roll range): row cells} of the report's table."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| Model") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[(cells[0], cells[4])] = cells
    return rows


def test_compare_reports_the_numbers_of_direct_benchmark_calls(tmp_path, run_cli, ict_uv_model, tiny_checkpoint, mofa_checkpoint):
    output = tmp_path / "report"
    status = run_cli(["compare", "--checkpoints", str(tiny_checkpoint), str(mofa_checkpoint), "--names", "lsq", "mofa",
                      "--synthetic", str(COUNT), "--ranges", "0,90", "--size", str(SIZE), "--batch-size", "2",
                      "-o", str(output), "--quiet"])
    assert status == 0
    rows = [json.loads(line) for line in (output / "comparison.jsonl").read_text().splitlines()]
    table = _cells((output / "report.md").read_text())
    direct = {
        "lsq": (Reconstructor.from_checkpoint(tiny_checkpoint, uv_model=ict_uv_model), "lsqface"),
        "mofa": (MoFAReconstructor.from_checkpoint(mofa_checkpoint, uv_model=ict_uv_model), "mofa"),
    }
    assert [(row["model"], row["roll_range"]) for row in rows] == [(name, r) for name in direct for r in RANGES]
    for name, (reconstructor, kind) in direct.items():
        results = evaluate_synthetic(reconstructor, ict_uv_model, RANGES, COUNT, SIZE, batch_size=2)
        parameters = sum(parameter.numel() for parameter in reconstructor.network.parameters())
        for result in results:
            row = next(row for row in rows if row["model"] == name and row["roll_range"] == result.roll_range)
            fitted = np.where(np.isfinite(result.fitted_error), result.fitted_error, 100.0)
            assert row["kind"] == kind and row["count"] == COUNT and row["parameters"] == parameters
            assert row["fitted"] == pytest.approx(float(np.mean(fitted)), rel=1e-6)
            assert row["failure_rate"] == pytest.approx(100.0 * float(np.mean(fitted > 10.0)))
            assert row["vertex_mm"] == pytest.approx(float(np.nanmean(result.vertex_error)), rel=1e-6)
            assert row["rotation_degrees"] == pytest.approx(float(np.nanmean(result.rotation_error)), rel=1e-6)
            assert row["latency_ms"] > 0
            cells = table[(name, f"{result.roll_range:g}")]
            assert cells[1] == kind and int(cells[2]) == parameters and int(cells[5]) == COUNT
            assert float(cells[6]) == pytest.approx(float(np.mean(fitted)), abs=0.006)
            assert float(cells[8]) == pytest.approx(float(np.nanmean(result.vertex_error)), abs=0.006)
            assert float(cells[9]) == pytest.approx(float(np.nanmean(result.rotation_error)), abs=0.006)
            assert row["fitted_median"] == pytest.approx(float(np.median(fitted)), rel=1e-6)
            assert row["vertex_median_mm"] == pytest.approx(float(np.nanmedian(result.vertex_error)), rel=1e-6)
            assert float(cells[11]) == pytest.approx(float(np.median(fitted)), abs=0.006)
            assert float(cells[12]) == pytest.approx(float(np.nanmedian(result.vertex_error)), abs=0.006)
        faces = [json.loads(line) for line in (output / f"synthetic-{name}.jsonl").read_text().splitlines()]
        assert len(faces) == COUNT * len(RANGES)
    assert (output / "error-vs-rotation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_plots_the_mofa_loss_medians_found_beside_the_checkpoint(tmp_path, run_cli, tiny_checkpoint, mofa_checkpoint):
    output = tmp_path / "report"
    assert run_cli(["compare", "--checkpoints", str(tiny_checkpoint), str(mofa_checkpoint), "--synthetic", "1",
                    "--ranges", "0", "--size", str(SIZE), "-o", str(output), "--quiet"]) == 0
    curves = json.loads((output / "training-loss.json").read_text())
    name = mofa_checkpoint.parent.name
    assert list(curves) == [name]  # only the MoFA run has a loss log; its label is its run folder
    log = [json.loads(line) for line in (mofa_checkpoint.parent / "losses.jsonl").read_text().splitlines()]
    for term in ("landmark", "photometric"):
        values = [record[term] for record in log if term in record]
        assert curves[name][term]["steps"] == [100]
        assert curves[name][term]["medians"] == pytest.approx([float(np.median(values))])
    assert (output / "training-loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "training-loss.png" in (output / "report.md").read_text()


def test_names_must_match_the_checkpoints_and_default_to_run_folders(tmp_path, run_cli, tiny_checkpoint):
    assert model_names(["runs/a/last.pt", "runs/b/last.pt", "x/tiny.pt", "y/tiny.pt"]) == ["a", "b", "tiny", "tiny-2"]
    status = run_cli(["compare", "--checkpoints", str(tiny_checkpoint), "--names", "a", "b", "-o", str(tmp_path)])
    assert status == 2


def _rows_without_latency(folder) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "comparison.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key != "latency_ms"} for row in rows]


def test_previous_reports_are_read_back_into_the_same_report(tmp_path, run_cli, tiny_checkpoint, mofa_checkpoint):
    first = tmp_path / "first"
    assert run_cli(["compare", "--checkpoints", str(tiny_checkpoint), str(mofa_checkpoint), "--names", "lsq", "mofa",
                    "--synthetic", "2", "--ranges", "0,90", "--size", str(SIZE), "--batch-size", "2",
                    "-o", str(first), "--quiet"]) == 0
    again = tmp_path / "again"
    assert run_cli(["compare", "--previous", str(first), "-o", str(again), "--quiet"]) == 0
    for name in ("comparison.jsonl", "synthetic-lsq.jsonl", "synthetic-mofa.jsonl", "training-loss.json", "report.md"):
        assert (again / name).read_text() == (first / name).read_text(), name


def test_previous_reports_join_new_checkpoints_on_the_same_faces(tmp_path, run_cli, tiny_checkpoint, mofa_checkpoint):
    both = tmp_path / "both"
    assert run_cli(["compare", "--checkpoints", str(tiny_checkpoint), str(mofa_checkpoint), "--names", "lsq", "mofa",
                    "--synthetic", "2", "--ranges", "0,90", "--size", str(SIZE), "-o", str(both), "--quiet"]) == 0
    lsq = tmp_path / "lsq"
    assert run_cli(["compare", "--checkpoints", str(tiny_checkpoint), "--names", "lsq", "--synthetic", "2",
                    "--ranges", "0,90", "--size", str(SIZE), "-o", str(lsq), "--quiet"]) == 0
    # The new checkpoint meets the earlier report's faces (count, ranges, size), whatever the defaults say.
    joined = tmp_path / "joined"
    assert run_cli(["compare", "--previous", str(lsq), "--checkpoints", str(mofa_checkpoint), "--names", "mofa",
                    "-o", str(joined), "--quiet"]) == 0
    faces = {name: [json.loads(line) for line in (name / "synthetic-mofa.jsonl").read_text().splitlines()]
             for name in (joined, both)}
    # The same faces, with the same numbers to the rounding of the solve.
    assert len(faces[joined]) == len(faces[both]) == 4 and len(_rows_without_latency(joined)) == 4
    for mine, theirs in zip(_rows_without_latency(joined) + faces[joined], _rows_without_latency(both) + faces[both]):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            assert value == (pytest.approx(theirs[key], rel=1e-9) if isinstance(value, float) else theirs[key]), key
    assert json.loads((joined / "training-loss.json").read_text()) == json.loads((both / "training-loss.json").read_text())


def test_previous_reports_on_other_faces_or_with_a_taken_name_are_refused(tmp_path, run_cli, tiny_checkpoint, capsys):
    one = tmp_path / "one"
    two = tmp_path / "two"
    assert run_cli(["compare", "--checkpoints", str(tiny_checkpoint), "--names", "a", "--synthetic", "1", "--ranges", "0",
                    "--size", str(SIZE), "-o", str(one), "--quiet"]) == 0
    assert run_cli(["compare", "--checkpoints", str(tiny_checkpoint), "--names", "b", "--synthetic", "2", "--ranges", "0",
                    "--size", str(SIZE), "-o", str(two), "--quiet"]) == 0
    capsys.readouterr()
    assert run_cli(["compare", "--previous", str(one), str(two), "-o", str(tmp_path / "mixed")]) == 2
    assert "other faces" in capsys.readouterr().err
    assert run_cli(["compare", "--previous", str(one), "--checkpoints", str(tiny_checkpoint), "--names", "a",
                    "-o", str(tmp_path / "clash")]) == 2
    assert "Two models are called a" in capsys.readouterr().err
    assert run_cli(["compare", "--previous", str(one), str(one), "-o", str(tmp_path / "twice")]) == 2
    assert "Two models are called a" in capsys.readouterr().err
    (one / "training-loss.json").write_text("{not json")
    assert run_cli(["compare", "--previous", str(one), "-o", str(tmp_path / "broken")]) == 2
    assert "not a JSON file of lsqface compare" in capsys.readouterr().err
    assert run_cli(["compare", "--previous", str(tmp_path / "nowhere"), "-o", str(tmp_path / "none")]) == 2
    assert run_cli(["compare", "-o", str(tmp_path / "nothing")]) == 2
