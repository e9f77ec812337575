"""Inference speed of the shipped model per face, stage by stage, beside MediaPipe's face mesh in the same run.

    python benchmarks/bench_inference.py [--threads 2] [--repeats 5] [--batch 16] [--checkpoint FILE]
                                         [--photos DIR] [--out DIR]

On the same photos (the six portraits of ../shared/data/real-faces, else matplotlib's Grace
Hopper photo; repeated to fill a batch, already decoded), for each inference preset
(lsqface.reconstruct.preset_config: ``reference`` is the stored settings as stored, float64
solves, the path before the speed-ups; ``accurate`` the default; ``fast`` a single pass):

- the whole ``Reconstructor`` call, per face, at batch 1 and at ``--batch``, and faces per second;
- its stages, each timed on its own with the preset's settings: framing (crop, resize, softplus),
  the network's forward pass (one copy), the rest of the rotation ensemble (the turned copies and
  their average), the geometric solve with its robust passes (``fit_geometry`` without reprojection
  steps: sampling, UV sampling, the solves, the camera), the reprojection steps (``fit_geometry`` with
  them, minus without), the lighting and albedo solve (``fit`` minus ``fit_geometry``),
  the mesh, landmarks and status (``reconstruct_from_maps`` minus ``fit``), and the re-framing pass
  (the whole call minus one pass);
- writing each output format of one face (json, obj, the obj's photo texture, ply, npz, pictures), fitted
  in the face box lsqface's detector finds (status ``ok``: the texture then maps the photo, as for a
  face the command line frames), else in the whole photo;
- MediaPipe: BlazeFace and the 468-point face mesh (lsqface.evaluate.peers.mediapipe_peer) on each
  photo, one at a time (it has no batch), skipped with a line saying what to install where it is missing.

Every time is the best of ``--repeats`` runs on the wall clock and, separately, in this process's CPU
time (the least disturbed: this is a 2-core machine whose other core is usually busy); batch 1 is each
photo on its own, averaged. Each is printed also as a multiple of MediaPipe's CPU time per photo,
measured at the start and at the end of the same run (the best of both), so figures from different
runs compare through their ratios. The load average before and after the run is printed with the
machine. ``--out DIR`` also writes the table as ``inference.md`` and the figures as ``inference.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lsqface.data.images import list_image_files, read_image  # noqa: E402
from lsqface.outputs.save import save_reconstruction  # noqa: E402
from lsqface.reconstruct import PRESETS, Reconstructor, default_checkpoint, network_input, reconstruct_from_maps  # noqa: E402
from lsqface.solver.fit import fit, fit_geometry  # noqa: E402
from lsqface.solver.sampling import quarter_turn_keys  # noqa: E402

OUTPUT_KINDS = ("json", "obj", "texture", "ply", "npz", "pictures")
STAGES = ("framing", "network", "ensemble", "geometric solve", "reprojection steps", "lighting and albedo solve", "mesh, landmarks, status",
          "re-framing", "whole call")


class Time(dict):
    """Seconds on two clocks: ``wall`` (perf_counter) and ``cpu`` (this process's CPU time, all threads)."""

    def __add__(self, other: "Time") -> "Time":
        return Time({clock: self[clock] + other[clock] for clock in self})

    def __sub__(self, other: "Time") -> "Time":
        return Time({clock: max(0.0, self[clock] - other[clock]) for clock in self})

    def __truediv__(self, count: float) -> "Time":
        return Time({clock: value / count for clock, value in self.items()})


def best_of(function, repeats: int) -> Time:
    """Smallest wall time and smallest CPU time of ``repeats`` calls after one warm-up call, seconds."""
    function()
    walls, cpus = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return Time(wall=min(walls), cpu=min(cpus))


def machine() -> str:
    """CPU model, cores, torch's threads, and the 1-minute load average now."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def photos(folder: str | None) -> list:
    """The benchmark's photos as (H, W, 3) float arrays."""
    if folder is None:
        shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-faces"
        folder = str(shared) if shared.is_dir() else None
    if folder is None:
        from lsqface.outputs.batch import demo_photo

        return [read_image(demo_photo())]
    return [read_image(path) for path in list_image_files(Path(folder))]


def batch_of(images: list, size: int) -> list:
    return [images[k % len(images)] for k in range(size)]


def stage_times(reconstructor: Reconstructor, images: list, repeats: int) -> dict[str, Time]:
    """Seconds per call of each stage of one ``reconstructor`` call on ``images`` (module notes)."""
    config = reconstructor.config
    boxes = [None] * len(images)
    framed, to_network, sizes = reconstructor.prepare(images, boxes)
    inputs = network_input(framed, config.solver.softplus_eps)
    network = reconstructor.inference_network()
    maps = reconstructor.predict_maps(framed)

    # The pixel samples reconstruct_from_maps reads: the fixed keys of the inference draw.
    keys = quarter_turn_keys(*framed.shape[-2:], config.sampling_seed)
    closed_form = dataclasses.replace(config.solver, reprojection_iterations=0)
    arguments = (reconstructor.uv_model, framed, maps.correspondence, maps.depth, maps.confidence)
    with torch.no_grad():
        closed_form_solve = best_of(lambda: fit_geometry(*arguments, closed_form, sampling_keys=keys), repeats)
        times = {
            "framing": best_of(lambda: reconstructor.prepare(images, boxes), repeats),
            "network": best_of(lambda: network(inputs), repeats),
            "ensemble": best_of(lambda: reconstructor.predict_maps(framed), repeats),
            "geometric solve": closed_form_solve,
            # Without steps the solve is the closed-form one, timed once (its row is left out below).
            "reprojection steps": (closed_form_solve if config.solver.reprojection_iterations == 0 else
                                   best_of(lambda: fit_geometry(*arguments, config.solver, sampling_keys=keys), repeats)),
            "lighting and albedo solve": best_of(lambda: fit(*arguments, config.solver, sampling_keys=keys), repeats),
            "mesh, landmarks, status": best_of(lambda: reconstruct_from_maps(
                *arguments, to_network=to_network, image_sizes=sizes, config=config), repeats),
            "one pass": best_of(lambda: reconstructor._reconstruct(images, boxes), repeats),
            "whole call": best_of(lambda: reconstructor(images), repeats),
        }
    # Each stage's own share: the timed calls contain the stages before them.
    times["ensemble"] = times["ensemble"] - times["network"]
    times["mesh, landmarks, status"] = times["mesh, landmarks, status"] - times["lighting and albedo solve"]
    times["lighting and albedo solve"] = times["lighting and albedo solve"] - times["reprojection steps"]
    times["reprojection steps"] = times["reprojection steps"] - times["geometric solve"]
    times["re-framing"] = times["whole call"] - times["one pass"]
    del times["one pass"]
    # Stages the preset does not run are left out (their difference is only the clocks' noise).
    if config.rotation_ensemble == 1:
        del times["ensemble"]
    if config.refine_passes == 0:
        del times["re-framing"]
    if config.solver.reprojection_iterations == 0:
        del times["reprojection steps"]
    return times


def output_times(reconstructor: Reconstructor, image, repeats: int) -> tuple[dict[str, Time], str]:
    """Seconds to write each output format of one face, and how that face was framed and fitted."""
    try:
        from lsqface.detect import detect_faces

        boxes = detect_faces(image)[:1]
    except Exception:  # the detector is an optional extra
        boxes = []
    with torch.no_grad():
        result = reconstructor([image], boxes or None)
    framing = ("the detector's face box" if boxes else "the whole photo") + f", status {result.status[0]}"
    times = {}
    with tempfile.TemporaryDirectory() as folder:
        for kinds in [(kind,) for kind in OUTPUT_KINDS] + [("json", "obj"), ("json", "obj", "texture")]:
            times[",".join(kinds)] = best_of(lambda: save_reconstruction(result, 0, image, folder, "face", kinds),
                                             max(1, repeats // 2) if kinds == ("pictures",) else repeats)
    return times, framing


def mediapipe_time(images: list, repeats: int) -> tuple[Time | None, str]:
    """MediaPipe's seconds per photo (detector + face mesh), or None and why it was skipped."""
    from lsqface.evaluate.peers import PeerMissing, mediapipe_peer

    try:
        locate = mediapipe_peer()
    except PeerMissing as error:
        return None, str(error)
    found = sum(locate(image) is not None for image in images)
    seconds = best_of(lambda: [locate(image) for image in images], repeats) / len(images)
    return seconds, f"found a face in {found} of {len(images)} photos"


def best_clocks(first: Time | None, second: Time | None) -> Time | None:
    """The smaller figure of each clock of two measurements of the same thing."""
    if first is None or second is None:
        return first or second
    return Time({clock: min(first[clock], second[clock]) for clock in first})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as lsqface's commands: docs/performance.md)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure; the best is kept (default 5)")
    parser.add_argument("--batch", type=int, default=16, help="the larger batch (default 16)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped lsqface/weights/default.pt)")
    parser.add_argument("--photos", default=None, help="folder of photos (default: ../shared/data/real-faces)")
    parser.add_argument("--presets", default="reference,accurate,fast",
                        help=f"presets to time, of {', '.join(PRESETS)} (default reference,accurate,fast)")
    parser.add_argument("--out", default=None, help="also write inference.md and inference.json to this folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = load_average()
    started = time.perf_counter()
    images = photos(args.photos)
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    from lsqface.morphable.cache import load_uv_model

    uv_model = load_uv_model()
    mediapipe, mediapipe_note = mediapipe_time(images, args.repeats)

    figures: dict = {"presets": {}, "outputs": {}}
    for preset in args.presets.split(","):
        reconstructor = Reconstructor.from_checkpoint(checkpoint, uv_model=uv_model, preset=preset)
        rows = {}
        # Batch 1: every photo on its own, averaged (their re-framing differs: a fit without a usable frame stops).
        singles = [stage_times(reconstructor, [image], args.repeats) for image in images]
        rows[1] = {name: sum((single[name] for single in singles), Time(wall=0.0, cpu=0.0)) / len(singles)
                   for name in singles[0]}
        stages = stage_times(reconstructor, batch_of(images, args.batch), args.repeats)
        rows[args.batch] = {name: seconds / args.batch for name, seconds in stages.items()}
        config = reconstructor.config
        figures["presets"][preset] = {
            "settings": f"{config.rotation_ensemble} turned copies, {config.solver.robust_iterations} robust passes, "
                        f"{config.solver.reprojection_iterations} reprojection steps, "
                        f"{config.refine_passes} re-framing, {config.solver.precision} solves",
            "per_face": rows,
        }
    figures["outputs"], output_framing = output_times(Reconstructor.from_checkpoint(checkpoint, uv_model=uv_model),
                                                      images[0], args.repeats)
    # MediaPipe again at the end: the load may have changed during the run; each clock keeps its best.
    mediapipe = best_clocks(mediapipe, mediapipe_time(images, args.repeats)[0])
    figures["mediapipe"] = mediapipe

    date = datetime.date.today().isoformat()
    header = [f"lsqface inference, {date}: {machine()}",
              f"load average (1, 5, 15 min) before {load_before}, after {load_average()}; "
              f"best of {args.repeats} runs; {len(images)} photos, batches repeat them",
              f"checkpoint {checkpoint.name}; MediaPipe (BlazeFace + 468-point face mesh, ai-edge-litert): "
              + (f"{1000 * mediapipe['wall']:.1f} ms wall, {1000 * mediapipe['cpu']:.1f} ms CPU per photo, "
                 f"{mediapipe_note}" if mediapipe is not None else f"skipped: {mediapipe_note}"),
              "each cell: wall-clock ms / CPU ms (all threads) per face, and (in brackets) the CPU time as a multiple "
              "of MediaPipe's per photo: on a shared machine CPU time is the steadier clock"]

    def cell(seconds: Time) -> str:
        ratio = f" ({seconds['cpu'] / mediapipe['cpu']:.1f}x)" if mediapipe else ""
        return f"{1000 * seconds['wall']:.1f} / {1000 * seconds['cpu']:.1f}{ratio}"

    lines = ["", "| preset: settings | stage | batch 1: ms per face wall / CPU (x MediaPipe) | "
             f"batch {args.batch}: ms per face wall / CPU (x MediaPipe) |", "|---|---|---|---|"]
    for preset, entry in figures["presets"].items():
        one, many = entry["per_face"][1], entry["per_face"][args.batch]
        for index, name in enumerate(STAGES):
            if name not in one:
                continue
            label = f"**{preset}**: {entry['settings']}" if name == "framing" else ""
            stage = f"**{name}**" if name == "whole call" else name
            lines.append(f"| {label} | {stage} | {cell(one[name])} | {cell(many[name])} |")
        lines.append(f"| | faces per second (wall clock) | {1 / one['whole call']['wall']:.1f} | "
                     f"{1 / many['whole call']['wall']:.1f} |")
    lines += ["", f"| output of one face ({output_framing}) | ms wall / CPU (x MediaPipe) |", "|---|---|"]
    lines += [f"| `--save {kinds}` | {cell(seconds)} |" for kinds, seconds in figures["outputs"].items()]
    if mediapipe:
        lines += ["", f"MediaPipe: {1000 * mediapipe['wall']:.1f} ms wall, {1000 * mediapipe['cpu']:.1f} ms CPU per "
                      f"photo, {1 / mediapipe['wall']:.1f} photos per second"]
    lines.append(f"\n(benchmark ran {time.perf_counter() - started:.0f} s)")
    text = "\n".join(header + lines)
    print(text)
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "inference.md").write_text(text + "\n")
        (folder / "inference.json").write_text(json.dumps(
            {"date": date, "machine": machine(), "load_before": load_before, "load_after": load_average(),
             **{key: value for key, value in figures.items()}}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
