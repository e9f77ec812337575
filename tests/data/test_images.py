"""Reading images of every kind, and the folder dataset."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lsqface.data.images import (ImageFolder, fit_to_square, list_image_files, photo_region, read_image, read_photo,
                                 reduction_factor, to_tensor)
from lsqface.errors import ConfigError, ImageError


def gradient_rgb(height=20, width=30):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 77)], axis=2).astype(np.uint8)


@pytest.mark.parametrize("fmt, ext, exact", [("PNG", "png", True), ("BMP", "bmp", True), ("TIFF", "tif", True),
                                             ("WEBP", "webp", False), ("JPEG", "jpg", False)])
def test_formats(tmp_path, fmt, ext, exact):
    pixels = gradient_rgb()
    path = tmp_path / f"a.{ext}"
    kwargs = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(pixels).save(path, fmt, **kwargs)
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == (20, 30, 3)
    tolerance = 1e-6 if exact else 0.06
    np.testing.assert_allclose(image, pixels / 255.0, atol=tolerance)


def test_grey_and_rgba(tmp_path):
    grey = (np.arange(20 * 16).reshape(20, 16) % 256).astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    np.testing.assert_allclose(image, np.repeat(grey[..., None] / 255.0, 3, 2), atol=1e-6)

    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = np.where(np.arange(16) < 8, 255, 0)[None, :]
    rgba[0, 0, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    # Composited on black: colour times alpha.
    np.testing.assert_allclose(image[1, :8], 200 / 255.0, atol=1e-6)
    np.testing.assert_allclose(image[:, 8:], 0.0)
    np.testing.assert_allclose(image[0, 0], 200 / 255.0 * 128 / 255.0, atol=1e-6)


def test_sixteen_bit(tmp_path):
    values = (np.arange(16 * 16).reshape(16, 16) * 257).astype(np.uint16)  # not multiples of 257 * k only
    values[0, 0] = 1  # would be lost at 8 bits
    Image.fromarray(values).save(tmp_path / "d.png")
    image = read_image(tmp_path / "d.png")
    np.testing.assert_allclose(image[..., 0], values / 65535.0, atol=1e-7)
    assert image[0, 0, 0] > 0


def test_exif_orientation(tmp_path):
    pixels = gradient_rgb(16, 24)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; viewers turn it 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "r.jpg", quality=95, exif=exif)
    image = read_image(tmp_path / "r.jpg")
    assert image.shape == (24, 16, 3)
    np.testing.assert_allclose(image, np.rot90(pixels, k=-1) / 255.0, atol=0.06)


def test_arrays_and_pil():
    pixels = gradient_rgb()
    np.testing.assert_allclose(read_image(pixels), pixels / 255.0, atol=1e-6)
    np.testing.assert_allclose(read_image(Image.fromarray(pixels)), pixels / 255.0, atol=1e-6)
    np.testing.assert_allclose(read_image(pixels.astype(np.uint16) * 257), pixels / 255.0, atol=1e-6)
    floats = pixels / 255.0
    np.testing.assert_allclose(read_image(floats), floats, atol=1e-6)
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        read_image(floats * 255)
    with pytest.raises(ImageError, match="shape"):
        read_image(np.zeros((16, 16, 2)))


def test_missing_folder_and_non_image(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    with pytest.raises(ImageError, match="not an image file"):
        read_image(tmp_path / "notes.jpg")


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or cut short"):
        read_image(tmp_path / "cut.jpg")


def test_too_small(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(ImageError, match="minimum of 16 pixels"):
        read_image(tmp_path / "dot.png")
    read_image(np.zeros((16, 16, 3), np.uint8))  # the minimum itself is accepted


def png_header_only(width, height):
    """A PNG whose header claims width x height, with a tiny (invalid) image body."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_huge_png_refused_without_decoding(tmp_path):
    (tmp_path / "huge.png").write_bytes(png_header_only(20000, 20000))
    with pytest.raises(ImageError, match="pixels"):
        read_image(tmp_path / "huge.png")
    (tmp_path / "big.png").write_bytes(png_header_only(9000, 9000))  # over our 50 Mpixel limit only
    with pytest.raises(ImageError, match="limit of 50,000,000"):
        read_image(tmp_path / "big.png")


def test_huge_jpeg_header_refused(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(gradient_rgb(16, 16)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 20000, 20000)  # height, width in the frame header
    (tmp_path / "huge.jpg").write_bytes(bytes(data))
    with pytest.raises(ImageError, match="pixels"):
        read_image(tmp_path / "huge.jpg")


def test_over_limit_jpeg_downscaled_png_refused(tmp_path):
    pixels = gradient_rgb(64, 128)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.jpg", max_pixels=64 * 128 // 4)
    assert image.shape == (32, 64, 3)
    np.testing.assert_allclose(image[::4, ::4], pixels[1::8, 1::8] / 255.0, atol=0.08)
    with pytest.raises(ImageError, match="downscale"):
        read_image(tmp_path / "a.png", max_pixels=64 * 128 // 4)


def centroid_of(weights):
    """(2,) intensity-weighted centre (x, y) of an (H, W) image, pixel centres at (j + 0.5, i + 0.5)."""
    height, width = weights.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                            torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    weights = weights.double()
    return torch.stack([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


@pytest.mark.parametrize("height, width, mode", [(40, 80, "pad"), (80, 40, "pad"), (40, 80, "crop"), (60, 60, "pad"),
                                                 (12, 20, "pad"), (20, 12, "crop"), (96, 64, "crop")])
def test_fit_to_square_single_pixel_lands_where_the_matrix_says(height, width, mode):
    # One bright pixel at column j, row i: its centroid is (j + 0.5, i + 0.5), and after resizing
    # the centroid must be where the matrix sends that point. (With the old centre-at-integer
    # formula the prediction is off by (1 - scale) / 2, 0.3 pixels at scale 0.4.)
    image = torch.zeros(3, height, width)
    i, j = height // 2 + 3, width // 2 - 5
    image[:, i, j] = 1.0
    torch.testing.assert_close(centroid_of(image[0]), torch.tensor([j + 0.5, i + 0.5], dtype=torch.float64))
    output, matrix = fit_to_square(image, 32, mode)
    assert output.shape == (3, 32, 32)
    expected = matrix @ torch.tensor([j + 0.5, i + 0.5, 1.0], dtype=torch.float64)
    # Antialiased downscaling keeps a pixel's centroid (to 0.02 here); bilinear upscaling samples the
    # pixel's tent off-centre, which moves its centroid by up to 0.06 pixels.
    tolerance = 0.02 if matrix[0, 0] <= 1.0 else 0.08
    torch.testing.assert_close(centroid_of(output[0]), expected, atol=tolerance, rtol=0)


@pytest.mark.parametrize("height, width, mode", [(40, 80, "pad"), (80, 40, "pad"), (40, 80, "crop"), (21, 33, "pad")])
def test_fit_to_square_matrix_maps_image_edges(height, width, mode):
    # The input covers [0, W] x [0, H]; its corners go to the corners of the resized picture,
    # which is centred in the 32 x 32 output (pad: touches two opposite edges; crop: covers it).
    image = torch.ones(3, height, width)
    output, matrix = fit_to_square(image, 32, mode)
    corners = torch.tensor([[0.0, 0.0, 1.0], [width, height, 1.0]], dtype=torch.float64) @ matrix.T
    (left, top), (right, bottom) = corners.tolist()
    assert right - left == pytest.approx(round(width * 32 / (max if mode == "pad" else min)(height, width)))
    if mode == "pad":
        # The covered columns/rows are exactly the ones between the mapped edges.
        covered = output[0] > 0.5
        columns = covered.any(0).nonzero()[:, 0]
        rows = covered.any(1).nonzero()[:, 0]
        assert (columns.min().item(), columns.max().item() + 1) == (left, right)
        assert (rows.min().item(), rows.max().item() + 1) == (top, bottom)
        assert min(left, top) == 0 and max(right, bottom) == 32
    else:
        assert left <= 0 and top <= 0 and right >= 32 and bottom >= 32 and min(left, top) > -32


def test_fit_to_square_identity_is_exact():
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4))
    for mode in ("pad", "crop"):
        output, matrix = fit_to_square(image, 32, mode)
        torch.testing.assert_close(output, image, atol=1e-6, rtol=0)
        assert torch.equal(matrix, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64))



@pytest.mark.parametrize("in_size, out_size", [(2333, 64), (100, 64), (500, 37), (65, 64), (64, 64), (7, 3)])
def test_antialias_weights_are_torchs_resize(in_size, out_size):
    from lsqface.data.images import antialias_weights

    weights = antialias_weights(in_size, out_size)
    assert weights.shape == (out_size, in_size)
    torch.testing.assert_close(weights.sum(1), torch.ones(out_size, dtype=torch.float64))
    image = torch.rand(1, 2, in_size, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.nn.functional.interpolate(image, size=(out_size, 5), mode="bilinear", align_corners=False,
                                               antialias=True)
    torch.testing.assert_close(torch.einsum("oi,bciw->bcow", weights, image), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_region_resized_band_by_band_is_the_resized_frame(dtype):
    """fit_region_to_square (the photo's part resized a band of rows at a time, never converted whole) gives
    fit_to_square of the frame built from photo_region within 1e-6, for the whole photo, a part inside it
    and a part over its corner, shrunk and enlarged; a uint8 photo gives its float copy's result bit for bit."""
    from lsqface.data.images import _BAND_VALUES, fit_region_to_square

    generator = np.random.default_rng(3)
    height, width = 3 * _BAND_VALUES // (3 * 500) + 7, 500  # several bands
    photo = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if dtype == np.float32:
        photo = photo.astype(np.float32) / 255.0
    cases = [  # (top, left, bottom, right, frame, offset)
        (0, 0, height, width, (height, width), (0, 0)),
        (100, 50, 400, 350, (300, 300), (0, 0)),
        (0, 0, 150, 130, (200, 200), (50, 70)),
        (10, 20, 30, 40, (20, 20), (0, 0)),  # enlarged: torch's bilinear resize as before
    ]
    for top, left, bottom, right, frame, offset in cases:
        framed, matrix = fit_region_to_square(photo, top, left, bottom, right, frame, offset, 64)
        whole = torch.zeros(3, *frame)
        whole[:, offset[0]:offset[0] + bottom - top, offset[1]:offset[1] + right - left] = photo_region(photo, top, left, bottom, right)
        expected, expected_matrix = fit_to_square(whole, 64)
        assert framed.dtype == torch.float32 and torch.equal(matrix, expected_matrix)
        torch.testing.assert_close(framed, expected, rtol=0, atol=1e-6)
        if dtype == np.uint8:
            as_float = fit_region_to_square(photo.astype(np.float32) / 255.0, top, left, bottom, right, frame, offset, 64)
            assert torch.equal(framed, as_float[0])


def test_a_float_photo_in_range_is_kept_as_it_is():
    from lsqface.data.images import photo_array

    photo = np.random.default_rng(2).random((40, 30, 3)).astype(np.float32)
    assert photo_array(photo) is photo
    for bad in (np.nan, np.inf, 1.5):
        spoiled = photo.copy()
        spoiled[3, 4, 1] = bad
        with pytest.raises(ImageError):
            photo_array(spoiled)
    slightly_over = photo.copy()
    slightly_over[0, 0, 0] = 1.0005  # within read_image's tolerance: clipped in a copy
    kept = photo_array(slightly_over)
    assert kept is not slightly_over and kept[0, 0, 0] == 1.0

def test_image_folder(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(gradient_rgb(20, 30)).save(tmp_path / "b" / "deep" / "z.PNG")
    Image.fromarray(gradient_rgb(30, 20)).save(tmp_path / "a.jpg")
    Image.fromarray(gradient_rgb(30, 20)).save(tmp_path / ".hidden" / "x.jpg")
    (tmp_path / "readme.txt").write_text("not an image")
    files = list_image_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.jpg", "b/deep/z.PNG"]
    dataset = ImageFolder(tmp_path, size=32)
    assert len(dataset) == 2
    item = dataset[1]
    assert item["image"].shape == (3, 32, 32) and item["transform"].shape == (2, 3)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["image"].shape == (2, 3, 32, 32)
    (tmp_path / "b" / "empty").mkdir()
    with pytest.raises(ImageError, match="no images"):
        ImageFolder(tmp_path / "b" / "empty")
    with pytest.raises(ImageError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ConfigError, match="pad"):
        ImageFolder(tmp_path, mode="stretch")


def test_to_tensor_layout():
    array = np.random.default_rng(1).random((16, 17, 3)).astype(np.float32)
    tensor = to_tensor(array)
    assert tensor.shape == (3, 16, 17)
    assert tensor[2, 5, 7] == array[5, 7, 2]


def test_read_photo_keeps_8_bit_pixels_as_read_image_converts_them(tmp_path):
    """read_photo keeps an 8-bit photo as uint8 (a quarter of the memory); / 255 in float32 gives read_image's
    value, bit for bit, and so does photo_region on a part of it."""
    pixels = gradient_rgb(24, 40)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(pixels).convert("P", palette=Image.ADAPTIVE).save(tmp_path / "palette.png")
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", quality=90)
    for name in ("rgb.png", "grey.png", "palette.png", "photo.jpg"):
        photo, scale = read_photo(tmp_path / name)
        assert photo.dtype == np.uint8 and photo.shape == (24, 40, 3) and scale == (1.0, 1.0)
        assert np.array_equal(photo.astype(np.float32) / 255.0, read_image(tmp_path / name))
        assert torch.equal(photo_region(photo, 3, 5, 20, 31), to_tensor(read_image(tmp_path / name)[3:20, 5:31]))
    # 16 bits and alpha keep read_image's float32.
    Image.fromarray((pixels[..., 0].astype(np.uint16) * 257)).save(tmp_path / "deep.png")
    Image.fromarray(np.dstack([pixels, pixels[..., :1]]), "RGBA").save(tmp_path / "alpha.png")
    for name in ("deep.png", "alpha.png"):
        photo, _ = read_photo(tmp_path / name)
        assert photo.dtype == np.float32 and np.array_equal(photo, read_image(tmp_path / name))


def test_a_region_over_the_bound_is_box_averaged():
    assert [reduction_factor(pixels, 100) for pixels in (100, 101, 400, 401, 10_000)] == [1, 2, 2, 3, 10]
    photo = np.random.default_rng(2).integers(0, 256, (31, 45, 3), dtype=np.uint8)
    reduced = photo_region(photo, 1, 2, 30, 43, factor=3)
    # 29 x 41 pixels in 3 x 3 blocks: 9 x 13, the last 2 rows and 2 columns in no block.
    assert reduced.shape == (3, 9, 13) and reduced.dtype == torch.float32
    blocks = photo[1:28, 2:41].reshape(9, 3, 13, 3, 3).astype(np.float64).mean(axis=(1, 3)) / 255.0
    np.testing.assert_allclose(reduced.permute(1, 2, 0).numpy(), blocks, rtol=1e-6)
    floats = photo.astype(np.float32) / 255.0
    np.testing.assert_allclose(photo_region(floats, 1, 2, 30, 43, factor=3), reduced, rtol=1e-6)
