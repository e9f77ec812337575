"""The report writer: tables whose numbers follow from the JSON lines, plots that open, atomic files."""

import json

import numpy as np
from PIL import Image

from lsqface.evaluate.benchmark import SyntheticResults
from lsqface.evaluate.landmarks import LandmarkPredictions
from lsqface.evaluate.report import file_stem, landmark_table, synthetic_table, write_report


def _predictions(seed=0, count=6):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(20, 80, size=(count, 5, 2))
    fitted = truth + rng.normal(0, 2.0, size=truth.shape)
    direct = truth + rng.normal(0, 4.0, size=truth.shape)
    fitted[-1] = direct[-1] = np.nan
    names = [f"img{k}.jpg" for k in range(count)]
    return LandmarkPredictions(names, truth, fitted, direct, rng.uniform(0, 99, size=(count, 68, 2)), {names[-1]: "no solve"})


def _synthetic(roll_range, seed):
    rng = np.random.default_rng(seed)
    count = 5
    return SyntheticResults(roll_range, np.arange(count), rng.uniform(-roll_range, roll_range, count),
                            rng.uniform(0, 20, count), rng.uniform(0, 20, count), rng.uniform(0, 3, count),
                            rng.uniform(0, 5, count), np.zeros(count, bool))


def _rows(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def _error(predicted, truth):
    if predicted is None:
        return 100.0
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    return 100.0 * np.linalg.norm(predicted - truth, axis=1).mean() / np.linalg.norm(truth[0] - truth[1])


def test_landmark_table_from_json_lines(tmp_path):
    predictions = {"MAFL": _predictions(0), "My photos": _predictions(1, 4)}
    path = write_report(tmp_path, predictions, [_synthetic(0.0, 2), _synthetic(90.0, 3)], identity={"same person": 0.96},
                        notes=["Command: `lsqface evaluate ...`"])
    markdown = path.read_text()
    rows = {row[0]: row for row in _rows(markdown.split("## 5-landmark error\n\n", 1)[1].split("\n\n", 1)[0])}
    for name, stem, source in (("MAFL", "mafl", predictions["MAFL"]), ("My photos", "my-photos", predictions["My photos"])):
        records = [json.loads(line) for line in (tmp_path / f"{stem}.jsonl").read_text().splitlines()]
        assert [record["image"] for record in records] == source.names
        fitted = [_error(record["five"], source.truth[k]) for k, record in enumerate(records)]
        direct = [_error(record["five_direct"], source.truth[k]) for k, record in enumerate(records)]
        row = rows[name]
        assert int(row[1]) == len(records) and int(row[6]) == 1
        assert abs(float(row[2]) - np.mean(direct)) <= 0.006 and abs(float(row[3]) - np.mean(fitted)) <= 0.006
        assert abs(float(row[4]) - 100.0 * np.mean(np.asarray(direct) > 10.0)) <= 0.06
        assert records[-1]["five"] is None and records[-1]["error"] == "no solve"
        assert np.asarray(records[0]["sixty_eight"]).shape == (68, 2)
    assert rows["MAFL"][7:] == ["8.10", "7.86"] and rows["My photos"][7:] == ["-", "-"]
    assert "| same person | 0.960 |" in markdown and "Command: `lsqface evaluate ...`" in markdown
    for picture in ("error-vs-rotation.png", "error-distribution.png"):
        with Image.open(tmp_path / picture) as image:
            assert image.format == "PNG" and image.size[0] > 200
    assert not list(tmp_path.glob("*.tmp*"))


def test_synthetic_table_rows_are_range_means():
    results = [_synthetic(15.0, 4), _synthetic(180.0, 5)]
    results[1].vertex_error[0] = np.nan  # a failed face has no vertex error: left out of the mean
    rows = _rows(synthetic_table(results))
    for row, result in zip(rows, results):
        assert float(row[0]) == result.roll_range and int(row[1]) == 5
        assert abs(float(row[2]) - result.fitted_error.mean()) <= 0.006
        assert abs(float(row[3]) - result.direct_error.mean()) <= 0.006
        assert abs(float(row[4]) - 100.0 * np.mean(result.fitted_error > 10.0)) <= 0.06
        assert abs(float(row[6]) - np.nanmean(result.vertex_error)) <= 0.006
        assert abs(float(row[7]) - result.rotation_error.mean()) <= 0.006
        assert abs(float(row[9]) - np.median(result.fitted_error)) <= 0.006
        assert abs(float(row[10]) - np.nanmedian(result.vertex_error)) <= 0.006


def test_names_and_empty_tables():
    assert file_stem("AFLW") == "aflw" and file_stem("my photos/2") == "my-photos-2"
    assert len(landmark_table({}).splitlines()) == 2
