"""`lsqface evaluate` end to end on a tiny MAFL copy, an image folder and synthetic faces.

The report's numbers are recomputed here from its JSON lines and the annotation files, with
numpy only, and compared with the Markdown tables.
"""

import json
import re

import numpy as np
import pytest
from PIL import Image

from lsqface.cli import main


@pytest.fixture(scope="module")
def tiny_mafl(tmp_path_factory):
    """A CelebA folder in the published layout: three aligned images, MAFL test lists two."""
    root = tmp_path_factory.mktemp("celeba")
    (root / "img_align_celeba").mkdir()
    (root / "MAFL").mkdir()
    rng = np.random.default_rng(3)
    rows = []
    for index in range(1, 4):
        name = f"{index:06d}.jpg"
        Image.fromarray((rng.random((44, 36, 3)) * 255).astype(np.uint8)).save(root / "img_align_celeba" / name)
        points = [11 + index, 16, 24, 17 - index, 18, 24, 13, 31, 23, 30 + index]
        rows.append(name + " " + " ".join(str(value) for value in points))
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    (root / "list_landmarks_align_celeba.txt").write_text("3\n" + header + "\n" + "\n".join(rows) + "\n")
    (root / "MAFL" / "testing.txt").write_text("000002.jpg\n000003.jpg\n")
    (root / "MAFL" / "training.txt").write_text("000001.jpg\n")
    return root


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _error(predicted, truth) -> float:
    if predicted is None:
        return 100.0
    predicted, truth = np.asarray(predicted, dtype=float), np.asarray(truth, dtype=float)
    return 100.0 * np.linalg.norm(predicted - truth, axis=1).mean() / np.linalg.norm(truth[0] - truth[1])


def test_evaluate_writes_a_report_whose_numbers_follow_from_its_json_lines(tmp_path, tiny_mafl, tiny_checkpoint, run_cli,
                                                                            monkeypatch, ict_uv_model, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray((np.random.default_rng(4).random((40, 40, 3)) * 255).astype(np.uint8)).save(folder / "p.png")
    (folder / "landmarks.txt").write_text("name x1 y1 x2 y2 x3 y3 x4 y4 x5 y5\np.png 12.5 15 27.5 15.5 20 23 14 30 26 30\n")
    out = tmp_path / "report"
    code = run_cli(["evaluate", "--checkpoint", str(tiny_checkpoint), "--mafl", str(tiny_mafl), "--folder", str(folder),
                 "--landmarks", str(folder / "landmarks.txt"), "--synthetic", "1", "--ranges", "0,90", "--size", "32",
                 "-o", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    markdown = (out / "report.md").read_text()
    for picture in ("error-vs-rotation.png", "error-distribution.png"):
        assert Image.open(out / picture).size[0] > 100 and picture in markdown

    # MAFL: the test list's images, truth = CelebA's 0-based indices + 0.5.
    records = [json.loads(line) for line in (out / "mafl.jsonl").read_text().splitlines()]
    assert [record["image"] for record in records] == ["000002.jpg", "000003.jpg"]
    truth = {}
    for line in (tiny_mafl / "list_landmarks_align_celeba.txt").read_text().splitlines()[2:]:
        fields = line.split()
        truth[fields[0]] = np.asarray([float(value) for value in fields[1:]]).reshape(5, 2) + 0.5
    for record in records:
        if record["five"] is not None:
            assert np.asarray(record["five"]).shape == (5, 2) and np.asarray(record["sixty_eight"]).shape == (68, 2)
    rows = {row[0]: row for row in _table_rows(markdown, "5-landmark error")}
    direct = np.mean([_error(record["five_direct"], truth[record["image"]]) for record in records])
    fitted = np.mean([_error(record["five"], truth[record["image"]]) for record in records])
    assert rows["MAFL"][1] == "2"
    assert abs(float(rows["MAFL"][2]) - direct) <= 0.006 and abs(float(rows["MAFL"][3]) - fitted) <= 0.006
    assert rows["MAFL"][7:9] == ["8.10", "7.86"]

    # The folder benchmark, named after the folder, with the landmark file's coordinates as they are.
    (record,) = [json.loads(line) for line in (out / "photos.jsonl").read_text().splitlines()]
    folder_truth = np.asarray([12.5, 15, 27.5, 15.5, 20, 23, 14, 30, 26, 30]).reshape(5, 2)
    assert abs(float(rows["photos"][3]) - _error(record["five"], folder_truth)) <= 0.006

    # Synthetic: one row per range, means of the per-face lines.
    faces = [json.loads(line) for line in (out / "synthetic.jsonl").read_text().splitlines()]
    synthetic_rows = _table_rows(markdown, "Synthetic faces with ground truth")
    assert [row[0] for row in synthetic_rows] == ["0", "90"]
    for row in synthetic_rows:
        mine = [face for face in faces if face["roll_range"] == float(row[0])]
        assert len(mine) == 1 and abs(float(row[2]) - mine[0]["fitted_error"]) <= 0.006
        assert abs(float(row[9]) - mine[0]["fitted_error"]) <= 0.006  # the median of one face
        assert abs(float(row[10]) - mine[0]["vertex_error_mm"]) <= 0.006


def test_evaluate_reads_aflw_in_its_published_layout(tmp_path, tiny_checkpoint, run_cli, ict_uv_model, capsys):
    from scipy.io import savemat

    root = tmp_path / "aflw_release-2"
    (root / "output" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(5)
    names = ["sub/face0.jpg", "sub/face1.jpg"]
    for name in names:
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(root / "output" / name)
    stored = rng.uniform(8, 32, size=(2, 5, 2))  # (y, x) 0-based, as the .mat files hold them
    (root / "aflw_test_images.txt").write_text("\n".join(names) + "\n")
    savemat(root / "aflw_test_keypoints.mat", {"gt": stored, "hw": np.full((2, 2), 40.0)})
    out = tmp_path / "report"
    code = run_cli(["evaluate", "--checkpoint", str(tiny_checkpoint), "--aflw", str(root), "-o", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "aflw.jsonl").read_text().splitlines()]
    assert [record["image"] for record in records] == names
    truth = stored[:, :, ::-1] + 0.5
    (row,) = _table_rows((out / "report.md").read_text(), "5-landmark error")
    assert row[0] == "AFLW" and row[7:9] == ["9.82", "9.74"]
    assert abs(float(row[3]) - np.mean([_error(r["five"], truth[k]) for k, r in enumerate(records)])) <= 0.006
    assert abs(float(row[2]) - np.mean([_error(r["five_direct"], truth[k]) for k, r in enumerate(records)])) <= 0.006


def test_the_oracle_scores_near_zero(tmp_path, run_cli, ict_uv_model, capsys):
    out = tmp_path / "oracle"
    code = run_cli(["evaluate", "--oracle", "--synthetic", "1", "--ranges", "45", "--size", "64", "-o", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    (row,) = _table_rows((out / "report.md").read_text(), "Synthetic faces with ground truth")
    fitted, vertex_mm, rotation = float(row[2]), float(row[6]), float(row[7])
    assert fitted < 1.0 and vertex_mm < 1.0 and rotation < 1.0


def test_validation_faces_are_not_the_benchmarks(tmp_path, run_cli, ict_uv_model, capsys):
    from lsqface.evaluate.benchmark import EVALUATION_SEED_START, VALIDATION_OFFSET

    seeds = {}
    for name, extra in (("benchmark", []), ("validation", ["--validation"])):
        out = tmp_path / name
        code = run_cli(["evaluate", "--oracle", "--synthetic", "2", "--ranges", "0", "--size", "32", "-o", str(out),
                        "--quiet", *extra])
        assert code == 0, capsys.readouterr().err
        seeds[name] = [json.loads(line)["seed"] for line in (out / "synthetic.jsonl").read_text().splitlines()]
    assert seeds["benchmark"] == [EVALUATION_SEED_START, EVALUATION_SEED_START + 1]
    assert seeds["validation"] == [EVALUATION_SEED_START + VALIDATION_OFFSET + k for k in range(2)]


@pytest.mark.parametrize("args, message", [
    (["-o", "x"], "Nothing to evaluate"),
    (["--oracle", "--mafl", "somewhere", "-o", "x"], "oracle"),
    (["--oracle", "--synthetic", "1", "--folder", "somewhere", "-o", "x"], "together"),
    (["--oracle", "--synthetic", "1", "--ranges", "0,ninety", "-o", "x"], "--ranges"),
])
def test_bad_requests_are_one_line_errors(args, message, run_cli, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert run_cli(["evaluate", *args]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_identity_folder_adds_an_identity_table(tmp_path, tiny_checkpoint, run_cli, ict_uv_model, capsys):
    import importlib.util

    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models is not installed (pip install 'lsqface[identity]')")
    photos = tmp_path / "people"
    photos.mkdir()
    rng = np.random.default_rng(6)
    for name in ("ann.png", "ann2.png", "bob.png"):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(photos / name)
    out = tmp_path / "report"
    code = run_cli(["evaluate", "--checkpoint", str(tiny_checkpoint), "--identity", str(photos), "-o", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    rows = _table_rows((out / "report.md").read_text(), "Identity")
    assert len(rows) == 5 and "(1 pairs)" in rows[1][0] and "(2 pairs)" in rows[2][0]
    assert all(-1.0 <= float(row[1]) <= 1.0 for row in rows[:3])


def test_landmarks_dlib_measures_agreement_with_dlibs_68_points_and_detect_frames_the_face(
        tmp_path, tiny_checkpoint, run_cli, ict_uv_model, capsys):
    import importlib.util
    import shutil

    dlib = pytest.importorskip("dlib")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        pytest.skip("face-recognition-models is not installed (pip install 'lsqface[identity]')")
    from pathlib import Path

    from lsqface.data.images import read_image
    from lsqface.detect import detect_faces
    from lsqface.outputs.batch import demo_photo
    from lsqface.reconstruct import Reconstructor

    photos = tmp_path / "street"
    photos.mkdir()
    shutil.copy(demo_photo(), photos / "grace.jpg")
    Image.fromarray(np.full((48, 48, 3), 90, dtype=np.uint8)).save(photos / "wall.png")
    out = tmp_path / "report"
    code = run_cli(["evaluate", "--checkpoint", str(tiny_checkpoint), "--folder", str(photos), "--landmarks", "dlib",
                    "--detect", "--batch-size", "1", "-o", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    markdown = (out / "report.md").read_text()
    (row,) = _table_rows(markdown, "5-landmark error")
    assert row[0] == "street: agreement with dlib's 68-point predictor" and row[1] == "1"
    assert row[7:9] == ["-", "-"]
    assert "- wall.png: dlib's face detector found no face" in markdown

    # The reference: dlib's 68 points in its largest upright HOG face, reduced by hand, + 0.5.
    (record,) = [json.loads(line) for line in (out / "street.jsonl").read_text().splitlines()]
    pixels = np.asarray(Image.open(photos / "grace.jpg").convert("RGB"))
    face = max(dlib.get_frontal_face_detector()(pixels, 1), key=lambda rect: rect.area())
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    shape = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))(pixels, face)
    sixty_eight = np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], dtype=float) + 0.5
    reference = np.array([sixty_eight[36:42].mean(0), sixty_eight[42:48].mean(0), sixty_eight[30], sixty_eight[48],
                          sixty_eight[54]])
    assert np.allclose(record["reference"], reference, atol=1e-6)
    assert abs(float(row[3]) - _error(record["five"], reference)) <= 0.006
    assert abs(float(row[2]) - _error(record["five_direct"], reference)) <= 0.006

    # --detect: the photo was reconstructed in the box of its largest detected face.
    box = detect_faces(read_image(photos / "grace.jpg"))[0]
    expected = Reconstructor.from_checkpoint(tiny_checkpoint, uv_model=ict_uv_model)([photos / "grace.jpg"], boxes=[box])
    assert np.allclose(record["five"], expected.landmarks_5[0].numpy(), atol=1e-6)


def _tiny_real_split(monkeypatch, folder):
    """A one-photo validation split in ``folder``: a 160 px picture whose one face is a fixed box and 68 points."""
    from lsqface.evaluate import peers, real

    rng = np.random.default_rng(8)
    Image.fromarray((rng.random((160, 160, 3)) * 255).astype(np.uint8)).save(folder / "face.png")
    points = np.stack([np.linspace(60, 100, 68), 70 + 20 * np.sin(np.linspace(0, 6, 68))], axis=1)
    monkeypatch.setattr(real, "SPLITS", {"validation": (("shared", "face.png"),), "test": ()})
    monkeypatch.setattr(real, "dlib_faces", lambda: lambda photo: [((40.0, 40.0, 80.0, 80.0), points)])
    # One fake peer (always the same 5 points) and one absent, so the run needs neither dlib nor MediaPipe.
    fixed = np.array([[120.0, 110.0], [140.0, 110.0], [130.0, 125.0], [122.0, 140.0], [138.0, 140.0]])
    monkeypatch.setattr(peers, "load_peers", lambda names: ({"dlib": lambda image: fixed},
                                                            {"MediaPipe": "not installed; pip install it"}))
    return fixed


def test_real_writes_a_table_per_roll_whose_numbers_follow_from_real_jsonl(tmp_path, tiny_checkpoint, run_cli,
                                                                           monkeypatch, capsys):
    from lsqface.evaluate.real import SIMILARITY

    folder = tmp_path / "faces"
    folder.mkdir()
    fixed = _tiny_real_split(monkeypatch, folder)
    out = tmp_path / "report"
    code = run_cli(["evaluate", "--checkpoint", str(tiny_checkpoint), "--real", "validation", "--similarity", "2",
                    "--real-faces", str(folder), "--batch-size", "4", "-o", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "lsqface: skipped MediaPipe: not installed; pip install it" in captured.err
    markdown = (out / "report.md").read_text()
    assert "- MediaPipe: not installed; pip install it" in markdown
    assert "real-error-vs-roll.png" in markdown and Image.open(out / "real-error-vs-roll.png").size[0] > 100

    records = [json.loads(line) for line in (out / "real.jsonl").read_text().splitlines()]
    assert [record["variant"] for record in records] == ["roll 0", "roll 90", "roll 180", "roll 270",
                                                         "similarity 0", "similarity 1"]
    for record in records:
        assert set(record) >= {"face", "matrix", "reference", "reference_68", "lsqface", "dlib"} and "MediaPipe" not in record
        assert abs(record["dlib"]["error"] - _error(fixed, record["reference"])) <= 1e-9
        assert abs(record["lsqface"]["error"] - _error(record["lsqface"]["five"], record["reference"])) <= 1e-9
        assert 0.0 <= record["lsqface"]["confident_fraction"] <= 1.0
        # The reference is the face's 68 points moved by the record's matrix, reduced to 5.
        sixty_eight = np.asarray(record["reference_68"])
        eyes = [sixty_eight[36:42].mean(0), sixty_eight[42:48].mean(0)]
        assert np.allclose(record["reference"][:2], eyes)

    rows = _table_rows(markdown, "5-landmark error per roll")
    assert [row[0] for row in rows] == ["0 deg", "90 deg", "180 deg", "270 deg", "random similarity"]
    assert [row[1] for row in rows] == ["1", "1", "1", "1", "2"]
    for row, group in zip(rows, ["0", "90", "180", "270", SIMILARITY]):
        for column, method in ((2, "lsqface"), (5, "dlib")):
            errors = [record[method]["error"] for record in records if record["group"] == group]
            assert abs(float(row[column]) - np.median(errors)) <= 0.051
            assert abs(float(row[column + 1]) - np.mean(errors)) <= 0.051
            assert abs(float(row[column + 2]) - 100 * np.mean(np.asarray(errors) > 10)) <= 0.051
        assert row[8:11] == ["-", "-", "-"]  # MediaPipe, skipped


@pytest.mark.parametrize("args, message", [
    (["--real", "test", "--synthetic", "2"], "--real writes a report of its own; run --synthetic"),
    (["--real", "test", "--similarity", "-1"], "--similarity takes a count"),
])
def test_bad_real_requests_are_one_line_errors(args, message, run_cli, capsys):
    code = run_cli(["evaluate", *args, "-o", "x"])
    error = capsys.readouterr().err
    assert code == 2 and message in error and error.count("\n") == 1


def test_real_without_dlib_says_what_to_install(tmp_path, tiny_checkpoint, run_cli, monkeypatch, capsys):
    import importlib.util

    from lsqface.evaluate import real

    folder = tmp_path / "faces"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(folder / "face.png")
    monkeypatch.setattr(real, "SPLITS", {"validation": (("shared", "face.png"),), "test": ()})
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "face_recognition_models" else find_spec(name, *args))
    code = run_cli(["evaluate", "--checkpoint", str(tiny_checkpoint), "--real", "validation", "--real-faces", str(folder),
                    "-o", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and "pip install 'lsqface[identity]'" in error and error.count("\n") == 1


def test_real_reads_dlib_photos_from_the_archive_given_by_dlib_examples(tmp_path, tiny_checkpoint, run_cli, monkeypatch,
                                                                        capsys):
    import io
    import tarfile

    from lsqface.evaluate import peers, real

    name = "johns/John_Salley/000179_02159509.jpg"
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(5).random((150, 150, 3)) * 255).astype(np.uint8)).save(buffer, "JPEG")
    archive = tmp_path / "dlib-19.5.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(real.DLIB_EXAMPLES + name)
        info.size = len(buffer.getvalue())
        tar.addfile(info, io.BytesIO(buffer.getvalue()))
    points = np.stack([np.linspace(55, 95, 68), 70 + 15 * np.sin(np.linspace(0, 6, 68))], axis=1)
    seen = []
    monkeypatch.setattr(real, "SPLITS", {"validation": (("dlib", name), ("dlib", "faces/bald_guys.jpg")), "test": ()})
    monkeypatch.setattr(real, "dlib_faces", lambda: lambda photo: seen.append(photo) or [((45.0, 45.0, 60.0, 60.0), points)])
    monkeypatch.setattr(peers, "load_peers", lambda names: ({}, {}))
    out = tmp_path / "report"
    code = run_cli(["evaluate", "--checkpoint", str(tiny_checkpoint), "--real", "validation", "--similarity", "0",
                    "--dlib-examples", str(archive), "-o", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"lsqface: skipped faces/bald_guys.jpg: not in {archive}" in captured.err
    records = [json.loads(line) for line in (out / "real.jsonl").read_text().splitlines()]
    assert [(record["face"], record["variant"]) for record in records] == [(name, f"roll {roll}") for roll in (0, 90, 180, 270)]
    np.testing.assert_array_equal(seen[0], np.asarray(Image.open(buffer), dtype=np.float32) / 255)

    # A corrupt archive and an absent one: one sentence each, no traceback.
    (tmp_path / "corrupt.tar.gz").write_bytes(b"not an archive")
    for path, message in ((tmp_path / "corrupt.tar.gz", "cannot be read (not a gzip file); delete it and run "
                                                        "`make validation-photos` again."),
                          (tmp_path / "absent.tar.gz", "does not exist; give the path of dlib-19.5.0.tar.gz")):
        code = run_cli(["evaluate", "--checkpoint", str(tiny_checkpoint), "--real", "validation", "--dlib-examples",
                        str(path), "-o", str(tmp_path / "out"), "--quiet"])
        error = capsys.readouterr().err
        assert code == 2 and message in error and error.count("\n") == 1
