"""Reading images, and a dataset over any folder of images.

``read_image`` turns a path, a numpy array or a PIL image into a float32
(H, W, 3) array in [0, 1]. Choices it makes, so that every caller gets the
same pixels:

- JPEG, PNG, WebP, BMP, TIFF (anything Pillow opens); the file is decoded in
  full at once, so a truncated or corrupt file fails here, not later.
- EXIF orientation is applied (phones store portraits rotated).
- Grey images are repeated to three channels. Images with an alpha channel are
  composited on black (colour times alpha): pixels a cut-out marks as absent
  become black instead of whatever colour the editor left behind.
- 16-bit images keep their precision (divided by 65535); 8-bit by 255.
- Smaller than ``min_size`` pixels on a side (16 by default, the U-Net's
  smallest input): refused.
- More than ``max_pixels`` (50 Mpixel by default): a JPEG is decoded at a
  reduced scale (1/2, 1/4 or 1/8, Pillow's draft mode, which never allocates
  the full image) when that brings it under the limit; any other image is
  refused. Images beyond Pillow's own decompression-bomb limit (about 179
  Mpixel) are refused before decoding.

``read_photo`` (the command line's reader) keeps an 8-bit photo as uint8, a
quarter of float32's memory: the reconstruct path converts to float only the
part it uses (:func:`photo_region`), so a 50-megapixel photo never has a float
copy of the whole of it.

Pixel coordinate convention used by every dataset and transform in
``lsqface.data``, the project's (:mod:`lsqface.render.rasterize`,
:mod:`lsqface.solver.sampling`): x to the right, y down, in pixels, continuous;
the pixel in column j, row i covers [j, j + 1] x [i, i + 1] and has its centre
at (j + 0.5, i + 0.5), so a W x H image covers [0, W] x [0, H]. Dataset
annotations given as integer pixel indices are converted to it when they are
read (see :mod:`lsqface.data.celeba` and :mod:`lsqface.data.aflw`).
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from lsqface.errors import ConfigError, ImageError
from lsqface.errors import DatasetError  # noqa: F401  (moved to lsqface.errors; still importable from here)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MIN_SIZE = 16
MAX_PIXELS = 50_000_000
#: The largest part of a photo converted to float at its full resolution (a float32 copy of 192 MB):
#: a larger part (the whole of a larger photo, or a box filling it) is box-averaged by an integer
#: factor first (:func:`photo_region`). Photos up to this size go through exactly as before.
FULL_FLOAT_PIXELS = 16_000_000

ImageSource = Union[str, os.PathLike, np.ndarray, Image.Image]


def read_image(source: ImageSource, min_size: int = MIN_SIZE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image as float32 (H, W, 3) RGB in [0, 1].

    Args:
        source: a file path, a PIL image, or a numpy array (H, W), (H, W, 1),
            (H, W, 3) or (H, W, 4) of uint8 (0..255), uint16 (0..65535), bool
            or float (already in [0, 1]).
        min_size: smallest accepted height and width, in pixels.
        max_pixels: largest accepted height x width (see the module notes).
    Raises:
        ImageError: missing, unreadable, corrupt, too small or too large image.
    """
    if isinstance(source, np.ndarray):
        array = _array_to_rgb(source, "the array")
        name = "the array"
    elif isinstance(source, Image.Image):
        name = "the PIL image"
        _check_pixel_count(source.size, max_pixels, name)
        array = _pil_to_rgb(ImageOps.exif_transpose(source))
    elif isinstance(source, (str, os.PathLike)):
        name = str(source)
        array = _read_file(Path(source), max_pixels)
    else:
        raise ImageError(f"Cannot read an image from a {type(source).__name__}; pass a file path, a numpy array or a PIL image.")
    height, width = array.shape[:2]
    if min(height, width) < min_size:
        raise ImageError(
            f"Image {name} is {width}x{height} pixels, smaller than the minimum of {min_size} pixels per side; use a larger image."
        )
    return array


def read_photo(path: str | os.PathLike, min_size: int = MIN_SIZE,
               max_pixels: int | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Read an image file like :func:`read_image`, with the scale it was decoded at, 8-bit pixels kept as uint8.

    Returns:
        the (h, w, 3) image and ``(scale_x, scale_y)``: the file's pixels per decoded pixel along x
        and y (1, 1 unless a JPEG over ``max_pixels`` was decoded at a reduced scale). A point
        (x, y) in the decoded image is (scale_x x, scale_y y) in the photo's own pixels. The image
        is uint8 (0..255) when the file has 8 bits per channel and no alpha (RGB, grey, palette),
        else float32 in [0, 1] as :func:`read_image` gives it; ``pixel / 255`` in float32 is
        exactly what :func:`read_image` gives for the same file.
    """
    scale: list[float] = [1.0, 1.0]
    array = _read_file(Path(path), MAX_PIXELS if max_pixels is None else max_pixels, scale, keep_uint8=True)
    height, width = array.shape[:2]
    if min(height, width) < min_size:
        raise ImageError(
            f"Image {path} is {width}x{height} pixels, smaller than the minimum of {min_size} pixels per side; use a larger image."
        )
    return array, (scale[0], scale[1])


def _check_regular_file(path: Path) -> None:
    """Refuse what is not a readable regular file before opening it (opening a FIFO would wait forever)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageError(f"Image file {path} does not exist; check the path.") from None
    except PermissionError:
        raise ImageError(f"Image {path} cannot be read: permission denied; check the permissions of its folder.") from None
    except OSError as error:
        raise ImageError(f"Image {path} cannot be read ({error.strerror or error}); check the path.") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{path} is a folder, not an image file; pass an image file.")
    if not stat.S_ISREG(mode):
        raise ImageError(f"{path} is not a regular file (a pipe, device or socket); pass an image file.")
    if not os.access(path, os.R_OK):
        raise ImageError(f"Image {path} cannot be read: permission denied; check its permissions (chmod +r).")


def _read_file(path: Path, max_pixels: int, scale: list[float] | None = None, keep_uint8: bool = False) -> np.ndarray:
    _check_regular_file(path)
    try:
        with warnings.catch_warnings():
            # We apply our own, lower limit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    if image.format != "JPEG":
                        _check_pixel_count(image.size, max_pixels, str(path))
                    reduction = 1
                    while reduction < 8 and (width // reduction) * (height // reduction) > max_pixels:
                        reduction *= 2
                    image.draft("RGB", (width // reduction, height // reduction))
                    _check_pixel_count(image.size, max_pixels, str(path))
                decoded = (width / image.size[0], height / image.size[1])
                swapped = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation: a quarter turn
                image.load()
                # In place: a copy of a 50-megapixel photo is 200 MB more for as long as it is decoded.
                ImageOps.exif_transpose(image, in_place=True)
                if scale is not None:
                    scale[:] = decoded[::-1] if swapped else decoded
                return _pil_to_rgb(image, keep_uint8)
    except Image.DecompressionBombError:
        raise ImageError(
            f"Image {path} has more pixels than Pillow decodes safely (a possible decompression bomb); "
            f"downscale it below {max_pixels:,} pixels first."
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{path} is not an image file lsqface can read; use JPEG, PNG, WebP, BMP or TIFF."
        ) from None
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(f"Image {path} cannot be read: permission denied; check its permissions (chmod +r).") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"Image {path} is corrupt or cut short ({error}); re-download or re-export it.") from None


def _check_pixel_count(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            f"Image {name} is {width}x{height} pixels, more than the limit of {max_pixels:,} pixels; downscale it first."
        )


def _pil_to_rgb(image: Image.Image, keep_uint8: bool = False) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]; with ``keep_uint8``, uint8 where the image has 8 bits per channel and no alpha."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (PNG, TIFF); Pillow reports 16-bit PNGs as "I" or "I;16".
        grey = np.asarray(image, dtype=np.float64) / 65535.0
        return _array_to_rgb(np.clip(grey, 0.0, 1.0).astype(np.float32), "the image")
    if mode == "F":
        return _array_to_rgb(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0), "the image")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        return np.ascontiguousarray(rgba[..., :3] * rgba[..., 3:4])
    if mode != "RGB":
        image = image.convert("RGB")
    if keep_uint8:
        return np.asarray(image)
    return np.asarray(image, dtype=np.float32) / 255.0


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"Cannot use {name} of shape {array.shape} as an image; pass (H, W), (H, W, 3) or (H, W, 4).")
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 65535.0
    elif array.dtype == np.bool_:
        values = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise ImageError(f"{name.capitalize()} contains NaN or infinite values; pass finite pixel values in [0, 1].")
        if values.min() < -1e-3 or values.max() > 1.0 + 1e-3:
            raise ImageError(
                f"{name.capitalize()} has float values in [{values.min():.3g}, {values.max():.3g}]; float images must be in [0, 1]."
            )
        values = np.clip(values, 0.0, 1.0)
    else:
        raise ImageError(f"Cannot use {name} of dtype {array.dtype} as an image; pass uint8, uint16 or float in [0, 1].")
    if values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=2)
    elif values.shape[2] == 4:
        values = values[..., :3] * values[..., 3:4]
    return np.ascontiguousarray(values, dtype=np.float32)


def photo_array(source: ImageSource, min_size: int = MIN_SIZE) -> np.ndarray:
    """An image as the reconstruct path holds it: an (H, W, 3) uint8 array, or a C-contiguous float32 one
    already in [0, 1], as it is (not copied); anything else as :func:`read_image` gives it ((H, W, 3)
    float32 in [0, 1]).

    A uint8 photo is converted where a part of it is used (:func:`photo_region`), to the very values
    :func:`read_image` would give, so the results do not depend on which of the two is passed. A float32
    photo in [0, 1] is what :func:`read_image` would return, so it is only checked (its smallest and
    largest value; NaN and infinity fail the check and get :func:`read_image`'s error), not copied.
    """
    if (isinstance(source, np.ndarray) and source.ndim == 3 and source.shape[2] == 3
            and (source.dtype == np.uint8 or (source.dtype == np.float32 and source.flags.c_contiguous))):
        height, width = source.shape[:2]
        if min(height, width) < min_size:
            raise ImageError(f"Image the array is {width}x{height} pixels, smaller than the minimum of {min_size} "
                             "pixels per side; use a larger image.")
        if source.dtype == np.uint8 or (0.0 <= source.min() and source.max() <= 1.0):
            return source
    return read_image(source, min_size)


def photo_float(photo: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 or float photo -> float32 in [0, 1] (uint8 / 255, the values :func:`read_image` gives).

    Converts the whole array: for a part of a large photo use :func:`photo_region`.
    """
    if photo.dtype == np.uint8:
        values = photo.astype(np.float32)
        values /= 255.0
        return values
    return np.asarray(photo, dtype=np.float32)


def reduction_factor(pixels: int, max_pixels: int | None = None) -> int:
    """The smallest integer k >= 1 with ``pixels`` / k^2 at most ``max_pixels`` (default ``FULL_FLOAT_PIXELS``)."""
    limit = max(1, FULL_FLOAT_PIXELS if max_pixels is None else int(max_pixels))
    factor = max(1, int(np.ceil(np.sqrt(pixels / limit))))
    while pixels > limit * factor * factor:
        factor += 1
    return factor


def photo_region(photo: np.ndarray, top: int, left: int, bottom: int, right: int, factor: int = 1) -> torch.Tensor:
    """Rows ``top:bottom`` and columns ``left:right`` of a photo as a (3, h, w) float32 tensor in [0, 1].

    With ``factor`` 1 the region is converted as it is: the values :func:`read_image` gives those
    pixels, bit for bit. With k > 1 (:func:`reduction_factor`) it is box-averaged: each k x k block
    of pixels becomes one, averaged in float64 from the photo's own values a band of rows at a time,
    so no float copy of the whole region is made. The last ``(bottom - top) % k`` rows and
    ``(right - left) % k`` columns, which fill no block, are left out.

    Args:
        photo: (H, W, 3) uint8 (0..255) or float in [0, 1]; the bounds must lie inside it.

    Returns:
        (3, h, w) with h = (bottom - top) // k, w = (right - left) // k: the region's point (x, y)
        (pixels from its top-left corner) is (x / k, y / k) in the tensor.
    """
    region = photo[top:bottom, left:right]
    if factor == 1:
        values = np.ascontiguousarray(region.transpose(2, 0, 1), dtype=np.float32)
        if photo.dtype == np.uint8:
            values /= 255.0
        return torch.from_numpy(values)
    height, width = (bottom - top) // factor, (right - left) // factor
    if height < 1 or width < 1:
        raise ImageError(f"A {right - left}x{bottom - top} part of the photo is too thin to reduce {factor} times; "
                         "downscale the photo first.")
    values = np.empty((3, height, width), np.float32)
    divisor = factor * factor * (255.0 if photo.dtype == np.uint8 else 1.0)
    # The k x k blocks as axes of a view, summed a band of about a million output pixels at a time.
    band = max(1, (1 << 20) // width)
    for start in range(0, height, band):
        stop = min(height, start + band)
        blocks = region[start * factor:stop * factor, :width * factor].reshape(stop - start, factor, width, factor, 3)
        values[:, start:stop] = (blocks.sum(axis=(1, 3), dtype=np.float64) / divisor).transpose(2, 0, 1)
    return torch.from_numpy(values)


def list_image_files(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (extensions in ``IMAGE_EXTENSIONS``, any case), sorted by relative path.

    Hidden files and folders (name starting with ".") are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"Image folder {root} does not exist or is not a folder; check the path.")
    pattern = "**/*" if recursive else "*"
    files = [
        path for path in root.glob(pattern)
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    ]
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float array in [0, 1], or uint8 (divided by 255 as :func:`read_image` does) -> (3, H, W) float32."""
    if image.dtype == np.uint8:
        return photo_region(image, 0, 0, image.shape[0], image.shape[1])
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()


def fit_to_square(image: torch.Tensor, size: int, mode: str = "pad") -> tuple[torch.Tensor, torch.Tensor]:
    """Resize an image to ``size`` x ``size``, keeping its aspect ratio.

    Args:
        image: (3, H, W) float.
        size: output side, pixels.
        mode: ``"pad"`` scales the longer side to ``size`` and pads the other
            with black, centred; ``"crop"`` scales the shorter side to ``size``
            and crops the centre.
    Returns:
        (3, size, size) image and the (2, 3) float64 matrix A mapping input
        pixel coordinates to output ones, ``[x', y'] = A @ [x, y, 1]`` (pixel
        centres at (j + 0.5, i + 0.5); the input's corner (0, 0) goes to the
        corner of the resized picture inside the output).
    """
    height, width = image.shape[-2:]
    new_height, new_width, scale = _square_size(height, width, size, mode)
    resized = F.interpolate(image[None], size=(new_height, new_width), mode="bilinear",
                            align_corners=False, antialias=scale < 1)[0]
    return _place_in_square(resized, height, width, size)


def _square_size(height: int, width: int, size: int, mode: str) -> tuple[int, int, float]:
    """The resized (height, width) of :func:`fit_to_square` and its scale."""
    if mode not in ("pad", "crop"):
        raise ConfigError(f"Resize mode must be 'pad' or 'crop', got {mode!r}.")
    scale = size / (max(height, width) if mode == "pad" else min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale)), scale


def _place_in_square(resized: torch.Tensor, height: int, width: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fit_to_square`'s result from the (3, h, w) resized image of an (H, W) one."""
    new_height, new_width = resized.shape[-2:]
    top, left = (size - new_height) // 2, (size - new_width) // 2
    output = resized.new_zeros(3, size, size)
    src_top, src_left = max(0, -top), max(0, -left)
    dst_top, dst_left = max(0, top), max(0, left)
    rows, cols = min(new_height - src_top, size - dst_top), min(new_width - src_left, size - dst_left)
    output[:, dst_top:dst_top + rows, dst_left:dst_left + cols] = resized[:, src_top:src_top + rows, src_left:src_left + cols]
    # Continuous coordinates (image covers [0, W] x [0, H]): x' = sx x + left, with sx the per-axis
    # resize factor; F.interpolate with align_corners=False samples exactly this map.
    scale_x, scale_y = new_width / width, new_height / height
    matrix = torch.tensor([[scale_x, 0.0, float(left)], [0.0, scale_y, float(top)]], dtype=torch.float64)
    return output.clamp(0.0, 1.0), matrix


def antialias_weights(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) float64: the weights of ``F.interpolate(mode="bilinear", antialias=True,
    align_corners=False)`` along one axis shrunk from ``in_size`` to ``out_size`` <= ``in_size`` pixels.

    Output pixel i averages the input pixels j in [int(c - s + 0.5), int(c + s + 0.5)) with the triangle
    weights max(0, 1 - |j + 0.5 - c| / s), normalised to sum 1, where s = in / out and c = s (i + 0.5)
    (PIL's and torch's antialiased bilinear filter; equal to torch's resize within 1e-15 in float64).
    """
    if not 0 < out_size <= in_size:
        raise ValueError(f"antialias_weights shrinks: out_size must be in 1..{in_size}, got {out_size}")
    scale = in_size / out_size
    centres = scale * (torch.arange(out_size, dtype=torch.float64) + 0.5)
    first = (centres - scale + 0.5).long().clamp_min(0)
    stop = (centres + scale + 0.5).long().clamp_max(in_size)
    # Each output's window, at most 2 s + 2 inputs from its first, computed as an (out, window) band.
    inputs = first[:, None] + torch.arange(int(2 * scale) + 3)
    inside = inputs < stop[:, None]
    band = (1.0 - ((inputs - centres[:, None] + 0.5) / scale).abs()).clamp_min(0.0) * inside
    band = band / band.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    weights = torch.zeros(out_size, in_size + band.shape[1], dtype=torch.float64)
    weights.scatter_(1, inputs, band)
    return weights[:, :in_size].contiguous()


#: Values of a photo converted to float at a time by :func:`fit_region_to_square` (1 MB of float32).
_BAND_VALUES = 1 << 18


def fit_region_to_square(photo: np.ndarray, top: int, left: int, bottom: int, right: int, frame: tuple[int, int],
                         offset: tuple[int, int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fit_to_square` ("pad") of a frame that holds a part of a photo and black around it, without
    converting the part to float whole.

    The frame is ``frame`` = (height, width) pixels, black but for the photo's rows ``top:bottom`` and
    columns ``left:right``, placed with their corner at ``offset`` = (row, column) of the frame. When the
    frame shrinks, the antialiased resize is done as two products with :func:`antialias_weights` (black
    pixels add nothing, so only the part's columns of the weights are used), the first a band of the
    part's rows at a time: each band is converted to float as :func:`photo_region` converts it and
    resized while it is in the processor's cache. A multi-megapixel photo is then read once, with no
    float copy of it and no pass of torch's resize over one (3-4x faster on 1-3 megapixels); the result
    equals :func:`fit_to_square` of the frame built by :func:`photo_region` within 1e-6
    (tests/data/test_images.py), and a uint8 photo gives its float copy's result bit for bit.

    Args:
        photo: (H, W, 3) uint8 (0..255) or float32 in [0, 1]; the bounds lie inside it and inside the frame.

    Returns:
        (3, size, size) float32 and the (2, 3) float64 matrix of :func:`fit_to_square` (frame pixels ->
        output pixels).
    """
    frame_height, frame_width = frame
    new_height, new_width, scale = _square_size(frame_height, frame_width, size, "pad")
    row, column = offset
    if scale >= 1 or photo.dtype not in (np.uint8, np.float32):
        framed = torch.zeros(3, frame_height, frame_width)
        framed[:, row:row + bottom - top, column:column + right - left] = photo_region(photo, top, left, bottom, right)
        return fit_to_square(framed, size, "pad")
    part_height, part_width = bottom - top, right - left
    row_weights = antialias_weights(frame_height, new_height)[:, row:row + part_height].float()
    column_weights = antialias_weights(frame_width, new_width)[:, column:column + part_width].float()
    # The output rows that each band of input rows reaches: the weights are banded, so a contiguous range.
    reached = row_weights != 0
    first_input = torch.where(reached.any(1), reached.float().argmax(1), part_height).tolist()
    last_input = torch.where(reached.any(1), part_height - 1 - reached.flip(1).float().argmax(1), -1).tolist()
    part = photo[top:bottom, left:right]
    rows_resized = torch.zeros(new_height, part_width * 3)
    band = max(1, _BAND_VALUES // (part_width * 3))
    for start in range(0, part_height, band):
        stop = min(part_height, start + band)
        outputs = [index for index in range(new_height) if first_input[index] < stop and last_input[index] >= start]
        if not outputs:
            continue
        values = part[start:stop]
        if not (values.flags.c_contiguous and values.flags.writeable):
            values = np.array(values)  # a band of a crop, or of a read-only photo: torch needs its own copy
        values = torch.from_numpy(values).reshape(stop - start, part_width * 3)
        if photo.dtype == np.uint8:
            values = values.float().div_(255.0)  # the values read_image gives (photo_region)
        low, high = outputs[0], outputs[-1] + 1
        rows_resized[low:high].addmm_(row_weights[low:high, start:stop], values)
    by_channel = rows_resized.reshape(new_height, part_width, 3).permute(0, 2, 1).reshape(new_height * 3, part_width)
    resized = torch.mm(by_channel, column_weights.T).reshape(new_height, 3, new_width).permute(1, 0, 2)
    return _place_in_square(resized, frame_height, frame_width, size)


class ImageFolder(torch.utils.data.Dataset):
    """Every image under a folder (recursive, sorted), as (3, size, size) tensors.

    Items are dicts ``{"image": (3, S, S) float32, "transform": (2, 3) float64, "path": str}``
    (dicts so that the default DataLoader collation batches them).
    """

    def __init__(self, root: str | os.PathLike, size: int = 128, mode: str = "pad", recursive: bool = True) -> None:
        self.root = Path(root)
        self.size = size
        if mode not in ("pad", "crop"):
            raise ConfigError(f"Resize mode must be 'pad' or 'crop', got {mode!r}.")
        self.mode = mode
        self.files = list_image_files(self.root, recursive=recursive)
        if not self.files:
            raise ImageError(f"Image folder {self.root} has no images ({', '.join(IMAGE_EXTENSIONS)}); check the path.")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        image, transform = fit_to_square(to_tensor(read_image(path)), self.size, self.mode)
        return {"image": image, "transform": transform, "path": str(path)}


def load_landmark_item(path: str | os.PathLike, landmarks: np.ndarray, size: int | None, mode: str = "crop",
                       crop_box: tuple[int, int, int, int] | None = None) -> dict:
    """One face image with its landmarks, as the landmark datasets return it.

    Args:
        path: image file.
        landmarks: (K, 2) pixels (x, y) in the file's image, in the package's
            convention (pixel centres at (j + 0.5, i + 0.5)).
        size: output side in pixels (see :func:`fit_to_square`), or None to keep the image as it is.
        mode: ``"crop"`` or ``"pad"`` when resizing.
        crop_box: (left, top, width, height) integer pixels, cut out before
            resizing (the part outside the image is black), or None. It keeps
            columns left .. left + width - 1 and rows top .. top + height - 1,
            i.e. the region [left, left + width] x [top, top + height], so
            points move by (-left, -top).
    Returns:
        ``{"image": (3, S, S) float32, "landmarks": (K, 2) float32 pixels in the
        returned image, "transform": (2, 3) float64 file pixels -> returned
        pixels, "path": str}``.
    """
    image = to_tensor(read_image(path))
    transform = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    if crop_box is not None:
        left, top, width, height = crop_box
        cropped = image.new_zeros(3, height, width)
        rows = slice(max(top, 0), min(top + height, image.shape[1]))
        cols = slice(max(left, 0), min(left + width, image.shape[2]))
        cropped[:, rows.start - top:rows.stop - top, cols.start - left:cols.stop - left] = image[:, rows, cols]
        image = cropped
        transform[:, 2] = torch.tensor([-left, -top], dtype=torch.float64)
    if size is not None:
        image, resize = fit_to_square(image, size, mode)
        transform = resize[:, :2] @ transform + torch.cat([torch.zeros(2, 2, dtype=torch.float64), resize[:, 2:]], dim=1)
    points = torch.as_tensor(np.asarray(landmarks, dtype=np.float64))
    moved = points @ transform[:, :2].T + transform[:, 2]
    return {"image": image, "landmarks": moved.float(), "transform": transform, "path": str(path)}
