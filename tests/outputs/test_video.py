"""`lsqface video` and reconstruct_video on short clips the tests write, with tiny random networks.

No trained network exists in the tests, so the fits are silly; what is checked is the path: every frame
read, drawn and recorded, failed solves survived, the MP4 playable, the parameters consistent.
"""

from __future__ import annotations

import dataclasses
import json

import imageio
import numpy as np
import pytest
import torch

from lsqface.cli import main
from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.errors import ConfigError, ImageError
from lsqface.nets.checkpoint import save_checkpoint
from lsqface.nets.unet import UNet, UNetConfig
from lsqface.outputs.video import read_video, reconstruct_video, smooth_fit, with_fit
from lsqface.reconstruct import ReconstructConfig, Reconstructor, reconstruct_from_maps
from lsqface.solver.fit import SolverConfig

FRAME_COUNT, FRAME_SIZE, FPS = 10, 64, 10
TINY = UNetConfig(variant="narrow", width=0.125)


def write_clip(path, count=FRAME_COUNT, size=FRAME_SIZE):
    """A clip of a bright bar moving over a gradient, H.264 through imageio."""
    rows, columns = np.mgrid[0:size, 0:size]
    with imageio.get_writer(path, fps=FPS, codec="libx264", pixelformat="yuv420p", macro_block_size=16) as writer:
        for k in range(count):
            frame = np.stack([rows * 4, columns * 4, np.full_like(rows, 128)], -1).astype(np.uint8)
            frame[:, 5 * k:5 * k + 10] = 255
            writer.append_data(frame)
    return path


def count_frames(path):
    with imageio.get_reader(path, "ffmpeg") as reader:
        frames = [frame for frame in reader]
    return len(frames), frames[0].shape


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    network = UNet(TINY)
    return save_checkpoint(tmp_path / "tiny.pt", {
        "network_config": dataclasses.asdict(TINY),
        "input_size": 32,
        "network_state": network.state_dict(),
        "solver_config": dataclasses.asdict(SolverConfig(sample_count=500)),
    })


def test_video_command_writes_a_playable_mp4_and_one_json_line_per_frame(ict_uv_model, checkpoint, tmp_path, monkeypatch, capsys):
    # The CLI loads the default face model; give it the test run's (the real ICT model at 128 px UV).
    monkeypatch.setattr("lsqface.morphable.cache.load_uv_model", lambda *args, **kwargs: ict_uv_model)
    clip = write_clip(tmp_path / "clip.mp4")
    output = tmp_path / "out" / "video.mp4"
    assert main(["video", str(clip), "-o", str(output), "--checkpoint", str(checkpoint), "--batch-size", "4", "--quiet"]) == 0
    assert str(output) in capsys.readouterr().out
    frames, shape = count_frames(output)
    assert frames == FRAME_COUNT
    assert shape == (2 * FRAME_SIZE, 3 * FRAME_SIZE, 3)  # two rows of three panels, even sizes
    lines = read_lines(output.with_suffix(".jsonl"))
    assert [line["frame"] for line in lines] == list(range(FRAME_COUNT))
    np.testing.assert_allclose([line["time"] for line in lines], np.arange(FRAME_COUNT) / FPS)
    for line in lines:
        # The tiny checkpoint does not re-frame, so every frame is framed whole.
        assert line["framing"] == {"method": "whole_frame", "box": None}
        if "error" in line:
            assert isinstance(line["error"], str) and line["error"]
            continue
        assert np.array(line["intrinsics"]).shape == (3, 3) and np.array(line["rotation"]).shape == (3, 3)
        assert len(line["translation"]) == 3 and set(line["pose"]) == {"yaw", "pitch", "roll"}
        assert line["status"] in ("ok", "low_confidence", "implausible")
        assert (line["status_reason"] == "") == (line["status"] == "ok")
        assert np.array(line["landmarks_5"]).shape == (5, 2) and np.array(line["landmarks_68"]).shape == (68, 2)
        assert len(line["identity"]) == ict_uv_model.model.n_identity
        assert len(line["expression"]) == ict_uv_model.model.n_expression
        assert len(line["albedo"]) == ict_uv_model.model.n_albedo and np.array(line["lighting"]).shape == (3, 9)
        rotation = np.array(line["rotation"])
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
    assert not [path for path in output.parent.iterdir() if path.name.startswith(".")]  # no temporary files left


class HalfBlindUNet(UNet):
    """A U-Net that sees nothing in odd frames (zero confidence): their solve must fail."""

    def forward(self, image):
        maps = super().forward(image)
        confidence = maps.confidence.clone()
        confidence[1::2] = 0.0
        return dataclasses.replace(maps, confidence=confidence)


def test_failed_frames_are_drawn_and_recorded_with_an_error(ict_uv_model, tmp_path):
    torch.manual_seed(0)
    reconstructor = Reconstructor(HalfBlindUNet(TINY), ict_uv_model,
                                  ReconstructConfig(input_size=32, solver=SolverConfig(sample_count=500)))
    clip = write_clip(tmp_path / "clip.mp4", count=4)
    summary = reconstruct_video(reconstructor, clip, tmp_path / "out.mp4", batch_size=4, smoothing=0.5, progress=False)
    lines = read_lines(tmp_path / "out.jsonl")
    assert ["error" in line for line in lines] == [False, True, False, True]
    assert summary.frames == 4 and summary.failed == 2
    assert count_frames(tmp_path / "out.mp4")[0] == 4
    assert all(line["framing"] == {"method": "whole_frame", "box": None} for line in lines)


def test_each_json_line_says_how_its_frame_was_framed(ict_uv_model, checkpoint, tmp_path, monkeypatch, capsys):
    """Every line has a ``framing``, as a photo's JSON has: here the --bbox given, in the frame's pixels."""
    monkeypatch.setattr("lsqface.morphable.cache.load_uv_model", lambda *args, **kwargs: ict_uv_model)
    clip = write_clip(tmp_path / "clip.mp4", count=3)
    assert main(["video", str(clip), "-o", str(tmp_path / "out.mp4"), "--checkpoint", str(checkpoint), "--quiet",
                 "--bbox", "8,10.5,40,36"]) == 0, capsys.readouterr().err
    lines = read_lines(tmp_path / "out.jsonl")
    assert [line["framing"] for line in lines] == [{"method": "box", "box": [8.0, 10.5, 40.0, 36.0]}] * 3


def test_unreadable_video_exits_2_with_one_line(checkpoint, tmp_path, capsys):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    assert main(["video", str(fake), "-o", str(tmp_path / "out.mp4"), "--checkpoint", str(checkpoint), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lsqface: error:") and "notes.mp4" in lines[0]
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.jsonl").exists()
    with pytest.raises(ImageError):
        read_video(tmp_path / "missing.mp4")


def test_a_missing_default_network_is_one_sentence(tmp_path, capsys, monkeypatch):
    import lsqface.reconstruct as reconstruct

    monkeypatch.setattr(reconstruct, "DEFAULT_CHECKPOINT", tmp_path / "absent.pt")
    clip = write_clip(tmp_path / "clip.mp4", count=2)
    assert main(["video", str(clip), "-o", str(tmp_path / "out.mp4")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--checkpoint" in lines[0]


def test_bad_options_are_refused(ict_uv_model, tmp_path):
    reconstructor = Reconstructor(UNet(TINY), ict_uv_model, ReconstructConfig(input_size=32))
    clip = write_clip(tmp_path / "clip.mp4", count=1)
    with pytest.raises(ConfigError):
        reconstruct_video(reconstructor, clip, tmp_path / "out.mp4", smoothing=1.0, progress=False)
    with pytest.raises(ConfigError):
        reconstruct_video(reconstructor, clip, tmp_path / "out.mp4", batch_size=0, progress=False)


@pytest.fixture(scope="module")
def oracle(ict_uv_model):
    faces = generate_faces(ict_uv_model, [11, 12, 13], SyntheticConfig(size=64))
    return reconstruct_from_maps(ict_uv_model, faces.image, faces.correspondence, faces.depth, faces.confidence)


def test_with_fit_reproduces_the_reconstruction(ict_uv_model, oracle):
    again = with_fit(oracle, ict_uv_model, oracle.fit)
    for name in ("vertices", "colour", "intrinsics", "pose", "landmarks_68", "landmarks_5"):
        torch.testing.assert_close(getattr(again, name), getattr(oracle, name), rtol=1e-6, atol=1e-6, msg=name)
    assert again.status == oracle.status == ["ok"] * 3
    # The status follows the parameters: a camera turned inside out is not a face.
    inside_out = dataclasses.replace(oracle.fit, translation=-oracle.fit.translation)
    assert with_fit(oracle, ict_uv_model, inside_out).status == ["implausible"] * 3


def test_smoothing_is_an_exponential_moving_average(oracle):
    fit = oracle.fit
    unchanged, _ = smooth_fit(fit, None, 0.0, [0, 1, 2])
    torch.testing.assert_close(unchanged.translation, fit.translation)
    torch.testing.assert_close(unchanged.rotation, fit.rotation)
    smoothing = 0.6
    smoothed, state = smooth_fit(fit, None, smoothing, [0, 2])  # frame 1 failed: left out
    translation = fit.translation.double().numpy()
    expected = [translation[0], None, smoothing * translation[0] + (1 - smoothing) * translation[2]]
    np.testing.assert_allclose(smoothed.translation[0].double().numpy(), expected[0], rtol=1e-6)
    np.testing.assert_allclose(smoothed.translation[2].double().numpy(), expected[2], rtol=1e-6)
    np.testing.assert_allclose(smoothed.translation[1].double().numpy(), translation[1], rtol=1e-6)
    # The averaged rotation is the rotation nearest to the averaged matrix (orthogonal Procrustes).
    average = smoothing * fit.rotation[0].double().numpy() + (1 - smoothing) * fit.rotation[2].double().numpy()
    u, _, vt = np.linalg.svd(average)
    np.testing.assert_allclose(smoothed.rotation[2].double().numpy(), u @ vt, atol=1e-5)
    # The state carries over to the next batch.
    following, _ = smooth_fit(fit, state, smoothing, [0])
    np.testing.assert_allclose(following.translation[0].double().numpy(),
                               smoothing * expected[2] + (1 - smoothing) * translation[0], rtol=1e-6)


@pytest.mark.skipif(not __import__("lsqface.reconstruct", fromlist=["x"]).DEFAULT_CHECKPOINT.is_file(),
                    reason="no default network in this checkout")
def test_tracking_frames_a_small_moving_face_like_a_photo(ict_uv_model, tmp_path):
    """A face at 45 % of the frame's width (the small end of what the network was trained on),
    drifting across it: the shipped network with one re-framing pass follows it and its landmarks are
    better than with whole frames."""
    from lsqface.evaluate.benchmark import evaluation_seeds
    from lsqface.evaluate.metrics import landmark_error

    size = 160
    faces = generate_faces(ict_uv_model, evaluation_seeds(1, 500),
                           SyntheticConfig(size=size, face_fraction=(0.45, 0.45), shift=0.0, roll_range=30.0))
    image = (faces.image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    offsets = [(-12 + 3 * k, 8 - 2 * k) for k in range(8)]
    truth = []
    with imageio.get_writer(tmp_path / "drift.mp4", fps=FPS, codec="libx264", pixelformat="yuv420p", quality=10,
                            macro_block_size=16) as writer:
        for dx, dy in offsets:
            writer.append_data(np.roll(image, (dy, dx), axis=(0, 1)))  # the background wraps round
            truth.append(faces.landmarks_5[0].numpy() + [dx, dy])
    truth = torch.as_tensor(np.stack(truth), dtype=torch.float64)
    shipped = Reconstructor.from_checkpoint(uv_model=ict_uv_model)
    errors = {}
    # The shipped settings re-frame photos no more (chosen on real photos); a video re-frames with --refine 1.
    for name, passes in (("tracked", max(1, shipped.config.refine_passes)), ("whole frames", 0)):
        reconstructor = Reconstructor(shipped.network, ict_uv_model, dataclasses.replace(shipped.config, refine_passes=passes))
        reconstruct_video(reconstructor, tmp_path / "drift.mp4", tmp_path / f"{name}.mp4", batch_size=4, progress=False)
        lines = read_lines(tmp_path / f"{name}.jsonl")
        assert len(lines) == 8 and not any("error" in line for line in lines)
        # The framing each line gives: the whole frame until tracking moves to the square the fits ask for.
        methods = [line["framing"]["method"] for line in lines]
        first = methods.index("tracking") if passes else len(methods)
        assert methods == ["whole_frame"] * first + ["tracking"] * (len(methods) - first), methods
        assert all((line["framing"]["box"] is None) == (line["framing"]["method"] == "whole_frame") for line in lines)
        predicted = torch.tensor([line["landmarks_5"] for line in lines], dtype=torch.float64)
        errors[name] = landmark_error(predicted, truth)
    assert float(errors["tracked"].median()) < float(errors["whole frames"].median()), errors


@pytest.mark.parametrize("name, fragment", [
    ("clip.mp4", "would replace the input video"),
    ("res.jsonl", "names the parameters file"),
    ("mine.mp4", "was not written by lsqface video"),
    ("mine.jsonl.mp4", None),
])
def test_outputs_never_replace_the_input_or_a_users_file(checkpoint, tmp_path, capsys, name, fragment):
    clip = write_clip(tmp_path / "clip.mp4", count=1)
    (tmp_path / "mine.mp4").write_bytes(b"the user's own video")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    code = main(["video", str(clip), "-o", str(tmp_path / name), "--checkpoint", str(checkpoint), "--quiet"])
    err = capsys.readouterr().err
    if fragment is None:
        assert code == 0, err
        assert read_lines(tmp_path / "mine.jsonl.jsonl")[0]["frame"] == 0
        # A second run replaces what the first wrote.
        assert main(["video", str(clip), "-o", str(tmp_path / name), "--checkpoint", str(checkpoint), "--quiet"]) == 0
    else:
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert {name: data for name, data in ((path.name, path.read_bytes()) for path in tmp_path.iterdir())
            if name in before} == before


def failing_on_call(function, call: int, error: BaseException):
    """``function``, except that its ``call``-th call (counting from 1) raises ``error``."""
    calls = []

    def wrapped(*args):
        calls.append(1)
        if len(calls) == call:
            raise error
        return function(*args)

    return wrapped


@pytest.mark.parametrize("cores", [1, 2])
def test_an_interrupt_keeps_a_playable_video_of_the_finished_frames(ict_uv_model, tmp_path, monkeypatch, cores):
    import lsqface.outputs.video as video

    monkeypatch.setattr(video, "_cores", lambda: cores)  # pictures drawn in turn, or by a second thread
    reconstructor = Reconstructor(UNet(TINY), ict_uv_model, ReconstructConfig(input_size=32))
    clip = write_clip(tmp_path / "clip.mp4", count=6)
    monkeypatch.setattr(video, "_run_batch", failing_on_call(video._run_batch, 3, KeyboardInterrupt))
    summary = reconstruct_video(reconstructor, clip, tmp_path / "out.mp4", batch_size=2, progress=False)
    assert summary.interrupted and summary.frames == 4 and "interrupted" in str(summary)
    assert count_frames(tmp_path / "out.mp4")[0] == 4
    assert [line["frame"] for line in read_lines(tmp_path / "out.jsonl")] == [0, 1, 2, 3]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4", "out.jsonl", "out.mp4"]


def test_a_box_beyond_the_frame_is_one_sentence(checkpoint, tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", count=1)
    code = main(["video", str(clip), "-o", str(tmp_path / "out.mp4"), "--checkpoint", str(checkpoint), "--quiet",
                 "--bbox", "0,0,15000,15000"])
    err = capsys.readouterr().err
    assert code == 2 and "does not frame a face" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.jsonl").exists()


def test_a_label_is_the_text_drawn_on_its_black_box():
    """The cached label patch pasted on a panel is what drawing the box and the text on it gives."""
    from PIL import Image, ImageDraw, ImageFont

    from lsqface.outputs.video import _label

    rng = np.random.default_rng(0)
    for height, width in ((96, 128), (12, 30), (5, 4)):
        panel = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for text in ("input", "    fit failed"):
            image = Image.fromarray(panel)
            draw = ImageDraw.Draw(image)
            font = ImageFont.load_default()
            left, top, right, bottom = draw.textbbox((3, 2), text, font=font)
            draw.rectangle([left - 2, top - 1, right + 2, bottom + 1], fill=(0, 0, 0))
            draw.text((3, 2), text, fill=(255, 255, 255), font=font)
            labelled = _label(panel, text)
            np.testing.assert_array_equal(labelled, np.asarray(image), err_msg=f"{text!r} on {height}x{width}")
        assert not np.shares_memory(labelled, panel)


def test_a_batchs_panels_are_each_frames_panels(ict_uv_model):
    """_batch_panels draws the meshes of a batch together; every frame's panels are those drawn one by one."""
    from lsqface.outputs.pictures import mesh_pictures
    from lsqface.outputs.video import _batch_panels, _frame_panels, _in_panel, _panel_photo

    faces = generate_faces(ict_uv_model, [1, 2, 3], SyntheticConfig(size=64))
    frames = [(faces.image[index].permute(1, 2, 0).numpy() * 255).astype(np.uint8) for index in range(3)]
    whole = reconstruct_from_maps(ict_uv_model, faces.image, faces.correspondence, faces.depth, faces.confidence)
    alone = reconstruct_from_maps(ict_uv_model, faces.image[2:], faces.correspondence[2:], faces.depth[2:],
                                  faces.confidence[2:])
    # Frame 0 from the batch's fit, 1 failed, 2 refitted alone (as _solve falls back frame by frame).
    results = [(whole, 0), "The fit is not finite.", (alone, 0)]
    together = _batch_panels(frames, faces, results)
    for row, result in enumerate(results):
        photo = _panel_photo(frames[row])
        if isinstance(result, str):
            one = _frame_panels(photo, faces, row)
        else:
            meshes = mesh_pictures(_in_panel(result[0], frames[row].shape[:2], photo.shape[:2]), result[1], photo)
            one = _frame_panels(photo, faces, row, *result, meshes)
        assert len(together[row]) == len(one) == 6
        for panel, expected in zip(together[row], one):
            np.testing.assert_array_equal(panel, expected)
    assert (together[0][2] != together[1][2]).any()  # a fitted frame's geometry is not the failed frame's


def test_drawing_beside_the_next_batch_writes_what_drawing_in_turn_writes(ict_uv_model, tmp_path, monkeypatch):
    """With a second core the pictures are drawn in a second thread; the video and lines are the same."""
    import lsqface.outputs.video as video

    torch.manual_seed(0)
    reconstructor = Reconstructor(UNet(TINY), ict_uv_model, ReconstructConfig(input_size=32))
    clip = write_clip(tmp_path / "clip.mp4", count=5)
    outputs = {}
    for cores in (1, 2):
        monkeypatch.setattr(video, "_cores", lambda cores=cores: cores)
        summary = reconstruct_video(reconstructor, clip, tmp_path / f"out{cores}.mp4", batch_size=2, progress=False)
        assert summary.frames == 5
        outputs[cores] = (read_lines(summary.parameters), [frame for frame in imageio.v3.imiter(summary.video)])
    assert outputs[1][0] == outputs[2][0]
    assert len(outputs[1][1]) == len(outputs[2][1]) == 5
    for one, two in zip(outputs[1][1], outputs[2][1]):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("cores", [1, 2])
def test_an_error_while_drawing_reaches_the_caller_and_keeps_the_finished_frames(ict_uv_model, tmp_path, monkeypatch,
                                                                                  cores):
    import lsqface.outputs.video as video

    monkeypatch.setattr(video, "_cores", lambda: cores)
    reconstructor = Reconstructor(UNet(TINY), ict_uv_model, ReconstructConfig(input_size=32))
    clip = write_clip(tmp_path / "clip.mp4", count=6)
    monkeypatch.setattr(video, "_batch_panels", failing_on_call(video._batch_panels, 2, OSError("no space left on device")))
    with pytest.raises(OSError, match="no space"):
        reconstruct_video(reconstructor, clip, tmp_path / "out.mp4", batch_size=2, progress=False)
    assert count_frames(tmp_path / "out.mp4")[0] == 2
    assert [line["frame"] for line in read_lines(tmp_path / "out.jsonl")] == [0, 1]
