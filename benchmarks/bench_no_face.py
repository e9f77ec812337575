"""What a photo with no face costs against a face photo of the same size, through the CLI with every output.

For each size (1280x960 and 4000x3000 by default) two photos are written: a flat grey one and a
face photo (a synthetic validation face the shipped model fits with status ok, cropped to the
aspect and resized; or ``--face PATH``, the same way). Each is reconstructed by ``lsqface reconstruct PHOTO -o OUT --quiet`` (all
outputs: obj, ply, json, npz, pictures) in its own process, timed from start to exit, with its
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` read in that process). The
status each fit got is printed beside it, and the ratio no-face / face per size. Not a test: the
times depend on the machine; the goal is a ratio of at most 2.

Run:  python benchmarks/bench_no_face.py [--sizes 1280x960,4000x3000] [--repeats 1] [--timeout 600] [--face PATH]
      [-- extra reconstruct options, e.g. --picture-size 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _face_photo(width: int, height: int, path: str | None = None) -> Image.Image:
    """The face photo: ``path`` cropped to the aspect and resized, or a synthetic validation face.

    The synthetic face (upright, its width half the picture's, on the generator's background) is
    rendered square, cropped to the photo's aspect about its centre and resized: a face the shipped
    network fits with status ok, so the face photo pays for every rendering.
    """
    if path is not None:
        photo = Image.open(path).convert("RGB")
        crop_height = min(photo.height, round(photo.width * height / width))
        crop_width = round(crop_height * width / height)
        left, top = (photo.width - crop_width) // 2, (photo.height - crop_height) // 2
        return photo.crop((left, top, left + crop_width, top + crop_height)).resize((width, height), Image.BICUBIC)
    from lsqface.data.synthetic import SyntheticConfig, generate_faces
    from lsqface.evaluate.benchmark import VALIDATION_OFFSET, evaluation_seeds
    from lsqface.morphable.cache import load_uv_model

    config = SyntheticConfig(size=512, roll_range=0.0, face_fraction=(0.45, 0.5), shift=0.0)
    face = generate_faces(load_uv_model(), evaluation_seeds(1, VALIDATION_OFFSET), config)
    square = Image.fromarray((face.image[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    crop_height = round(512 * min(1.0, height / width))
    crop_width = round(crop_height * width / height)
    left, top = (512 - crop_width) // 2, (512 - crop_height) // 2
    return square.crop((left, top, left + crop_width, top + crop_height)).resize((width, height), Image.BICUBIC)


def _child(arguments: list[str]) -> None:
    """Run the CLI here and print the peak memory as the last line (JSON)."""
    import resource

    from lsqface.cli import main

    code = main(arguments)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"code": code, "peak_mb": peak / 1024.0}))


def _run(photo: Path, output: Path, extra: list[str], timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", "reconstruct", str(photo), "-o", str(output), "--quiet", *extra]
    start = time.perf_counter()
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": float("inf"), "peak_mb": float("nan"), "status": f"timed out after {timeout:g} s"}
    seconds = time.perf_counter() - start
    lines = finished.stdout.strip().splitlines()
    if finished.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(command)} failed:\n{finished.stderr}")
    result = json.loads(lines[-1])
    parameters = json.loads((output / f"{photo.stem}.json").read_text())
    return {"seconds": seconds, "peak_mb": result["peak_mb"], "status": parameters.get("status", "(none)")}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1280x960,4000x3000", help="WIDTHxHEIGHT,... (default 1280x960,4000x3000)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per photo; the best is kept (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is given up (default 600)")
    parser.add_argument("--face", default=None, help="a face photo to use instead of the synthetic face")
    parser.add_argument("extra", nargs="*", help="more lsqface reconstruct options (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        print(f"{'photo':>22s} {'seconds':>8s} {'peak MB':>8s}  status")
        for size in args.sizes.split(","):
            width, height = (int(part) for part in size.lower().split("x"))
            photos = {"face": folder / f"face_{size}.png", "no face": folder / f"grey_{size}.png"}
            _face_photo(width, height, args.face).save(photos["face"])
            Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(photos["no face"])
            results = {}
            for name, photo in photos.items():
                runs = [_run(photo, folder / f"out_{name.replace(' ', '_')}_{size}_{k}", args.extra, args.timeout)
                        for k in range(args.repeats)]
                results[name] = min(runs, key=lambda run: run["seconds"])
                run = results[name]
                print(f"{name + ' ' + size:>22s} {run['seconds']:8.1f} {run['peak_mb']:8.0f}  {run['status']}", flush=True)
            ratio_time = results["no face"]["seconds"] / results["face"]["seconds"]
            ratio_memory = results["no face"]["peak_mb"] / results["face"]["peak_mb"]
            print(f"{'no face / face ' + size:>22s} {ratio_time:8.2f} {ratio_memory:8.2f}", flush=True)


if __name__ == "__main__":
    main()
