"""`lsqface model build` and `lsqface model show` on the real ICT-FaceKit archive, and on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lsqface.cli import main


@pytest.mark.slow  # parses the real ICT-FaceKit archive once (about 7 s)
def test_model_build_then_show(ict_archive, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert main(["model", "build", "--source", str(ict_archive), "--size", "48"]) == 0
    summary = capsys.readouterr().out
    assert "ict-facekit" in summary and "48x48" in summary
    cached = list((tmp_path / "xdg" / "lsqface" / "uv-3dmm").glob("*.npz"))
    assert len(cached) == 1

    output = tmp_path / "pictures"
    assert main(["model", "show", "--source", str(ict_archive), "--size", "48", "-o", str(output)]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 5 and all(path.endswith(".png") for path in printed)
    assert sorted(p.name for p in output.iterdir()) == sorted(path.rsplit("/", 1)[-1] for path in printed)
    for path in printed:
        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 5  # something was drawn
    assert list((tmp_path / "xdg" / "lsqface" / "uv-3dmm").glob("*.npz")) == cached  # show used the cache


def test_missing_source_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert main(["model", "build", "--source", str(tmp_path / "nowhere.tar.xz")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lsqface: error:") and "nowhere.tar.xz" in lines[0]
    assert "Traceback" not in captured.err


def test_bad_size_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    source = tmp_path / "any.h5"
    source.write_bytes(b"")
    assert main(["model", "show", "--source", str(source), "--size", "1", "-o", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "size" in lines[0]
