"""`lsqface reconstruct` end to end with a small untrained network, and every bad input it must survive."""

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from lsqface.cli import main

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "lsqface/outputs/reconstruction.schema.json").read_text())


@pytest.fixture
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


def _photo(path, size=(48, 40), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_reconstruct_writes_every_file(tmp_path, checkpoint, run_cli, ict_uv_model, capsys):
    photos = [_photo(tmp_path / "a.png"), _photo(tmp_path / "b.jpg", size=(64, 64), seed=1)]
    out = tmp_path / "out"
    code = run_cli([
        "reconstruct", *map(str, photos), "-o", str(out), "--checkpoint", str(checkpoint),
        "--refine", "1", "--quiet",
    ])
    assert code == 0, capsys.readouterr().err
    for stem in ("a", "b"):
        textured = trimesh.load(out / f"{stem}.obj", process=False, maintain_order=True)
        assert textured.vertices.shape == (ict_uv_model.model.n_vertices, 3)
        assert textured.visual.material.image.size == (256, 256)
        for picture in ("overlay", "geometry", "correspondence", "uv_photo", "depth", "confidence", "sheet"):
            assert (out / f"{stem}_{picture}.png").is_file(), picture
        size = (48, 40) if stem == "a" else (64, 64)
        assert Image.open(out / f"{stem}_overlay.png").size == size  # at the photo's own resolution
        parameters = json.loads((out / f"{stem}.json").read_text())
        jsonschema.validate(parameters, SCHEMA)
        assert parameters["image_size"] == {"height": 40 if stem == "a" else 64, "width": 48 if stem == "a" else 64}
        mesh = trimesh.load(out / f"{stem}.ply", process=False)
        assert mesh.vertices.shape == (ict_uv_model.model.n_vertices, 3)
        assert mesh.faces.shape == ict_uv_model.model.triangles.shape
        maps = np.load(out / f"{stem}.npz")
        assert maps["correspondence"].shape == (2, 32, 32) and maps["confidence"].shape == (2, 32, 32)
    assert "reconstructed 2 of 2" in capsys.readouterr().out


def test_a_bad_image_is_reported_and_the_others_finish(tmp_path, checkpoint, run_cli, ict_uv_model, capsys):
    good = _photo(tmp_path / "good.png")
    truncated = tmp_path / "truncated.jpg"
    _photo(tmp_path / "whole.jpg", size=(64, 64))
    truncated.write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    code = run_cli([
        "reconstruct", str(missing), str(truncated), str(good), str(not_an_image), str(tiny),
        "-o", str(out), "--checkpoint", str(checkpoint), "--save", "json", "--quiet", "--batch-size", "2",
    ])
    captured = capsys.readouterr()
    assert code == 1
    assert (out / "good.json").is_file()
    failures = [line for line in captured.err.splitlines() if line.startswith("lsqface: failed:")]
    assert len(failures) == 4
    for path in (missing, truncated, not_an_image, tiny):
        assert any(str(path) in line for line in failures)
    assert "Traceback" not in captured.err
    assert "reconstructed 1 of 5" in captured.out


def test_huge_image_is_refused_with_the_limit_named(tmp_path, checkpoint, run_cli, ict_uv_model, capsys):
    huge = tmp_path / "huge.png"
    # A valid PNG header claiming 20000 x 20000 pixels; never decoded in full.
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    code = run_cli(["reconstruct", str(huge), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "huge.png" in err and "pixel" in err.lower()


@pytest.mark.parametrize("make_args, fragment", [
    (lambda tmp: [str(tmp / "empty")], "holds no images"),
    (lambda tmp: [str(tmp / "nothing-*.jpg")], "matches no file"),
])
def test_inputs_that_give_nothing_exit_2(tmp_path, checkpoint, make_args, fragment, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["reconstruct", *make_args(tmp_path), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_without_a_checkpoint_it_says_so_in_one_sentence(tmp_path, capsys, monkeypatch):
    import lsqface.reconstruct as reconstruct

    monkeypatch.setattr(reconstruct, "DEFAULT_CHECKPOINT", tmp_path / "absent.pt")
    _photo(tmp_path / "a.png")
    code = main(["reconstruct", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "--checkpoint" in err and len(err.strip().splitlines()) == 1


def test_bad_bbox_and_cut_short_checkpoint(tmp_path, checkpoint, capsys):
    _photo(tmp_path / "a.png")
    assert main(["reconstruct", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--bbox", "1,2,3"]) == 2
    assert "--bbox takes four numbers" in capsys.readouterr().err
    assert main(["reconstruct", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(checkpoint),
                 "--refine", "-1"]) == 2
    assert "--refine must be between 0 and 10" in capsys.readouterr().err
    cut = tmp_path / "cut.pt"
    cut.write_bytes(checkpoint.read_bytes()[:1000])
    assert main(["reconstruct", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(cut)]) == 2
    assert "cut short" in capsys.readouterr().err


def test_detect_gives_one_reconstruction_per_face(tmp_path, checkpoint, run_cli, ict_uv_model, capsys):
    pytest.importorskip("dlib", reason="the optional detector needs: pip install 'lsqface[detect]'")
    import matplotlib.cbook

    face = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    group = Image.new("RGB", (1400, 700), (40, 60, 80))
    group.paste(face, (50, 50))
    group.paste(face.rotate(120, expand=False), (800, 50))
    group.save(tmp_path / "group.jpg")
    code = run_cli(["reconstruct", str(tmp_path / "group.jpg"), "--detect", "-o", str(tmp_path / "out"),
                    "--checkpoint", str(checkpoint), "--save", "json", "--quiet"])
    assert code == 0, capsys.readouterr().err
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == ["group_face0.json", "group_face1.json", "lsqface-outputs.jsonl"]


def test_without_inputs_the_demo_photo_is_reconstructed(tmp_path, checkpoint, run_cli, capsys):
    code = run_cli(["reconstruct", "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--save", "json", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "grace_hopper.json").read_text())["image_size"] == {"height": 600, "width": 512}


def test_a_photo_the_network_finds_no_face_in_is_written_with_a_warning(tmp_path, run_cli, ict_uv_model, capsys):
    # The shipped network is confident on a third of a synthetic face's input and on a few percent of a flat
    # grey photo: the grey one is still written (exit 0), with its status in the JSON and one warning line on stderr.
    from lsqface.data.synthetic import SyntheticConfig, generate_faces

    face = generate_faces(ict_uv_model, [7], SyntheticConfig(size=128, roll_range=180.0)).image[0]
    Image.fromarray((face.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "face.png")
    Image.new("RGB", (96, 96), (128, 128, 128)).save(tmp_path / "grey.png")
    out = tmp_path / "out"
    code = run_cli(["reconstruct", str(tmp_path / "face.png"), str(tmp_path / "grey.png"), "-o", str(out),
                    "--save", "json", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    shares = {stem: json.loads((out / f"{stem}.json").read_text()) for stem in ("face", "grey")}
    for parameters in shares.values():
        jsonschema.validate(parameters, SCHEMA)
    assert shares["face"]["confident_fraction"] > 0.2
    assert shares["grey"]["confident_fraction"] < 0.5 * shares["face"]["confident_fraction"]
    assert (shares["face"]["status"], shares["face"]["status_reason"]) == ("ok", "")
    assert shares["grey"]["status"] == "low_confidence" and "confident on" in shares["grey"]["status_reason"]
    assert set(shares["grey"]["plausibility"]) >= {"confident_fraction", "residual_mm", "nearest_depth", "stretch"}
    warnings = [line for line in err.splitlines() if line.startswith("lsqface: warning:")]
    assert len(warnings) == 1 and "grey.png" in warnings[0] and "low_confidence" in warnings[0]
    assert "little or no face" in warnings[0] and "--bbox" in warnings[0]


def test_pictures_are_bounded_and_the_size_option_raises_the_bound(tmp_path, checkpoint, run_cli, capsys):
    photo = _photo(tmp_path / "wide.png", size=(120, 90))
    for option, size in ((["--picture-size", "60"], (60, 45)), (["--picture-size", "0"], (120, 90)), ([], (120, 90))):
        out = tmp_path / f"out{len(option)}{size[0]}"
        code = run_cli(["reconstruct", str(photo), "-o", str(out), "--checkpoint", str(checkpoint), "--save",
                        "pictures", "--quiet", *option])
        assert code == 0, capsys.readouterr().err
        for name in ("overlay", "geometry", "landmarks"):
            assert Image.open(out / f"wide_{name}.png").size == size, (option, name)
    assert run_cli(["reconstruct", str(photo), "-o", str(tmp_path / "bad"), "--checkpoint", str(checkpoint),
                    "--picture-size", "-1"]) == 2
    assert "--picture-size must be between 0 and" in capsys.readouterr().err


def test_presets_and_threads_reach_the_reconstructor(tmp_path, checkpoint, run_cli, monkeypatch, capsys):
    """--preset picks the inference settings (lsqface.reconstruct.preset_config), --threads torch's threads;
    the progress bar counts photos."""
    from lsqface.reconstruct import Reconstructor

    chosen = []
    original = Reconstructor.from_checkpoint.__func__

    def recording(cls, *args, **kwargs):
        chosen.append(kwargs.get("preset"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Reconstructor, "from_checkpoint", classmethod(recording))
    monkeypatch.setattr(torch, "set_num_threads", lambda count: chosen.append(("threads", count)))
    photo = _photo(tmp_path / "a.png")
    code = run_cli(["reconstruct", str(photo), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
                    "--preset", "fast", "--threads", "1", "--save", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert chosen == [("threads", 1), "fast"]
    assert "photo/s" in captured.err and (tmp_path / "out" / "a.json").is_file()
    with pytest.raises(SystemExit) as refused:
        run_cli(["reconstruct", str(photo), "-o", str(tmp_path / "out"), "--preset", "fastest"])
    assert refused.value.code == 2 and "--preset" in capsys.readouterr().err


def test_framing_is_automatic_and_said_in_the_json(tmp_path, checkpoint, run_cli, capsys):
    pytest.importorskip("dlib", reason="the optional detector needs: pip install 'lsqface[detect]'")
    import matplotlib.cbook

    face = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    # A portrait as a phone takes it: the face a small part of a wide frame.
    wide = Image.new("RGB", (400, 300), (90, 110, 70))
    wide.paste(face.resize((100, 117)), (250, 150))
    wide.save(tmp_path / "phone.jpg")
    group = Image.new("RGB", (340, 200), (40, 60, 80))
    group.paste(face.resize((160, 187)), (5, 5))
    group.paste(face.resize((90, 105)), (220, 40))
    group.save(tmp_path / "group.jpg")
    _photo(tmp_path / "noise.png")
    out = tmp_path / "out"
    code = run_cli(["reconstruct", str(tmp_path / "phone.jpg"), str(tmp_path / "group.jpg"), str(tmp_path / "noise.png"),
                    "-o", str(out), "--checkpoint", str(checkpoint), "--save", "json", "--quiet"])
    assert code == 0, capsys.readouterr().err
    framing = {path.stem: json.loads(path.read_text())["framing"] for path in out.glob("*.json")}
    assert set(framing) == {"phone", "group_face0", "group_face1", "noise"}
    assert framing["phone"]["method"] == "detector" and framing["phone"]["faces"] == 1
    x, y, width, height = framing["phone"]["box"]
    assert 250 < x + width / 2 < 350 and 150 < y + height / 2 < 267  # in the photo's own pixels
    assert [framing[f"group_face{k}"]["face"] for k in (0, 1)] == [0, 1]
    assert framing["group_face0"]["box"][2] > framing["group_face1"]["box"][2]  # largest first
    assert framing["noise"] == {"method": "whole_photo", "face": 0, "faces": 1, "box": None,
                                "reason": "the detector found no face"}
    for parameters in (json.loads(path.read_text()) for path in out.glob("*.json")):
        jsonschema.validate(parameters, SCHEMA)
    largest = tmp_path / "largest"
    assert run_cli(["reconstruct", str(tmp_path / "group.jpg"), "-o", str(largest), "--checkpoint", str(checkpoint),
                    "--save", "json", "--quiet", "--largest-face"]) == 0
    assert json.loads((largest / "group.json").read_text())["framing"]["faces"] == 1
    whole = tmp_path / "whole"
    assert run_cli(["reconstruct", str(tmp_path / "phone.jpg"), "-o", str(whole), "--checkpoint", str(checkpoint),
                    "--save", "json", "--quiet", "--no-detect"]) == 0
    assert json.loads((whole / "phone.json").read_text())["framing"]["method"] == "whole_photo"
