"""A video in, a six-panel MP4 and one JSON line per frame out (seed O).

Frames are read with imageio (its ffmpeg comes with the imageio-ffmpeg
package, so no system ffmpeg is needed), reconstructed in batches through the
same :class:`lsqface.reconstruct.Reconstructor` as single photos, and written
as H.264 (yuv420p, even width and height, plays everywhere) with this layout:

    +----------------+----------------+----------------+
    | input          | reconstruction | geometry       |
    +----------------+----------------+----------------+
    | correspondence | confidence     | depth          |
    +----------------+----------------+----------------+

Each panel is the input frame's size, scaled down so its longer side is at
most ``PANEL_SIDE`` pixels; the meshes are rendered at the panel's size with
the camera scaled accordingly. Beside the video, ``<output>.jsonl`` holds one
line per frame: index, time, camera, pose, landmarks and coefficients, or an
``"error"`` when the least-squares solve failed for that frame (the frame is
then drawn with the input and the network's maps only, and the video goes on).

Tracking: with a checkpoint that re-frames photos (``refine_passes`` > 0, as the
shipped model does), the face is followed from batch to batch. A batch is
fitted in the current frame (at first the whole frame or ``box``); when its
last good fit asks for a frame that does not agree with it (the face moved by
a tenth of the crop or changed size by a fifth, :func:`lsqface.reconstruct.frames_agree`),
the batch is fitted again in the frame it asks for, which is kept if the refit
agrees, and the smoothing restarts. So a small face in a wide shot is seen as
the network was trained to see it, at one extra pass only when the face moves.
Each JSON line's ``framing`` gives the frame it was fitted in (:func:`framing_record`).

Temporal smoothing (off by default): with ``smoothing = a`` in [0, 1), every
fitted parameter p (rotation, translation, camera intrinsics, identity,
expression and albedo coefficients, lighting) is replaced by the exponential
moving average s_t = a s_(t-1) + (1 - a) p_t over the frames whose solve
succeeded, and the mesh, colour and landmarks are recomputed from s_t. The
averaged rotation matrix is projected back onto the rotations (SVD). ``a``
is the weight of the past: 0.5 halves a jitter's amplitude at the cost of
about one frame of lag; 0.9 is smooth but lags ten frames behind fast turns.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lsqface.errors import ConfigError, ImageError, LsqfaceError
from lsqface.outputs.pictures import (
    batch_mesh_pictures,
    confidence_picture,
    correspondence_picture,
    depth_picture,
    mark_status,
)

__all__ = ["VideoSummary", "reconstruct_video", "read_video", "smooth_fit", "frame_record"]

#: x264's settings: half the encoder time of its default (``medium``, CRF 23) on lsqface's panels
#: (11 against 20 ms of CPU per 768 x 512 frame), a closer copy of them (37.6 against 37.0 dB PSNR),
#: files about a third larger. The encoder runs in its own process, beside the reconstruction.
X264_SETTINGS = ("-preset", "veryfast", "-crf", "21")
#: Longest side of one panel, pixels: six 480 px panels make a 1440 x 960 video.
PANEL_SIDE = 480
PANEL_TITLES = ("input", "reconstruction", "geometry", "correspondence", "confidence", "depth")
_FIT_PARAMETERS = ("rotation", "translation", "intrinsics", "identity_coefficients", "expression_coefficients",
                   "albedo_coefficients", "inverse_lighting")


@dataclass(frozen=True)
class VideoSummary:
    """What :func:`reconstruct_video` did.

    Attributes:
        video: the MP4 written; parameters: the JSON-lines file beside it.
        frames: frames read and written; failed: frames whose solve failed.
        fps: frame rate (that of the input).
        width, height: size of the output video, pixels.
        seconds: wall-clock time.
    """

    video: Path
    parameters: Path
    frames: int
    failed: int
    fps: float
    width: int
    height: int
    seconds: float
    interrupted: bool = False

    def __str__(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else float("inf")
        failed = f", {self.failed} failed" if self.failed else ""
        stopped = "interrupted; kept " if self.interrupted else ""
        return (f"{stopped}{self.video} ({self.frames} frames{failed}, {self.width}x{self.height} at {self.fps:g} fps, "
                f"{rate:.2f} frames/s) and {self.parameters}")


#: Largest video frame, pixels (8K UHD); a batch holds ``batch_size`` such frames.
MAX_FRAME_PIXELS = 7680 * 4320


def _written_by_video(parameters: Path) -> bool:
    """Whether ``parameters`` is a JSON-lines file of ``lsqface video`` (its first line a frame record)."""
    try:
        with open(parameters, encoding="utf-8") as lines:
            first = json.loads(lines.readline() or "null")
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(first, dict) and "frame" in first and "time" in first


def check_video_outputs(input_path: Path, output_path: Path) -> tuple[Path, Path]:
    """The parameters file beside ``output_path``, once both outputs are known to be safe to write.

    Refuses (``ConfigError``) an output that is the input, a ``.jsonl`` name (the parameters take it),
    a folder, or an existing file lsqface did not write: a video is replaced only with its own
    ``.jsonl`` of frame records beside it.
    """
    parameters_path = output_path.with_suffix(".jsonl")
    if output_path.suffix.lower() == ".jsonl":
        raise ConfigError(f"-o {output_path} names the parameters file; pass the MP4 to write (e.g. out.mp4), "
                          "its .jsonl goes beside it.")
    for path in (output_path, parameters_path):
        if path.exists() and Path(input_path).exists() and path.resolve() == Path(input_path).resolve():
            raise ConfigError(f"-o {output_path} would replace the input video {input_path}; pass another name.")
    if output_path.is_dir():
        raise ConfigError(f"-o {output_path} is a folder; pass the name of the MP4 to write.")
    ours = _written_by_video(parameters_path)
    for path in (output_path, parameters_path):
        if (path.exists() or path.is_symlink()) and not ours:
            raise ConfigError(f"{path} exists and was not written by lsqface video; pass another -o name or move it.")
    return output_path, parameters_path


def read_video(path: str | Path) -> tuple[dict, Iterator[np.ndarray]]:
    """Open a video: its metadata (``fps``, ``size`` (width, height), ``nframes`` maybe ``inf``) and its frames.

    Frames are (H, W, 3) uint8 RGB.

    Raises:
        ImageError: the file does not exist or ffmpeg cannot read it as a video.
    """
    import imageio

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"Video {path} does not exist; pass the path of a video file (MP4, MOV, AVI, MKV...).")
    try:
        reader = imageio.get_reader(path, "ffmpeg")
        metadata = reader.get_meta_data()
    except (OSError, RuntimeError, ValueError, IndexError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ImageError(f"Cannot read {path} as a video ({reason}); pass a video file ffmpeg can decode.") from None

    def frames() -> Iterator[np.ndarray]:
        try:
            for frame in reader:
                if frame.shape[0] * frame.shape[1] > MAX_FRAME_PIXELS:
                    raise ImageError(f"Video {path} has {frame.shape[1]}x{frame.shape[0]} frames, more than the limit "
                                     f"of {MAX_FRAME_PIXELS:,} pixels; downscale it first.")
                yield np.ascontiguousarray(np.asarray(frame)[..., :3])
        except (OSError, RuntimeError) as error:
            raise ImageError(f"Video {path} stops being readable mid-way ({type(error).__name__}); re-encode it.") from None
        finally:
            reader.close()

    return metadata, frames()


def _batches(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _project_to_rotation(matrix: torch.Tensor) -> torch.Tensor:
    """The rotation nearest (Frobenius) to each (B, 3, 3) matrix."""
    u, _, vh = torch.linalg.svd(matrix)
    sign = torch.sign(torch.linalg.det(u @ vh))
    correction = torch.ones_like(matrix[..., 0])
    correction[..., 2] = sign
    return (u * correction[..., None, :]) @ vh


def smooth_fit(fit, state: dict[str, torch.Tensor] | None, smoothing: float, rows: Sequence[int]):
    """Exponential moving average of a fit's parameters over its batch rows, in order.

    Args:
        fit: a :class:`lsqface.solver.fit.LeastSquaresFit` of B frames (consecutive).
        state: the average after the previous frame (parameter name -> (1, ...) tensor), or None.
        smoothing: a in [0, 1): s_t = a s_(t-1) + (1 - a) p_t.
        rows: which rows take part (frames whose solve succeeded), increasing.

    Returns:
        (the fit with every parameter replaced by its running average at that row, the new state).
    """
    values = {name: getattr(fit, name).clone() for name in _FIT_PARAMETERS}
    for row in rows:
        current = {name: values[name][row:row + 1] for name in _FIT_PARAMETERS}
        if state is None:
            state = {name: tensor.clone() for name, tensor in current.items()}
        else:
            state = {name: smoothing * state[name] + (1.0 - smoothing) * current[name] for name in _FIT_PARAMETERS}
            state["rotation"] = _project_to_rotation(state["rotation"])
        for name in _FIT_PARAMETERS:
            values[name][row:row + 1] = state[name]
    return dataclasses.replace(fit, **values), state


def with_fit(reconstruction, uv_model, fit, softplus_eps: float = 4.0, thresholds=None):
    """The reconstruction recomputed from other fitted parameters (same maps and framing).

    Mirrors the tail of :func:`lsqface.reconstruct.reconstruct_from_maps`: mesh, colour,
    original-image camera, pose, landmarks and status from ``fit``'s R, t, K and coefficients
    (``thresholds``: the :class:`lsqface.solver.plausibility.StatusThresholds`, None for the defaults).
    """
    from lsqface.reconstruct import assess, fitted_mesh
    from lsqface.solver.plausibility import StatusThresholds
    from lsqface.solver.pose import pose_from_rotation

    dtype = torch.float64
    fit64 = dataclasses.replace(fit, **{name: getattr(fit, name).to(dtype) for name in _FIT_PARAMETERS})
    mesh = fitted_mesh(uv_model, fit64, softplus_eps)
    intrinsics = torch.linalg.solve(reconstruction.to_network.to(dtype), fit64.intrinsics)
    intrinsics = intrinsics / intrinsics[:, 2:3, 2:3]
    sixty_eight, five = uv_model.model.landmark_points(mesh.vertices.detach().cpu().numpy())

    def project(points: np.ndarray) -> torch.Tensor:
        camera = torch.as_tensor(points, dtype=dtype) @ intrinsics.cpu().transpose(1, 2)
        return camera[..., :2] / camera[..., 2:3]

    return assess(dataclasses.replace(
        reconstruction, vertices=mesh.vertices, normals=mesh.normals, albedo=mesh.albedo, colour=mesh.colour,
        intrinsics=intrinsics, rotation=fit64.rotation, translation=fit64.translation,
        pose=torch.rad2deg(pose_from_rotation(fit64.rotation)), identity=fit.identity_coefficients,
        expression=fit.expression_coefficients, albedo_coefficients=fit.albedo_coefficients,
        inverse_lighting=fit.inverse_lighting, landmarks_68=project(sixty_eight), landmarks_5=project(five), fit=fit,
    ), uv_model, StatusThresholds() if thresholds is None else thresholds)


def _listed(tensor: torch.Tensor, digits: int = 6) -> list:
    return np.round(tensor.detach().cpu().double().numpy(), digits).tolist()


def frame_record(reconstruction, index: int, frame: int, seconds: float) -> dict:
    """The JSON line of one reconstructed frame (see docs/pictures-video.md for the schema)."""
    yaw, pitch, roll = _listed(reconstruction.pose[index], 4)
    return {
        "frame": frame,
        "time": round(seconds, 6),
        "status": reconstruction.status[index] if reconstruction.status else "ok",
        "status_reason": reconstruction.status_reason[index] if reconstruction.status else "",
        "intrinsics": _listed(reconstruction.intrinsics[index]),
        "rotation": _listed(reconstruction.rotation[index], 8),
        "translation": _listed(reconstruction.translation[index]),
        "pose": {"yaw": yaw, "pitch": pitch, "roll": roll},
        "landmarks_5": _listed(reconstruction.landmarks_5[index], 3),
        "landmarks_68": _listed(reconstruction.landmarks_68[index], 3),
        "identity": _listed(reconstruction.identity[index]),
        "expression": _listed(reconstruction.expression[index]),
        "albedo": _listed(reconstruction.albedo_coefficients[index]),
        "lighting": _listed(reconstruction.inverse_lighting[index]),
    }


def framing_record(method: str, box: Sequence[float] | None) -> dict:
    """The ``framing`` of a frame's JSON line: how the frame was framed for the network.

    Args:
        method: ``whole_frame`` (no box), ``box`` (``--bbox``, for every frame until tracking moves it) or
            ``tracking`` (the square the earlier fits asked for, see the module docstring).
        box: the face box (x, y, width, height) in the frame's pixels that was framed (the network saw
            ``face_margin`` times its larger side, as for a photo), or None for the whole frame.
    """
    return {"method": method, "box": None if box is None else [round(float(value), 3) for value in box]}


def _fit_in_panel(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale a picture to fit (height, width) keeping its aspect, centred on black."""
    picture_height, picture_width = picture.shape[:2]
    scale = min(height / picture_height, width / picture_width)
    size = (max(1, round(picture_width * scale)), max(1, round(picture_height * scale)))
    resized = np.asarray(Image.fromarray(picture).resize(size, Image.NEAREST if scale >= 2 else Image.BILINEAR))
    panel = np.zeros((height, width, 3), np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    panel[top:top + size[1], left:left + size[0]] = resized
    return panel


@functools.lru_cache(maxsize=32)
def _label_patch(text: str) -> tuple[np.ndarray, int, int]:
    """White text on its black box, drawn once per title: (patch, left, top) of where it goes on a panel."""
    font = ImageFont.load_default()
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((3, 2), text, font=font)
    box = (left - 2, top - 1, right + 2, bottom + 1)  # PIL's rectangle includes both corners
    canvas = Image.new("RGB", (box[2] + 1, box[3] + 1), (0, 0, 0))
    ImageDraw.Draw(canvas).text((3, 2), text, fill=(255, 255, 255), font=font)
    patch = np.asarray(canvas)[box[1]:, box[0]:]
    patch.flags.writeable = False
    return patch, box[0], box[1]


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    """The panel with ``text`` on a black box at its top left (a copy; the panel is not changed)."""
    patch, left, top = _label_patch(text)
    labelled = np.array(panel)
    height, width = labelled.shape[:2]
    if top < height and left < width:
        labelled[top:top + patch.shape[0], left:left + patch.shape[1]] = patch[:height - top, :width - left]
    return labelled


def _compose(panels: Sequence[np.ndarray]) -> np.ndarray:
    """Six equal panels in two rows of three, padded to even width and height (yuv420p)."""
    top = np.concatenate([_label(panel, title) for panel, title in zip(panels[:3], PANEL_TITLES[:3])], 1)
    bottom = np.concatenate([_label(panel, title) for panel, title in zip(panels[3:], PANEL_TITLES[3:])], 1)
    frame = np.concatenate([top, bottom], 0)
    height, width = frame.shape[:2]
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)))


def _frame_panels(photo: np.ndarray, maps, row: int, reconstruction=None, index: int = 0,
                  meshes: dict | None = None) -> list[np.ndarray]:
    """The six panels of one frame from its ``photo`` at the panel's size (:func:`_panel_photo`).

    With a reconstruction, ``meshes`` are the frame's :func:`mesh_pictures` at the panel's size
    (:func:`_batch_panels` draws a batch's together); without one the mesh panels show the input, dimmed.
    """
    height, width = photo.shape[:2]
    if reconstruction is not None:
        top = [photo, meshes["reconstruction"], meshes["geometry"]]
        status = reconstruction.status[index] if reconstruction.status else "ok"
        if status != "ok":
            # The banner at the bottom: the panel's title is written over its top.
            top[1:] = [mark_status(panel, status, reconstruction.status_reason[index], bottom=True) for panel in top[1:]]
    else:
        dimmed = (photo.astype(np.float32) * 0.35).astype(np.uint8)
        top = [photo, _label(dimmed, "    fit failed"), _label(dimmed.copy(), "    fit failed")]
    confidence = maps.confidence[row]
    bottom = [
        _fit_in_panel(correspondence_picture(maps.correspondence[row], confidence[0]), height, width),
        _fit_in_panel(confidence_picture(confidence), height, width),
        _fit_in_panel(depth_picture(maps.depth[row, 0], confidence[0]), height, width),
    ]
    return top + bottom


def _panel_photo(frame: np.ndarray) -> np.ndarray:
    """The frame at its panel's size (:func:`_panel_size`)."""
    height, width = _panel_size(*frame.shape[:2])
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR)) if frame.shape[:2] != (height, width) else frame


def _in_panel(reconstruction, frame_size: tuple[int, int], panel_size: tuple[int, int]):
    """The reconstruction with its camera scaled from the frame's pixels to the panel's."""
    height, width = panel_size
    scale = torch.diag(torch.tensor([width / frame_size[1], height / frame_size[0], 1.0], dtype=torch.float64))
    return dataclasses.replace(reconstruction, intrinsics=scale @ reconstruction.intrinsics.to(torch.float64),
                               image_sizes=[panel_size] * len(reconstruction))


def _batch_panels(batch: Sequence[np.ndarray], maps, results: list) -> list[list[np.ndarray]]:
    """The six panels of every frame of a batch; the meshes of the frames fitted together drawn in one call.

    ``results`` holds per frame (reconstruction, index) or an error sentence (:func:`_solve`).
    """
    photos = [_panel_photo(frame) for frame in batch]
    meshes: dict[int, dict] = {}
    groups: dict[int, list[int]] = {}
    for row, result in enumerate(results):
        if not isinstance(result, str):
            groups.setdefault(id(result[0]), []).append(row)
    for rows in groups.values():
        reconstruction = _in_panel(results[rows[0]][0], batch[rows[0]].shape[:2], photos[rows[0]].shape[:2])
        drawn = batch_mesh_pictures(reconstruction, [results[row][1] for row in rows], [photos[row] for row in rows])
        meshes.update(zip(rows, drawn))
    return [_frame_panels(photo, maps, row) if isinstance(result, str)
            else _frame_panels(photo, maps, row, result[0], result[1], meshes[row])
            for row, (photo, result) in enumerate(zip(photos, results))]


def _panel_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, PANEL_SIDE / max(height, width))
    return max(2, round(height * scale)), max(2, round(width * scale))


def _solve(reconstructor, network_image, maps, to_network, sizes):
    """Fit a batch; if the batched solve fails, fit frame by frame so one bad frame spoils only itself.

    Returns a list with, per frame, (reconstruction, row) or the error sentence.
    """
    from lsqface.reconstruct import reconstruct_from_maps

    def fit(rows: slice):
        with torch.no_grad():
            return reconstruct_from_maps(
                reconstructor.uv_model, network_image[rows].to(reconstructor.device), maps.correspondence[rows],
                maps.depth[rows], maps.confidence[rows], to_network=to_network[rows], image_sizes=sizes[rows],
                config=reconstructor.config,
            )

    def check(reconstruction, row):
        if not (torch.isfinite(reconstruction.vertices[row]).all() and torch.isfinite(reconstruction.intrinsics[row]).all()):
            return "The fit is not finite (the network's maps do not describe a face)."
        return (reconstruction, row)

    try:
        whole = fit(slice(None))
        return [check(whole, row) for row in range(len(sizes))]
    except LsqfaceError:
        pass
    results = []
    for row in range(len(sizes)):
        try:
            results.append(check(fit(slice(row, row + 1)), 0))
        except LsqfaceError as error:
            results.append(str(error))
    return results


def reconstruct_video(reconstructor, input_path: str | Path, output_path: str | Path, *, smoothing: float = 0.0,
                      batch_size: int = 8, box: Sequence[float] | None = None, progress: bool = True) -> VideoSummary:
    """Reconstruct every frame of a video; write the six-panel MP4 and the JSON-lines parameters.

    Args:
        reconstructor: a :class:`lsqface.reconstruct.Reconstructor`.
        input_path: any video ffmpeg decodes.
        output_path: the MP4 to write; the parameters go to the same name with ``.jsonl``.
        smoothing: exponential-moving-average weight of the past in [0, 1); 0 (default) is off.
        batch_size: frames per network pass and solve.
        box: a face box (x, y, width, height) in frame pixels used for every frame, or None for
            the whole frame.
        progress: show a tqdm progress bar (on stderr).

    Raises:
        ImageError: the input cannot be read as a video or has no frames.
        ConfigError: ``smoothing`` outside [0, 1) or ``batch_size`` below 1.
    """
    from tqdm import tqdm

    if not (0.0 <= float(smoothing) < 1.0):
        raise ConfigError(f"The smoothing factor must be in [0, 1), got {smoothing}; 0 turns smoothing off.")
    if int(batch_size) < 1:
        raise ConfigError(f"The batch size must be at least 1, got {batch_size}.")
    started = time.perf_counter()
    output_path, parameters_path = check_video_outputs(Path(input_path), Path(output_path))
    metadata, frames = read_video(input_path)
    width, height = (int(value) for value in (metadata.get("size") or (0, 0)))
    if width * height > MAX_FRAME_PIXELS:
        raise ImageError(f"Video {input_path} has {width}x{height} frames, more than the limit of "
                         f"{MAX_FRAME_PIXELS:,} pixels; downscale it first (e.g. ffmpeg -vf scale=1920:-2).")
    if box is not None and width * height > 0:
        from lsqface.outputs.batch import check_box

        check_box(box, np.empty((height, width, 0), np.uint8), (1.0, 1.0), str(input_path))
    fps = float(metadata.get("fps") or 25.0)
    if not math.isfinite(fps) or fps <= 0:
        fps = 25.0
    total = metadata.get("nframes")
    if total is None or not math.isfinite(total):
        duration = metadata.get("duration")
        total = round(duration * fps) if duration and math.isfinite(duration) else None
    state = None
    current = None if box is None else tuple(float(value) for value in box)
    method = "whole_frame" if box is None else "box"
    track = reconstructor.config.refine_passes > 0
    # Written straight to OUTPUT.partial.mp4 and .partial.jsonl, renamed when done: the video is a
    # fragmented MP4 (a fragment a second) and each parameter line is flushed, so an interrupt, a
    # crash or a kill keeps a playable video and the parameters of every finished frame.
    video_partial = output_path.with_name(f"{output_path.stem}.partial{output_path.suffix or '.mp4'}")
    parameters_partial = parameters_path.with_name(f"{parameters_path.stem}.partial.jsonl")
    interrupted = False
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        parameters = open(parameters_partial, "w", encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"Cannot write {parameters_partial} ({error.strerror or error}); pass an -o in a folder "
                          "you can write to.") from None
    # With a second core, a batch's pictures are drawn and written by a second thread while the next
    # batch is reconstructed; one batch at most is in hand, so the frames stay in order.
    drawer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lsqface-video") if _cores() > 1 else None
    pending = None
    output = None
    try:
        with parameters, tqdm(total=total, unit="frame", desc="lsqface video", disable=not progress) as bar:
            output = _VideoOutput(video_partial, parameters, fps, bar)
            try:
                for batch in _batches(frames, int(batch_size)):
                    maps, results = _run_batch(reconstructor, batch, current)
                    if track:
                        current, maps, results, moved = _track(reconstructor, batch, current, maps, results)
                        if moved:
                            state = None  # the average is kept in the network's frame, which has just changed
                            method = "tracking"
                    framing = framing_record(method, current)
                    if smoothing > 0:
                        results, state = _smooth_results(reconstructor, results, smoothing, state)
                    if pending is not None:
                        pending.result()  # the previous batch is written (its error, if any, raised here)
                        pending = None
                    if drawer is None:
                        output.write(batch, maps, results, framing)
                    else:
                        pending = drawer.submit(output.write, batch, maps, results, framing)
                if pending is not None:
                    pending.result()
                    pending = None
            except KeyboardInterrupt:
                interrupted = True
            finally:
                # Nested, so that a second interrupt while waiting still closes the video.
                try:
                    if pending is not None:
                        futures_wait([pending])  # the batch being written is finished and kept
                finally:
                    try:
                        if drawer is not None:
                            drawer.shutdown()
                    finally:
                        output.close()
    finally:
        # Whatever stopped the run, the finished frames are kept under the names asked for.
        count = 0 if output is None else output.count
        if count > 0:
            os.replace(video_partial, output_path)
            os.replace(parameters_partial, parameters_path)
        else:
            for path in (video_partial, parameters_partial):
                if path.exists():
                    path.unlink()
    if count == 0:
        if interrupted:
            raise KeyboardInterrupt
        raise ImageError(f"Video {input_path} has no frames; pass a video with at least one frame.")
    return VideoSummary(output_path, parameters_path, count, output.failed, fps, output.size[0], output.size[1],
                        time.perf_counter() - started, interrupted)


def _cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def open_video_writer(path: str | Path, size: tuple[int, int], fps: float):
    """imageio-ffmpeg's frame writer for an H.264 MP4 of (width, height) frames, started.

    :data:`X264_SETTINGS`, a keyframe a second, and a fragmented MP4 (a fragment a second): what has
    been written plays even if the writer is never closed.
    """
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(
        str(path), size, fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-f", "mp4", "-g", str(max(1, round(fps))), *X264_SETTINGS,
                       "-movflags", "frag_keyframe+empty_moov+default_base_moof"],
    )
    writer.send(None)
    return writer


class _VideoOutput:
    """The MP4 and the JSON lines of :func:`reconstruct_video`, written one batch at a time, in order."""

    def __init__(self, video_path: Path, parameters, fps: float, bar):
        self.video_path, self.parameters, self.fps, self.bar = video_path, parameters, fps, bar
        self.writer = None
        self.size = (0, 0)
        self.count = 0
        self.failed = 0

    def write(self, batch: list[np.ndarray], maps, results: list, framing: dict) -> None:
        """Draw and write a batch's frames: per frame (reconstruction, index) or an error sentence."""
        batch_panels = _batch_panels(batch, maps, results)
        for row, result in enumerate(results):
            seconds = self.count / self.fps
            if isinstance(result, str):
                record = {"frame": self.count, "time": round(seconds, 6), "error": result, "framing": framing}
                self.failed += 1
            else:
                reconstruction, index = result
                record = {**frame_record(reconstruction, index, self.count, seconds), "framing": framing}
            picture = _compose(batch_panels[row])
            if self.writer is None:
                self.size = (picture.shape[1], picture.shape[0])
                self.writer = open_video_writer(self.video_path, self.size, self.fps)
            if (picture.shape[1], picture.shape[0]) != self.size:
                picture = np.asarray(Image.fromarray(picture).resize(self.size, Image.BILINEAR))
            self.writer.send(np.ascontiguousarray(picture))
            self.parameters.write(json.dumps(record) + "\n")
            self.parameters.flush()
            self.count += 1
            self.bar.update(1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _run_batch(reconstructor, batch: list[np.ndarray], box: tuple | None):
    """The maps (on the CPU) and per-frame results of one batch framed by ``box`` (None: whole frames)."""
    network_image, to_network, sizes = reconstructor.prepare(batch, None if box is None else [box] * len(batch))
    maps = reconstructor.predict_maps(network_image)
    maps = dataclasses.replace(maps, **{name: getattr(maps, name).cpu() for name in ("correspondence", "depth", "confidence")})
    return maps, _solve(reconstructor, network_image, maps, to_network, sizes)


def _asked_box(reconstructor, results: list):
    """The frame the batch's last successful fit asks for (lsqface.reconstruct.refine_boxes), or None."""
    from lsqface.reconstruct import refine_boxes

    for result in reversed(results):
        if not isinstance(result, str):
            reconstruction, row = result
            config = reconstructor.config
            return refine_boxes(reconstruction, reconstructor.uv_model.model, config.refine_fraction,
                                config.face_margin)[row]
    return None


def _track(reconstructor, batch: list[np.ndarray], current: tuple | None, maps, results):
    """Follow the face: the photo path's re-framing, carried from batch to batch.

    The batch was fitted in ``current``. If its last good fit asks for a frame that does not agree
    with ``current`` (lsqface.reconstruct.frames_agree), the batch is fitted again in that frame, and
    the new frame is kept if the refit asks for it too; otherwise the batch keeps ``current``. The
    frame stays put while the face moves within the tolerance, so smoothing sees one frame.

    Returns:
        (the frame for the next batch, maps, results, whether the frame changed).
    """
    from lsqface.reconstruct import frames_agree

    asked = _asked_box(reconstructor, results)
    if asked is None or (current is not None and frames_agree(asked, current)):
        return current, maps, results, False
    new_maps, new_results = _run_batch(reconstructor, batch, asked)
    if not frames_agree(_asked_box(reconstructor, new_results), asked):
        return current, maps, results, False
    return asked, new_maps, new_results, True


def _smooth_results(reconstructor, results: list, smoothing: float, state: dict | None) -> tuple[list, dict | None]:
    """Replace each successful frame's parameters by their running average (see the module docstring).

    Returns the new results and the average after the last successful frame.
    """
    smoothed: list = []
    groups: dict[int, tuple] = {}
    for position, result in enumerate(results):
        if not isinstance(result, str):
            reconstruction, row = result
            groups.setdefault(id(reconstruction), (reconstruction, []))[1].append((position, row))
    replaced: dict[int, object] = {}
    # Frames are averaged in time order; rows of one reconstruction are consecutive frames.
    for key, (reconstruction, members) in sorted(groups.items(), key=lambda item: item[1][1][0][0]):
        fit, state = smooth_fit(reconstruction.fit, state, smoothing, [row for _, row in members])
        replaced[key] = with_fit(reconstruction, reconstructor.uv_model, fit, reconstructor.config.solver.softplus_eps,
                                 reconstructor.config.status)
    for result in results:
        if isinstance(result, str):
            smoothed.append(result)
        else:
            reconstruction, row = result
            smoothed.append((replaced[id(reconstruction)], row))
    return smoothed, state
