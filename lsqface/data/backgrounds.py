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
- :func:`collect_backgrounds`: a training folder of many more, from any folders
  of pictures or Debian's wallpaper packages as downloaded (``.deb`` files:
  ``make backgrounds`` fetches MATE's, GNOME's and KDE Plasma's, about 60
  pictures, photographs and abstract art), each scaled down once and any
  picture in which dlib finds a face left out.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import re
import tarfile
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lsqface.data.images import IMAGE_EXTENSIONS, list_image_files, read_image, read_photo, to_tensor
from lsqface.errors import ImageError
from lsqface.files import write_bytes_atomic

logger = logging.getLogger("lsqface.data")

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


#: A file named like "1920x1080.jpg": one size of a wallpaper shipped at several (KDE's layout).
_SIZE_NAME = re.compile(r"^(\d+)x(\d+)$")


def _deb_members(path: Path) -> dict[str, bytes]:
    """The members of a Debian package (an ``ar`` archive) by name."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise ImageError(f"{path} is not a Debian package (.deb).")
    members, offset = {}, 8
    while offset + 60 <= len(data):
        header = data[offset:offset + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise ImageError(f"{path} is a damaged Debian package.") from None
        members[name] = data[offset + 60:offset + 60 + size]
        offset += 60 + size + (size % 2)
    return members


def _extract_deb(path: Path, into: Path) -> None:
    """Unpack the pictures of a Debian package's data archive into ``into`` (nothing else is written)."""
    members = _deb_members(path)
    payload = next((members[name] for name in members if name.startswith("data.tar")), None)
    if payload is None:
        raise ImageError(f"{path} holds no data archive; is it a Debian package?")
    with tarfile.open(fileobj=io.BytesIO(payload)) as archive:
        pictures = [member for member in archive.getmembers()
                    if member.isfile() and Path(member.name).suffix.lower() in IMAGE_EXTENSIONS]
        archive.extractall(into, members=pictures, filter="data")


def _distinct_pictures(files: Sequence[Path]) -> list[Path]:
    """``files`` with each wallpaper shipped at several sizes ("WxH.jpg" files of one folder) kept once, largest."""
    largest: dict[Path, tuple[int, Path]] = {}
    kept = []
    for path in files:
        match = _SIZE_NAME.match(path.stem)
        if match is None:
            kept.append(path)
            continue
        area = int(match.group(1)) * int(match.group(2))
        if path.parent not in largest or area > largest[path.parent][0]:
            largest[path.parent] = (area, path)
    return sorted(kept + [path for _, path in largest.values()])


def collect_backgrounds(sources: Sequence[str | os.PathLike], out: str | os.PathLike, max_side: int = 1024,
                        min_side: int = 256, reject_faces: bool = True, packaged: bool = True) -> list[Path]:
    """Gather face-free background pictures for training into one folder.

    Args:
        sources: folders of pictures (searched recursively), picture files and Debian packages
            (``.deb``, e.g. mate-backgrounds, gnome-backgrounds, plasma-workspace-wallpapers as
            ``apt-get download`` leaves them, named or in a named folder).
        out: the folder to write to; each picture becomes OUT/<hash of its content>.jpg, so running
            again adds only what is new.
        max_side: pictures are scaled down to at most this longer side (a crop of a background is
            resized to the network's input anyway; this bounds the sampler's memory).
        min_side: pictures with a shorter side below this are skipped (icons, logos, spinners).
        reject_faces: skip every picture in which dlib's detector (the detect extra) finds a face:
            a face in the background would be taught as not-face.
        packaged: add the face-free photographs installed packages ship (:func:`packaged_natural_images`).

    Returns:
        The files of OUT that the pictures found map to (written now or already there), sorted.

    Raises:
        ImageError: a source does not exist or is not a picture folder or Debian package.
        lsqface.detect.DetectorError: ``reject_faces`` and dlib is not installed.
    """
    from PIL import Image

    detect = None
    if reject_faces:
        from lsqface.detect import DetectorError, detect_faces

        if importlib.util.find_spec("dlib") is None:  # said before anything is written
            raise DetectorError("Leaving out pictures with faces needs dlib; install it with: pip install 'lsqface[detect]' "
                                "(or pass --keep-faces for pictures you know hold no face).")
        detect = detect_faces
    sources = [Path(source) for source in sources]
    for source in sources:
        if not (source.is_dir() or (source.is_file() and source.suffix.lower() in (*IMAGE_EXTENSIONS, ".deb"))):
            raise ImageError(f"Background source {source} is neither a folder of pictures, a picture nor a Debian package (.deb).")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: set[Path] = set()
    with tempfile.TemporaryDirectory() as scratch:
        files: list[Path] = []
        packages = []
        for source in sources:
            if source.is_dir():
                files += list_image_files(source)
                packages += sorted(source.glob("*.deb"))
            elif source.suffix.lower() == ".deb":
                packages.append(source)
            else:
                files.append(source)
        for number, package in enumerate(packages):
            into = Path(scratch) / str(number)
            _extract_deb(package, into)
            files += list_image_files(into) if into.is_dir() else []
        known = set(packaged_natural_images()) if packaged else set()
        files += sorted(known)
        faces = small = unreadable = 0
        for path in _distinct_pictures(files):
            try:
                image, _ = read_photo(path)  # 8-bit pictures stay uint8
            except ImageError:
                unreadable += 1
                continue
            height, width = image.shape[:2]
            if min(height, width) < min_side:
                small += 1
                continue
            if image.dtype != np.uint8:
                image = (image * 255.0 + 0.5).astype(np.uint8)
            picture = Image.fromarray(image)
            scale = min(1.0, max_side / max(height, width))
            if scale < 1.0:
                picture = picture.resize((round(width * scale), round(height * scale)), Image.LANCZOS)
            if detect is not None and path not in known and detect(np.asarray(picture)):
                faces += 1
                continue
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=92)
            target = out / f"{hashlib.sha256(buffer.getvalue()).hexdigest()[:16]}.jpg"
            if not target.exists():
                write_bytes_atomic(target, buffer.getvalue())
            written.add(target)
    logger.info("Backgrounds: %d pictures in %s; left out %d with a face, %d smaller than %d px, %d unreadable.",
                len(written), out, faces, small, min_side, unreadable)
    return sorted(written)
