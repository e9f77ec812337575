"""Peak memory of `lsqface reconstruct` on large photos, with every output (not a test: a measurement).

For each size (12 and 50 megapixels by default: 4000x3000, and 8660x5773, just under the
50,000,000-pixel limit, so that the PNG is decoded in full) a JPEG and a PNG are written:
matplotlib's grace_hopper.jpg portrait pasted on a textured background, the face about a fifth of
the frame, as a phone takes it. Each is reconstructed by ``lsqface reconstruct PHOTO
-o OUT --quiet`` (obj, ply, json, npz, pictures; automatic framing) in its own process, and the
peak resident memory of that process (``ru_maxrss`` of the child) and its time are printed,
with the JSON's ``image_size`` (the photo's own pixels, also where a JPEG is decoded smaller).
The goal: at most 3 GB at 50 megapixels.

Run:  python benchmarks/bench_memory.py [--sizes 4000x3000,8660x5773] [--formats jpg,png] [--timeout 1200]
      [-- extra reconstruct options]
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


def _photo(width: int, height: int) -> Image.Image:
    import matplotlib.cbook

    face = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    rng = np.random.default_rng(0)
    # A coarse noise texture scaled up: a background that compresses like a photo, not like a flat fill.
    texture = (rng.random((height // 64 + 1, width // 64 + 1, 3)) * 120 + 60).astype(np.uint8)
    photo = Image.fromarray(texture).resize((width, height), Image.BILINEAR)
    side = max(64, int(0.45 * min(width, height)))
    photo.paste(face.resize((side * 512 // 600, side)), (width // 2, height // 3))
    return photo


def _measure(photo: Path, extra: list[str], timeout: float) -> tuple[float, float, dict | None, str]:
    """Seconds, peak resident GB of the reconstruct process, its JSON's image_size, and stderr's last line."""
    out = photo.parent / f"out-{photo.stem}-{photo.suffix[1:]}"
    # The child reports its own peak (ru_maxrss, KiB on Linux) as it exits.
    program = ("import resource, sys; from lsqface.cli import main; code = main(sys.argv[1:]); "
               "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)")
    command = [sys.executable, "-c", program, "reconstruct", str(photo), "-o", str(out), "--quiet", *extra]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    lines = finished.stderr.strip().splitlines()
    peaks = [int(line.split()[1]) for line in lines if line.startswith("PEAK ")]
    peak_gb = peaks[0] * 1024 / 1e9 if peaks else float("nan")
    records = [json.loads(path.read_text()) for path in out.glob("*.json")]
    last = next((line for line in reversed(lines) if not line.startswith("PEAK ")), "")
    return seconds, peak_gb, records[0]["image_size"] if records else None, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4000x3000,8660x5773")
    parser.add_argument("--formats", default="jpg,png")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("extra", nargs="*", help="more reconstruct options, after --")
    args = parser.parse_args()
    sizes = [tuple(int(part) for part in size.split("x")) for size in args.sizes.split(",")]
    print(f"{'photo':>22}  {'megapixels':>10}  {'seconds':>8}  {'peak GB':>8}  image_size")
    with tempfile.TemporaryDirectory() as folder:
        for width, height in sorted(sizes, key=lambda size: size[0] * size[1]):
            picture = _photo(width, height)
            for extension in args.formats.split(","):
                path = Path(folder) / f"photo-{width}x{height}.{extension}"
                picture.save(path, quality=92) if extension == "jpg" else picture.save(path, compress_level=1)
                seconds, peak, size, last = _measure(path, args.extra, args.timeout)
                print(f"{path.name:>22}  {width * height / 1e6:10.1f}  {seconds:8.1f}  {peak:8.2f}  {size}  {last}")
                path.unlink()


if __name__ == "__main__":
    main()
