"""Backgrounds behind augmented faces (seed K: "fill the background region with
random images from ImageNet").

- A folder in ImageNet layout (``train/n01440764/n01440764_10026.JPEG``) or any
  folder of images: :class:`BackgroundSampler` picks a random image, a random
  square-ish crop of it (between 30 % and 100 % of its shorter side) and
  resizes that to the face image's size.
- No folder: :func:`procedural_background`, smooth random colour fields with a
  few random soft-edged ellipses and rectangles and fine noise, deterministic
  given a ``torch.Generator``. Good enough to teach the network that the
  background is not face; natural images are better.
- :func:`packaged_natural_images`: the natural photographs that installed
  Python packages happen to ship (scikit-image's bundled data images,
  scikit-learn's ``china.jpg`` and ``flower.jpg``), for a quick start without a
  download. Portraits are left out (scikit-image's ``astronaut.png`` and
  ``camera.png``, matplotlib's ``grace_hopper.jpg``): a second face in the
  background would teach the network the wrong thing. matplotlib ships no
  other photographs, so it adds none.
"""

from __future__ import annotations

import importlib.util
import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from lsqface.data.images import list_image_files, read_image, to_tensor
from lsqface.errors import ImageError

#: Natural, face-free photographs bundled with packages, by package and folder inside it.
_PACKAGED = {
    "skimage": ("data", ("brick.png", "chelsea.png", "coffee.png", "grass.png", "gravel.png", "rocket.jpg",
                         "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg", "rough-wall.png",
                         "coins.png", "moon.png")),
    "sklearn": ("datasets/images", ("china.jpg", "flower.jpg")),
}


def packaged_natural_images() -> list[Path]:
    """Paths of natural photographs shipped by installed packages (possibly none).

    Packages are located without importing them; a package that is absent or
    lacks a file is skipped.
    """
    found = []
    for package, (folder, names) in _PACKAGED.items():
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            for name in names:
                path = Path(location) / folder / name
                if path.is_file():
                    found.append(path)
    return found


def procedural_background(batch: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random smooth colour fields with shapes and noise, (B, 3, H, W) in [0, 1].

    Deterministic given ``generator`` (drawn on the CPU).
    """
    def rand(*shape):
        return torch.rand(*shape, generator=generator)

    # Smooth colour field: a coarse random grid, bicubically upsampled.
    coarse = rand(batch, 3, 4, 4) * 0.8 + 0.1
    image = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    softness = 2.0 / max(height, width)
    n_shapes = 5
    centres, radii, colours, kinds = rand(batch, n_shapes, 2), 0.05 + 0.25 * rand(batch, n_shapes, 2), rand(batch, n_shapes, 3), rand(batch, n_shapes)
    for k in range(n_shapes):
        dx = (xs[None] - centres[:, k, 0, None, None]) / radii[:, k, 0, None, None]
        dy = (ys[None] - centres[:, k, 1, None, None]) / radii[:, k, 1, None, None]
        ellipse = torch.sqrt(dx**2 + dy**2)
        box = torch.maximum(dx.abs(), dy.abs())
        distance = torch.where(kinds[:, k, None, None] < 0.5, ellipse, box)
        # Soft edge about one pixel wide, in units of the shape's radius.
        mask = torch.sigmoid((1.0 - distance) * radii[:, k].min(dim=1).values[:, None, None] / softness)[:, None]
        image = image * (1 - mask) + colours[:, k, :, None, None] * mask
    noise = (torch.randn(batch, 3, height, width, generator=generator)) * 0.03
    return (image + noise).clamp(0.0, 1.0)


def random_crop_resize(image: torch.Tensor, height: int, width: int, generator: torch.Generator | None = None,
                       min_fraction: float = 0.3) -> torch.Tensor:
    """A random crop of ``image`` (3, h, w) with the output's aspect ratio, resized to (3, height, width).

    The crop's shorter side is uniform in [min_fraction, 1] times the largest
    crop of that aspect ratio that fits.
    """
    _, source_height, source_width = image.shape
    aspect = width / height
    max_height = min(source_height, source_width / aspect)
    fraction = min_fraction + (1 - min_fraction) * torch.rand((), generator=generator).item()
    crop_height = max(1, int(round(max_height * fraction)))
    crop_width = max(1, min(source_width, int(round(crop_height * aspect))))
    top = int(torch.randint(0, source_height - crop_height + 1, (), generator=generator))
    left = int(torch.randint(0, source_width - crop_width + 1, (), generator=generator))
    crop = image[:, top:top + crop_height, left:left + crop_width]
    return F.interpolate(crop[None], size=(height, width), mode="bilinear", align_corners=False,
                         antialias=crop_height > height)[0].clamp(0.0, 1.0)


#: Default memory for decoded background photos kept between samples (see BackgroundSampler).
DEFAULT_CACHE_BYTES = 512 * 2**20


class BackgroundSampler:
    """Random backgrounds from image files, or procedural ones when there are none.

    Decoded photos are kept in memory, least recently used dropped first, up to ``cache_bytes``:
    a small folder (the dozen photos packages ship) is decoded once per run instead of once per
    background, which was a third of a 64 px training step's data time; a folder the size of
    ImageNet gets few hits and costs at most the bound. The cache changes no pixel.

    Args:
        source: a folder (ImageNet layout or any folder, searched recursively),
            a list of image files, or None for procedural backgrounds.
        cache_bytes: memory for decoded photos (float32, 12 bytes per pixel); 0 keeps none.
    """

    def __init__(self, source: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[Path, torch.Tensor] = OrderedDict()
        self._cached_bytes = 0
        if source is None:
            self.files: list[Path] = []
        elif isinstance(source, (str, os.PathLike)):
            self.files = list_image_files(source)
            if not self.files:
                raise ImageError(f"Background folder {source} has no images; point it at a folder of photographs (e.g. ImageNet train/).")
        else:
            self.files = [Path(path) for path in source]

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, path: Path) -> torch.Tensor:
        """The photo at ``path`` as a (3, H, W) tensor, from the cache when it is there."""
        image = self._cache.get(path)
        if image is not None:
            self._cache.move_to_end(path)
            return image
        image = to_tensor(read_image(path))
        size = image.numel() * image.element_size()
        if size <= self.cache_bytes:
            self._cache[path] = image
            self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes:
                _, dropped = self._cache.popitem(last=False)
                self._cached_bytes -= dropped.numel() * dropped.element_size()
        return image

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) backgrounds in [0, 1]; deterministic given ``generator``.

        A file that cannot be read is skipped for another random one; after
        five failures in a row the last error is raised.
        """
        if not self.files:
            return procedural_background(batch, height, width, generator)
        images = []
        for _ in range(batch):
            for attempt in range(5):
                path = self.files[int(torch.randint(0, len(self.files), (), generator=generator))]
                try:
                    image = self._read(path)
                    break
                except ImageError:
                    if attempt == 4:
                        raise
            images.append(random_crop_resize(image, height, width, generator))
        return torch.stack(images)
