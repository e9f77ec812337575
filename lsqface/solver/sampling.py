"""Stochastic sampling of pixels for the least-squares layer (seed C).

Per image, ``count`` pixels are drawn at random, without replacement, among
those whose confidence exceeds ``0.001 x`` that image's maximum confidence;
when fewer qualify, all of them are taken and the rest is filled with random
other pixels. The draw is one batched ``topk`` over random keys (qualifying
pixels get keys in [1, 2), the others in [0, 1)), so there is no loop.

Training draws fresh keys for every image of every step (a ``torch.Generator``). Inference
instead gives every image the same fixed table of keys (:func:`quarter_turn_keys`): a pixel and
the three pixels it goes to under quarter turns of the square image share one key, and ties
among them go to the higher confidence. Which pixels a photo's fit reads then depends only on
its maps: not on the photo's place in a batch, and a photo turned by a quarter turn has its
samples turned with it, so that with the rotation ensemble (whose maps turn with the photo) the
fitted face turns with the photo too (tests/weights/test_default_model.py).

Pixel convention (the whole project's, lsqface.render.rasterize): the pixel in
column ``j`` and row ``i`` has its centre at ``(x, y) = (j + 0.5, i + 0.5)``;
x grows to the right and y downwards, and the image covers [0, W] x [0, H].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

#: Pixels qualify when their confidence exceeds this fraction of the image's maximum (seed C).
RELATIVE_THRESHOLD = 1e-3


@dataclass(frozen=True)
class PixelSamples:
    """Which pixels were drawn.

    Attributes:
        indices: (B, P) int64 flat pixel indices ``y W + x``.
        pixels: (B, P, 2) float, pixel coordinates (x, y) of the pixel centres:
            column j, row i has its centre at (j + 0.5, i + 0.5), the renderer's
            convention (lsqface.render.rasterize), so that a camera fitted to the
            samples and an image rendered with it agree.
        qualified: (B, P) bool, True where the pixel passed the confidence threshold.
        height, width: the image size in pixels.
    """

    indices: torch.Tensor
    pixels: torch.Tensor
    qualified: torch.Tensor
    height: int
    width: int


@dataclass(frozen=True)
class GatheredSamples:
    """The network's maps read at the sampled pixels (differentiable in the maps).

    Attributes:
        pixels: (B, P, 2) pixel coordinates (x, y) in pixels.
        depth: (B, P) depth, in the network's depth units.
        confidence: (B, P) confidence.
        correspondence: (B, P, 2) UV coordinates (u, v) into the UV-3DMM.
    """

    pixels: torch.Tensor
    depth: torch.Tensor
    confidence: torch.Tensor
    correspondence: torch.Tensor


@lru_cache(maxsize=16)
def _quarter_turn_keys(height: int, width: int, seed: int) -> torch.Tensor:
    raw = torch.rand(height * width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    index = torch.arange(height * width).reshape(height, width)
    # The pixels a pixel goes to under the turns that map the image onto itself (every quarter turn of a
    # square, the half turn of any rectangle); each takes the random number of the first of them, and
    # the key is that number's rank among the orbits' numbers: whole numbers, a random order of orbits.
    turns = [index, torch.rot90(index, 2)]
    if height == width:
        turns += [torch.rot90(index, 1), torch.rot90(index, 3)]
    first = torch.stack(turns).amin(dim=0)
    _, rank = torch.unique(raw[first.reshape(-1)], return_inverse=True)
    return rank.to(torch.float64).reshape(height, width)


def quarter_turn_keys(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(H, W) float64 keys of the inference draw: each pixel's orbit under the quarter turns of the square
    image (the half turn of a rectangle) numbered 0, 1, ... in a random order, so the pixels a turn
    carries into one another share a key (module notes). A new tensor on every call."""
    return _quarter_turn_keys(int(height), int(width), int(seed)).clone()


def sample_pixels(confidence: torch.Tensor, count: int = 10000, generator: torch.Generator | None = None,
                  keys: torch.Tensor | None = None) -> PixelSamples:
    """Draw ``count`` pixels per image following seed C.

    Args:
        confidence: (B, H, W) non-negative confidence (not differentiated through).
        count: pixels per image, at most H W.
        generator: optional torch.Generator (on confidence's device) for reproducible draws.
        keys: optional (H, W) fixed whole-number keys used for every image instead of random ones
            (:func:`quarter_turn_keys`): the pixels with the highest keys are taken, and among pixels
            with equal keys the higher confidence first.

    Returns:
        PixelSamples with (B, count) indices in random order.
    """
    if confidence.ndim != 3:
        raise ValueError(f"confidence must have shape (B, H, W), got {tuple(confidence.shape)}")
    batch, height, width = confidence.shape
    if not 0 < count <= height * width:
        raise ValueError(f"count must be in 1..{height * width} (the pixel count), got {count}")
    flat = confidence.detach().reshape(batch, -1)
    maximum = flat.amax(dim=1, keepdim=True)
    qualifies = flat > RELATIVE_THRESHOLD * maximum
    if keys is None:
        keys = torch.rand(flat.shape, generator=generator, device=flat.device, dtype=torch.float32)
        keys = keys + qualifies.to(keys.dtype)
    else:
        if keys.shape != (height, width):
            raise ValueError(f"keys must have shape ({height}, {width}), got {tuple(keys.shape)}")
        keys = keys.to(device=flat.device, dtype=torch.float64).reshape(1, -1)
        # Whole-number keys, the confidence (in [0, 0.5]) ordering a pixel's quarter-turn partners (which
        # share a key) among themselves, and the qualifying pixels lifted above all others.
        relative = 0.5 * flat.to(torch.float64) / maximum.to(torch.float64).clamp_min(torch.finfo(torch.float64).tiny)
        keys = keys + relative + (keys.amax() + 1.0) * qualifies.to(torch.float64)
    _, indices = torch.topk(keys, count, dim=1, largest=True, sorted=False)
    x = (indices % width).to(confidence.dtype if confidence.is_floating_point() else torch.float32) + 0.5
    y = torch.div(indices, width, rounding_mode="floor").to(x.dtype) + 0.5
    return PixelSamples(
        indices=indices,
        pixels=torch.stack((x, y), dim=-1),
        qualified=torch.gather(qualifies, 1, indices),
        height=height,
        width=width,
    )


def gather_map(values: torch.Tensor, samples: PixelSamples) -> torch.Tensor:
    """Read a (B, C, H, W) map at the sampled pixels: (B, P, C), differentiable in ``values``."""
    if values.ndim != 4 or values.shape[-2:] != (samples.height, samples.width):
        raise ValueError(
            f"map must have shape (B, C, {samples.height}, {samples.width}), got {tuple(values.shape)}"
        )
    batch, channels = values.shape[:2]
    flat = values.reshape(batch, channels, -1)
    index = samples.indices.unsqueeze(1).expand(-1, channels, -1)
    return torch.gather(flat, 2, index).transpose(1, 2)


def gather_samples(
    correspondence: torch.Tensor, depth: torch.Tensor, confidence: torch.Tensor, samples: PixelSamples
) -> GatheredSamples:
    """Read the network's maps at the sampled pixels.

    Args:
        correspondence: (B, 2, H, W) UV coordinates (u, v) in [0, 1].
        depth: (B, 1, H, W) depth.
        confidence: (B, H, W) or (B, 1, H, W) confidence.
        samples: from :func:`sample_pixels`.

    Returns:
        GatheredSamples; gradients flow to the gathered map values.
    """
    if confidence.ndim == 3:
        confidence = confidence.unsqueeze(1)
    return GatheredSamples(
        pixels=samples.pixels.to(depth.dtype),
        depth=gather_map(depth, samples)[..., 0],
        confidence=gather_map(confidence, samples)[..., 0],
        correspondence=gather_map(correspondence, samples),
    )
