"""A generated corpus of bad option values through every subcommand: exit 2, one line, no traceback, nothing written.

The values are refused before a network, a face model or a photo is loaded, so each example costs
milliseconds. Bad files (formats, sizes, special files, permissions, output paths) are in
tests/outputs/test_batch.py and tests/test_cli_reconstruct.py.
"""

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsqface.cli import OPTION_BOUNDS, SIZE_BOUNDS, main

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: The commands and the words that make each a complete command line but for the option under test.
COMMANDS = {
    "reconstruct": lambda tmp: ["reconstruct", str(tmp / "photo.png"), "-o", str(tmp / "out")],
    "video": lambda tmp: ["video", str(tmp / "clip.mp4"), "-o", str(tmp / "out" / "video.mp4")],
    "evaluate": lambda tmp: ["evaluate", "--oracle", "--synthetic", "1", "-o", str(tmp / "out")],
    "compare": lambda tmp: ["compare", "--checkpoints", str(tmp / "a.pt"), "-o", str(tmp / "out")],
    "backgrounds": lambda tmp: ["backgrounds", str(tmp / "photo.png"), "-o", str(tmp / "out")],
}
#: Integer options and the commands that take them.
INTEGER_OPTIONS = {
    "--batch-size": ("reconstruct", "video", "evaluate", "compare"),
    "--refine": ("reconstruct",),
    "--picture-size": ("reconstruct",),
    "--size": ("evaluate", "compare"),
    "--synthetic": ("evaluate", "compare"),
    "--max-side": ("backgrounds",),
}


def _bounds(option, command):
    name = option[2:].replace("-", "_")
    return SIZE_BOUNDS[command] if name == "size" else OPTION_BOUNDS[name]


def _snapshot(folder):
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _run(args, capsys):
    try:
        code = main(args)
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    return code, capsys.readouterr().err


def _assert_refused(code, err):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lsqface: error: "), err
    assert "Traceback" not in err


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"not read: the options are refused first")
    (tmp_path / "clip.mp4").write_bytes(b"not read either")
    (tmp_path / "a.pt").write_bytes(b"nor this")
    return tmp_path


def _out_of_bounds(option, command):
    low, high = _bounds(option, command)
    return st.one_of(
        st.integers(max_value=low - 1), st.integers(min_value=high + 1),
        st.sampled_from(["nan", "inf", "-inf", "1e9", "", "ten", "0x10", "1.5"]),
    )


@SETTINGS
@given(data=st.data())
def test_integer_options_out_of_bounds(folder, capsys, data):
    option = data.draw(st.sampled_from(sorted(INTEGER_OPTIONS)))
    command = data.draw(st.sampled_from(INTEGER_OPTIONS[option]))
    value = data.draw(_out_of_bounds(option, command))
    before = _snapshot(folder)
    _assert_refused(*_run([*COMMANDS[command](folder), option, str(value)], capsys))
    assert _snapshot(folder) == before and not (folder / "out").exists()


#: Numbers no coordinate takes: not finite, or beyond any photo.
BAD_NUMBERS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300]),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda value: not math.isfinite(value) or abs(value) > 1e7),
)


@SETTINGS
@given(data=st.data())
def test_boxes_that_frame_nothing(folder, capsys, data):
    command = data.draw(st.sampled_from(["reconstruct", "video"]))
    box = data.draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=4, max_size=4))
    position = data.draw(st.integers(0, 3))
    box[position] = data.draw(BAD_NUMBERS if position < 2 else st.one_of(BAD_NUMBERS, st.floats(-1e6, 0.999)))
    before = _snapshot(folder)
    _assert_refused(*_run([*COMMANDS[command](folder), "--bbox", ",".join(map(repr, box))], capsys))
    assert _snapshot(folder) == before and not (folder / "out").exists()


@SETTINGS
@given(text=st.one_of(
    st.lists(st.floats(0, 360), max_size=3).flatmap(lambda good: st.lists(
        BAD_NUMBERS | st.floats(360.001, 1e9) | st.floats(-1e9, -0.001), min_size=1, max_size=3).map(
        lambda bad: ",".join(map(repr, good + bad)))),
    st.sampled_from(["", ",", "a,b", "0,,x", ",".join(["1"] * 65)]),
))
def test_rotation_ranges(folder, capsys, text):
    _assert_refused(*_run([*COMMANDS["evaluate"](folder), "--ranges", text], capsys))
    assert not (folder / "out").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "tpu", "gpu", "", "cpu:x", "meta"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_devices_unknown_or_absent(folder, capsys, command, device):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the GPU")
    code, err = _run([*COMMANDS[command](folder), "--device", device], capsys)
    _assert_refused(code, err)
    assert "--device" in err and not (folder / "out").exists()


@pytest.mark.parametrize("args", [
    ["reconstruct", "photo.png", "-o", "out", "--save", ""],
    ["reconstruct", "photo.png", "-o", "out", "--save", ",,"],
    ["reconstruct", "photo.png", "-o", "out", "--save", "gltf"],
    ["reconstruct", "photo.png", "-o", "out", "--bbox", "1,2,3"],
    ["reconstruct", "photo.png", "-o", "out", "--bbox", "1,2,3,4", "--no-detect"],
    ["reconstruct", "photo.png", "-o", "out", "--detect", "--no-detect"],
    ["video", "clip.mp4", "-o", "out.mp4", "--smoothing", "nan"],
    ["video", "clip.mp4", "-o", "out.mp4", "--smoothing", "1"],
    ["export", "a.pt", "-o", "b.pt", "--ensemble", "3"],
    ["export", "a.pt", "-o", "b.pt", "--refine-fraction", "inf"],
    ["validate-lighting", "--points", "0"],
    ["validate-lighting", "--examples", "-1"],
    ["model", "build", "--size", "100000"],
    ["backgrounds", "missing", "-o", "out"],
    ["backgrounds", "clip.mp4", "-o", "out"],
    ["train", "--config", str(Path(__file__).parents[1] / "configs" / "photo.toml"), "--backgrounds", "missing"],
    ["nonsense"],
])
def test_other_bad_command_lines(folder, capsys, monkeypatch, args):
    monkeypatch.chdir(folder)
    before = _snapshot(folder)
    _assert_refused(*_run(args, capsys))
    assert _snapshot(folder) == before and not (folder / "out").exists()


@pytest.mark.parametrize("setting", ["robust_iterations=1000000000", "sample_count=0", "robust_scale=NaN"])
def test_export_refuses_settings_reconstruct_would_refuse(tmp_path, tiny_checkpoint, capsys, setting):
    _assert_refused(*_run(["export", str(tiny_checkpoint), "-o", str(tmp_path / "out.pt"), "--solver", setting], capsys))
    assert not (tmp_path / "out.pt").exists()
