"""Output folders of `lsqface reconstruct`: unique names, nothing of the user's replaced, resuming, write errors."""

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lsqface.outputs.batch import MANIFEST_NAME, OutputFolder
from lsqface.outputs.save import SAVE_KINDS, output_names


def _photo(path, size=(40, 36), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path)
    return path


def _run(run_cli, checkpoint, *args):
    return run_cli(["reconstruct", *map(str, args), "--checkpoint", str(checkpoint), "--save", "json", "--quiet",
                    "--refine", "0"])


def _snapshot(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_output_names_are_those_written():
    names = output_names("a", SAVE_KINDS)
    assert names[:3] == ["a.obj", "a.mtl", "a_texture.png"] and "a_sheet.png" in names and "a_overlay.png" in names
    assert len(names) == len(set(names))



@pytest.mark.parametrize("save, expected", [
    ("json,obj", {"photo.json", "photo.obj"}),
    ("obj,texture", {"photo.obj", "photo.mtl", "photo_texture.png"}),
    ("texture", {"photo_texture.png"}),
])
def test_the_photo_texture_is_written_when_asked(tmp_path, tiny_checkpoint, run_cli, save, expected):
    """The OBJ carries the photo as its texture (MTL + PNG) only with the kind "texture", which the default
    --save holds; without it the OBJ has its vertex colours and no texture lines."""
    _photo(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert run_cli(["reconstruct", str(tmp_path / "photo.png"), "-o", str(out), "--checkpoint", str(tiny_checkpoint),
                    "--save", save, "--quiet", "--refine", "0"]) in (0, 1)
    written = {path.name for path in out.iterdir() if path.name != MANIFEST_NAME}
    assert written == expected and set(output_names("photo", save.split(","))) == expected
    if "obj" in expected:
        text = (out / "photo.obj").read_text()
        assert ("mtllib photo.mtl" in text) == ("texture" in save) and ("\nvt " in text) == ("texture" in save)
        assert text.count("\nv ") > 0 and len(text.split("\nv ", 2)[1].split("\n")[0].split()) == 6  # x y z r g b

def test_shared_stems_and_the_numbering_scheme_never_collide(tmp_path, tiny_checkpoint, run_cli, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed, name in enumerate(("photo.jpg", "photo.png", "photo_1.jpg", "photo-2.png")):
        _photo(photos / name, seed=seed)
    out = tmp_path / "out"
    assert _run(run_cli, tiny_checkpoint, photos, "-o", out) == 0
    assert "reconstructed 4 of 4" in capsys.readouterr().out
    records = [json.loads(path.read_text()) for path in out.glob("*.json")]
    assert sorted(record["image"] for record in records) == ["photo-2.png", "photo.jpg", "photo.png", "photo_1.jpg"]
    # The inputs with a stem of their own keep it.
    assert json.loads((out / "photo_1.json").read_text())["image"] == "photo_1.jpg"
    assert json.loads((out / "photo-2.json").read_text())["image"] == "photo-2.png"


def test_output_into_the_input_folder_replaces_nothing_and_reads_no_output_back(tmp_path, tiny_checkpoint, run_cli,
                                                                               capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "a.png")
    (folder / "a.json").write_text("the user's own notes")
    before = _snapshot(folder)
    assert _run(run_cli, tiny_checkpoint, folder, "-o", folder) == 0
    assert (folder / "a.json").read_text() == "the user's own notes"
    assert json.loads((folder / "a-2.json").read_text())["image"] == "a.png"
    after_first = _snapshot(folder)
    assert {name: data for name, data in after_first.items() if name in before} == before
    # A second run finds nothing new: the written files are not inputs, the photo is done.
    capsys.readouterr()
    assert _run(run_cli, tiny_checkpoint, folder, "-o", folder) == 0
    captured = capsys.readouterr()
    assert "reconstructed 1 of 1" in captured.out and "already there" in captured.out
    assert _snapshot(folder) == after_first


def test_a_rerun_skips_finished_photos_and_redo_writes_them_again(tmp_path, tiny_checkpoint, run_cli, monkeypatch,
                                                                   capsys):
    import lsqface.outputs.batch as batch

    photos = [_photo(tmp_path / f"p{k}.png", seed=k) for k in range(3)]
    out = tmp_path / "out"
    save = batch.save_reconstruction
    calls = []

    def crash_on_the_second(*args, **kwargs):
        calls.append(args[4])
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill leaves: the first photo done, the second claimed only
        return save(*args, **kwargs)

    monkeypatch.setattr(batch, "save_reconstruction", crash_on_the_second)
    assert _run(run_cli, tiny_checkpoint, *photos, "-o", out, "--batch-size", "1") == 130
    assert (out / "p0.json").is_file() and not (out / "p1.json").exists()
    first = (out / "p0.json").read_bytes()
    monkeypatch.setattr(batch, "save_reconstruction", save)
    capsys.readouterr()
    calls.clear()
    monkeypatch.setattr(batch, "save_reconstruction", lambda *args, **kwargs: calls.append(args[4]) or save(*args, **kwargs))
    assert _run(run_cli, tiny_checkpoint, *photos, "-o", out) == 0
    assert calls == ["p1", "p2"] and (out / "p0.json").read_bytes() == first
    assert "reconstructed 3 of 3" in capsys.readouterr().out
    calls.clear()
    assert _run(run_cli, tiny_checkpoint, *photos, "-o", out, "--redo") == 0
    assert calls == ["p0", "p1", "p2"]
    assert sorted(path.name for path in out.iterdir()) == sorted([MANIFEST_NAME, "p0.json", "p1.json", "p2.json"])


def test_a_write_error_fails_that_photo_only(tmp_path, tiny_checkpoint, run_cli, capsys):
    good = _photo(tmp_path / "good.png")
    # The name fits the file system; the temporary name its JSON is written through does not.
    long = _photo(tmp_path / ("x" * 240 + ".png"), seed=1)
    out = tmp_path / "out"
    code = _run(run_cli, tiny_checkpoint, long, good, "-o", out)
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    failures = [line for line in captured.err.splitlines() if line.startswith("lsqface: failed:")]
    assert len(failures) == 1 and "x" * 240 in failures[0] and "could not be written" in failures[0]
    assert (out / "good.json").is_file() and "reconstructed 1 of 2" in captured.out
    assert sorted(path.name for path in out.iterdir()) == sorted([MANIFEST_NAME, "good.json"])


def test_a_full_disk_is_reported_per_photo(tmp_path, tiny_checkpoint, run_cli, monkeypatch, capsys):
    import lsqface.outputs.batch as batch

    save = batch.save_reconstruction

    def full(*args, **kwargs):
        if args[4] == "a":
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(*args, **kwargs)

    monkeypatch.setattr(batch, "save_reconstruction", full)
    photos = [_photo(tmp_path / "a.png"), _photo(tmp_path / "b.png", seed=1)]
    assert _run(run_cli, tiny_checkpoint, *photos, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "a.png: its files could not be written" in err and "No space left on device" in err
    assert (tmp_path / "out" / "b.json").is_file()


@pytest.mark.parametrize("output, fragment", [
    (lambda tmp: tmp / "a.png", "is one of the inputs"),
    (lambda tmp: tmp / "notes.txt", "is a file, not a folder"),
    (lambda tmp: "/dev/null", "is a file, not a folder"),
    (lambda tmp: "/proc/lsqface-out", "Cannot write into the output folder"),
])
def test_unusable_output_folders_are_one_sentence(tmp_path, tiny_checkpoint, run_cli, output, fragment, capsys):
    _photo(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("notes")
    before = _snapshot(tmp_path)
    assert _run(run_cli, tiny_checkpoint, tmp_path / "a.png", "-o", output(tmp_path)) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before


def test_a_folder_record_cut_short_by_a_crash_is_read(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(
        json.dumps({"input": "/x/a.png", "stem": "a", "files": ["a.json"]}) + "\n" + '{"input": "/x/b.png", "st')
    folder = OutputFolder(tmp_path)
    assert folder.all_names() == ["a.json"]
    assert folder.allocate("/y/a.png", "a", ["json"]) == "a-2"
    assert folder.allocate("/x/a.png", "a", ["json"]) == "a"


def test_special_files_given_as_inputs_are_refused_not_waited_on(tmp_path, tiny_checkpoint, run_cli, capsys):
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    good = _photo(tmp_path / "good.png")
    assert _run(run_cli, tiny_checkpoint, fifo, "/dev/null", good, "-o", tmp_path / "out") == 1
    failures = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lsqface: failed:")]
    assert len(failures) == 2 and all("not a regular file" in line for line in failures)


@pytest.mark.parametrize("where", ["chmod", "before opening", "on opening"])
def test_permission_denied_is_said_as_such(tmp_path, tiny_checkpoint, run_cli, monkeypatch, capsys, where):
    """A photo lsqface may not read is one line saying "permission denied", not "corrupt", and the batch goes on.

    Root reads every file whatever its mode (CI runs as root), so the refusal is also made to happen where
    lsqface meets it: the check before the file is opened (os.access), and the open itself (an ACL, or a mode
    changed in between)."""
    import os

    import lsqface.data.images as images

    locked, good = _photo(tmp_path / "locked.png"), _photo(tmp_path / "good.png", seed=1)
    if where == "chmod":
        if not hasattr(os, "geteuid") or os.geteuid() == 0:
            pytest.skip("root reads every file whatever its mode")
        locked.chmod(0)
    elif where == "before opening":
        access = os.access
        monkeypatch.setattr(images.os, "access", lambda path, mode, **kwargs:
                            Path(path) != locked and access(path, mode, **kwargs))
    else:
        open_image = images.Image.open

        def refuse(path, *args, **kwargs):
            if Path(path) == locked:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return open_image(path, *args, **kwargs)

        monkeypatch.setattr(images.Image, "open", refuse)
    # A photo that cannot be read fails alone: it is listed, the others are written, the exit status is 1.
    assert _run(run_cli, tiny_checkpoint, locked, good, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    failures = [line for line in err.splitlines() if line.startswith("lsqface: failed:")]
    assert failures == [f"lsqface: failed: {locked}: Image {locked} cannot be read: permission denied; check its "
                        "permissions (chmod +r)."], err
    assert "Traceback" not in err and (tmp_path / "out" / "good.json").is_file()


def test_a_box_beyond_the_photo_is_refused_before_anything_is_allocated(tmp_path, tiny_checkpoint, run_cli, capsys):
    small = _photo(tmp_path / "small.png", size=(31, 31))
    assert _run(run_cli, tiny_checkpoint, small, "-o", tmp_path / "out", "--bbox", "0,0,15000,15000") == 1
    err = capsys.readouterr().err
    assert "does not frame a face in small.png (31x31 pixels)" in err
    for box in ("nan,0,10,10", "0,0,inf,10", "0,0,0,10", "0,0,10,-5", "0,0,1e300,10"):
        assert _run(run_cli, tiny_checkpoint, small, "-o", tmp_path / "out", "--bbox", box) == 2
        err = capsys.readouterr().err
        assert "--bbox takes" in err and len(err.strip().splitlines()) == 1


def test_coordinates_are_in_the_photos_own_pixels_when_it_is_decoded_smaller(tmp_path, tiny_checkpoint, run_cli,
                                                                             monkeypatch, capsys):
    import lsqface.data.images as images

    rng = np.random.default_rng(3)
    photo = tmp_path / "big.jpg"
    Image.fromarray((rng.random((36, 50, 3)) * 255).astype(np.uint8)).resize((400, 288)).save(photo, quality=95)
    box = "40,30,300,220"

    def run(out):
        return run_cli(["reconstruct", str(photo), "-o", str(tmp_path / out), "--checkpoint", str(tiny_checkpoint),
                        "--save", "json,npz", "--quiet", "--refine", "0", "--bbox", box])

    assert run("whole") == 0
    # Over a lowered pixel limit the JPEG is decoded at half its size.
    monkeypatch.setattr(images, "MAX_PIXELS", 400 * 288 // 3)
    assert images.read_photo(photo, max_pixels=images.MAX_PIXELS)[1] == (2.0, 2.0)
    assert run("reduced") == 0, capsys.readouterr().err
    whole, reduced = (json.loads((tmp_path / name / "big.json").read_text()) for name in ("whole", "reduced"))
    assert reduced["image_size"] == whole["image_size"] == {"height": 288, "width": 400}
    # The box framed the same region: the same photo pixels reach the same network pixels.
    maps = {name: np.load(tmp_path / name / "big.npz") for name in ("whole", "reduced")}
    np.testing.assert_allclose(maps["reduced"]["to_network"], maps["whole"]["to_network"], atol=1e-9)
    assert np.abs(maps["reduced"]["network_image"] - maps["whole"]["network_image"]).mean() < 0.05
    # The untrained network's fit moves a little with the decoded pixels; a missed factor 2 would not.
    for values in ((reduced[key], whole[key]) for key in ("landmarks_5", "landmarks_68")):
        ratio = np.abs(np.array(values[0]) / np.array(values[1]))
        assert 0.85 < np.median(ratio) < 1.15
    focal = [np.array(record["camera"]["intrinsics"])[[0, 1], [0, 1]] for record in (reduced, whole)]
    assert np.all(np.abs(focal[0] / focal[1] - 1) < 0.15)


@pytest.mark.parametrize("framing", [[], ["--bbox", "0,0,1900,1400"]])
def test_a_large_photo_is_never_converted_to_float_whole(tmp_path, tiny_checkpoint, run_cli, monkeypatch, framing):
    """The big-photo path (FULL_FLOAT_PIXELS lowered so a 3-megapixel photo takes it) keeps the photo as uint8 and
    converts only bounded parts: with every output, numpy never holds the 36 MB of a float32 copy of the whole photo
    (tracemalloc sees numpy's memory; the photo itself is 9 MB, its decoding as many again)."""
    import tracemalloc

    import lsqface.data.images as images

    monkeypatch.setattr(images, "FULL_FLOAT_PIXELS", 200_000)
    rng = np.random.default_rng(0)
    photo = tmp_path / "big.png"
    Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).resize((2000, 1500)).save(photo)
    options = ["--checkpoint", str(tiny_checkpoint), "--quiet", "--refine", "0", "--picture-size", "256"]
    # Caches (the texture layout, the model's tensors) are filled by a first, small photo.
    assert run_cli(["reconstruct", str(_photo(tmp_path / "small.png")), "-o", str(tmp_path / "warm"), *options]) == 0
    tracemalloc.start()
    try:
        code = run_cli(["reconstruct", str(photo), "-o", str(tmp_path / "out"), *options, *framing])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code in (0, 1) and (tmp_path / "out" / "big_texture.png").is_file()
    assert json.loads((tmp_path / "out" / "big.json").read_text())["image_size"] == {"height": 1500, "width": 2000}
    assert peak < 4 * 2000 * 1500 * 3, peak / 1e6
