"""Benchmark: building, caching and sampling the UV-3DMM (prints ratios to references measured in the same run).

    python benchmarks/bench_model.py [--source PATH] [--size 320] [--points 10000] [--batch 8]

Times: parsing the source; the UV build (flattening + rasterisation); loading
from the cache (memory-mapped npz); sampling ``sample_shape`` for a batch
(forward, and forward + backward wrt uv) next to one ``torch.bmm`` with the same
output size (B, P, 3 + 3N) and inner size 4 (the 4 bilinear taps), as a ratio.
Memory of the UV-3DMM is printed for the source and computed for BFM 2017
(199 + 100 shape, 199 albedo modes) from the layout: bytes = channels x S^2 x 4.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lsqface.morphable.cache import load_uv_model, read_uv_model_cache, write_uv_model_cache  # noqa: E402
from lsqface.morphable.sources import load_source, resolve_source  # noqa: E402
from lsqface.morphable.uv_build import build_uv_model  # noqa: E402
from lsqface.morphable.uv_model import sample_shape  # noqa: E402


def best_of(function, repeats: int = 5) -> float:
    """Smallest wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def uv_model_megabytes(n_shape: int, n_albedo: int, size: int) -> float:
    """MB (2^20 bytes) of the UV images: (3 + 3 N_shape) + (3 + 3 N_albedo) + 3 normal + 1 mask channels, float32."""
    channels = (3 + 3 * n_shape) + (3 + 3 * n_albedo) + 3 + 1
    return channels * size * size * 4 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    path = resolve_source(args.source)
    start = time.perf_counter()
    model = load_source(path)
    parse_seconds = time.perf_counter() - start
    start = time.perf_counter()
    uv_model = build_uv_model(model, size=args.size)
    build_seconds = time.perf_counter() - start
    print(f"source {path.name}: parse {parse_seconds:.2f} s, UV build at {args.size}x{args.size} {build_seconds:.2f} s")

    with tempfile.TemporaryDirectory() as folder:
        cache_path = write_uv_model_cache(uv_model, Path(folder) / "bench.npz")
        read_seconds = best_of(lambda: read_uv_model_cache(cache_path))
        start = time.perf_counter()
        load_uv_model(path, size=args.size, cache_folder=folder)  # builds: the key's file is not bench.npz
        load_uv_model(path, size=args.size, cache_folder=folder)
        cached_seconds = best_of(lambda: load_uv_model(path, size=args.size, cache_folder=folder))
        size_mb = cache_path.stat().st_size / 2**20
    print(
        f"cache file {size_mb:.0f} MB: read {read_seconds * 1000:.1f} ms, load_uv_model from cache (with source fingerprint) "
        f"{cached_seconds * 1000:.1f} ms = {(parse_seconds + build_seconds) / cached_seconds:.0f}x faster than parse + build"
    )

    n_shape = uv_model.n_shape
    uv = torch.rand(args.batch, args.points, 2)
    channels = 3 + 3 * n_shape
    taps = torch.randn(args.batch, args.points, 4)
    pixels = torch.randn(args.batch, 4, channels)
    sample_seconds = best_of(lambda: sample_shape(uv_model, uv))
    bmm_seconds = best_of(lambda: torch.bmm(taps, pixels))

    def forward_backward() -> None:
        points = uv.clone().requires_grad_(True)
        mean, basis = sample_shape(uv_model, points)
        (mean.sum() + basis.sum()).backward()

    def bmm_forward_backward() -> None:
        left = taps.clone().requires_grad_(True)
        torch.bmm(left, pixels).sum().backward()

    backward_seconds = best_of(forward_backward)
    bmm_backward_seconds = best_of(bmm_forward_backward)
    print(
        f"sample_shape B={args.batch} P={args.points} ({channels} channels): forward {sample_seconds * 1000:.1f} ms "
        f"= {sample_seconds / bmm_seconds:.2f}x one bmm (B, P, 4) @ (B, 4, {channels}) ({bmm_seconds * 1000:.1f} ms); "
        f"forward+backward wrt uv {backward_seconds * 1000:.1f} ms = {backward_seconds / bmm_backward_seconds:.2f}x bmm's "
        f"({bmm_backward_seconds * 1000:.1f} ms)"
    )

    measured = uv_model.nbytes() / 2**20
    print(
        f"UV-3DMM memory at {args.size}x{args.size}: {model.name} {measured:.1f} MB measured "
        f"(layout formula {uv_model_megabytes(n_shape, uv_model.n_albedo, args.size):.1f} MB); "
        f"BFM 2017 (199 + 100 shape, 199 albedo) {uv_model_megabytes(299, 199, args.size):.1f} MB computed from the layout "
        "(bytes = channels x S^2 x 4)"
    )


if __name__ == "__main__":
    main()
