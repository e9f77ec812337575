"""Benchmark of loading ICT-FaceKit: the whole ``load_ict`` against just decompressing its archive.

Run:  python benchmarks/bench_sources.py [--archive PATH] [--repeats N]

Prints wall-clock and CPU (process) time, the minimum over repeats (the least
disturbed by other processes), of

- the reference: streaming every member of the .tar.xz through tarfile (xz
  decompression alone, nothing parsed);
- ``load_ict`` on the same archive (decompression + OBJ parsing + triangles + albedo eigenfunctions);
- ``laplacian_albedo`` alone on the loaded face region;
- ``source_fingerprint`` of the archive;

each with its ratio to the reference.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tarfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lsqface.morphable.albedo import laplacian_albedo  # noqa: E402
from lsqface.morphable.ict import load_ict  # noqa: E402
from lsqface.morphable.sources import source_fingerprint  # noqa: E402

DEFAULT_ARCHIVE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ICT-FaceKit-FaceXModel.tar.xz"


def decompress_only(path: pathlib.Path) -> int:
    total = 0
    with tarfile.open(path, mode="r|*") as archive:
        for member in archive:
            if member.isfile():
                total += len(archive.extractfile(member).read())
    return total


def timed(function, repeats: int) -> tuple[float, float, object]:
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=pathlib.Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not args.archive.is_file():
        sys.exit(f"ICT-FaceKit archive not found: {args.archive}")

    ref_wall, ref_cpu, size = timed(lambda: decompress_only(args.archive), args.repeats)
    print(f"reference: decompress {size / 1e6:.0f} MB   wall {ref_wall:6.2f} s   cpu {ref_cpu:6.2f} s")
    wall, cpu, model = timed(lambda: load_ict(args.archive), args.repeats)
    print(f"load_ict (full region)      wall {wall:6.2f} s   cpu {cpu:6.2f} s   ratio {wall / ref_wall:5.2f} (wall) {cpu / ref_cpu:5.2f} (cpu)")
    wall, cpu, _ = timed(lambda: laplacian_albedo(model.shape_mean, model.triangles), args.repeats)
    print(f"laplacian_albedo alone      wall {wall:6.2f} s   cpu {cpu:6.2f} s   ratio {wall / ref_wall:5.2f} (wall) {cpu / ref_cpu:5.2f} (cpu)")
    wall, cpu, _ = timed(lambda: source_fingerprint(args.archive), args.repeats)
    print(f"source_fingerprint          wall {wall:6.2f} s   cpu {cpu:6.2f} s   ratio {wall / ref_wall:5.2f} (wall) {cpu / ref_cpu:5.2f} (cpu)")


if __name__ == "__main__":
    main()
