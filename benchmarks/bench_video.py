"""Frames per second of ``lsqface video`` with each preset, beside the cost of reading and writing the video alone.

    python benchmarks/bench_video.py [--frames 100] [--size 256] [--repeats 2] [--batch 16] [--checkpoint FILE]

A clip is made from one photo (``../shared/data/real-faces/grace_hopper.jpg``, else matplotlib's
copy of it): a ``--size`` square around the face, drifting and turning slowly over ``--frames``
frames at 25 frames per second, written as H.264 like any camera clip. Then, best of ``--repeats``
runs each (after one warm-up):

- the floor: the clip decoded and its frames, as six copies in the six-panel layout, encoded with
  the settings ``lsqface video`` uses: no reconstruction can be faster than this;
- ``reconstruct_video`` with each preset (``fast``, ``accurate``), its pictures drawn by a second
  thread while the next batch is reconstructed (what it does on a machine with two or more cores),
  and drawn in turn (what it does on one core).

Each line gives frames per second on the wall clock, CPU milliseconds per frame of this process (both
threads; the encoder is another process) and the time as a multiple of the floor's. The machine and
its load average are printed first: on a machine whose other core is busy, drawing beside the
reconstruction gains little.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lsqface.outputs.video as video  # noqa: E402
from lsqface.reconstruct import Reconstructor  # noqa: E402

PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-faces" / "grace_hopper.jpg"


def make_clip(path: Path, frames: int, size: int) -> None:
    """A ``size`` square drifting and turning slowly around the photo's face, H.264 at 25 frames per second."""
    import imageio_ffmpeg

    if PHOTO.is_file():
        photo = Image.open(PHOTO).convert("RGB")
    else:
        import matplotlib.cbook

        photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    width, height = photo.size
    centre = np.array([0.5 * width, 0.42 * height])  # the face in both copies of the photo
    side = 0.75 * min(width, height)
    writer = imageio_ffmpeg.write_frames(str(path), (size, size), fps=25, codec="libx264", pix_fmt_out="yuv420p",
                                         macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    for index in range(frames):
        phase = 2 * math.pi * index / max(frames, 1)
        shift = 0.06 * side * np.array([math.sin(phase), math.sin(2 * phase)])
        angle = 15.0 * math.sin(phase)
        left, top = centre + shift - side / 2
        crop = photo.rotate(angle, center=tuple(centre + shift), resample=Image.BILINEAR)
        crop = crop.crop((int(left), int(top), int(left + side), int(top + side))).resize((size, size), Image.BILINEAR)
        writer.send(np.ascontiguousarray(np.asarray(crop)))
    writer.close()


def floor_run(clip: Path, out: Path) -> int:
    """Decode the clip and encode its frames six times over in the panel layout; the frames done."""
    _, frames = video.read_video(clip)
    writer, count = None, 0
    for frame in frames:
        picture = video._compose([frame] * 6)
        if writer is None:
            writer = video.open_video_writer(out, (picture.shape[1], picture.shape[0]), 25.0)
        writer.send(np.ascontiguousarray(picture))
        count += 1
    writer.close()
    return count


def best(run, repeats: int) -> tuple[float, float, int]:
    """(best wall seconds, CPU seconds of that run, frames) over ``repeats`` runs after a warm-up."""
    run()
    results = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        frames = run()
        results.append((time.perf_counter() - wall, time.process_time() - cpu, frames))
    return min(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load[0]:.2f}, torch {torch.__version__} on 1 thread; {args.frames} frames of "
          f"{args.size} x {args.size}, batch {args.batch}")
    work = Path(tempfile.mkdtemp(prefix="lsqface-bench-video-"))
    clip = work / "clip.mp4"
    make_clip(clip, args.frames, args.size)
    counter = iter(range(10**6))

    def fresh(name: str) -> Path:
        return work / f"{name}-{next(counter)}.mp4"

    wall, cpu, frames = best(lambda: floor_run(clip, fresh("floor")), args.repeats)
    floor = wall / frames
    print(f"{'floor: decode and encode alone':48s} {frames / wall:6.1f} frames/s  {1000 * cpu / frames:6.1f} ms CPU/frame  1.0x")
    cores = video._cores
    try:
        for preset in ("fast", "accurate"):
            reconstructor = Reconstructor.from_checkpoint(args.checkpoint, preset=preset)
            for drawing, available in (("beside", cores), ("in turn", lambda: 1)):
                video._cores = available

                def run() -> int:
                    summary = video.reconstruct_video(reconstructor, clip, fresh(preset), batch_size=args.batch,
                                                      progress=False)
                    return summary.frames

                wall, cpu, frames = best(run, args.repeats)
                label = f"{preset}, pictures drawn {drawing}"
                print(f"{label:48s} {frames / wall:6.1f} frames/s  {1000 * cpu / frames:6.1f} ms CPU/frame  "
                      f"{wall / frames / floor:.1f}x", flush=True)
    finally:
        video._cores = cores
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f}")


if __name__ == "__main__":
    main()
