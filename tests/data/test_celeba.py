"""CelebA and MAFL read from tiny copies of their published layouts."""

import numpy as np
import pytest
import torch
from PIL import Image

import lsqface.data
import lsqface.data.images
from lsqface.data.celeba import MAFL, THEWLIS_CROP, CelebA, find_celeba, read_celeba_landmarks
from lsqface.errors import DatasetError, ImageError, LsqfaceError

HEADER = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
NAMES = [f"{k:06d}.jpg" for k in range(1, 6)]
PARTITION = [0, 0, 1, 2, 2]


def landmarks_of(k):
    return np.array([[20 + k, 30], [40 + k, 31], [30, 40 + k], [22, 50], [38 + k, 51]], dtype=float)


def write_celeba(root, official=False, with_partition=True, with_mafl=True):
    images = root / ("Img" if official else "") / "img_align_celeba"
    anno = root / ("Anno" if official else "")
    evaluation = root / ("Eval" if official else "")
    for folder in (images, anno, evaluation):
        folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, name in enumerate(NAMES):
        pixels = np.full((36, 28, 3), 10 * k, np.uint8)  # tiny 28 x 36 stand-ins for the 178 x 218 images
        Image.fromarray(pixels).save(images / name, quality=95)
        rows.append(name + "  " + " ".join(f"{v:g}" for v in landmarks_of(k).ravel()))
    (anno / "list_landmarks_align_celeba.txt").write_text(f"{len(NAMES)}\n{HEADER}\n" + "\n".join(rows) + "\n")
    if with_partition:
        (evaluation / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(NAMES, PARTITION)))
    if with_mafl:
        (root / "MAFL").mkdir()
        (root / "MAFL" / "training.txt").write_text("000001.jpg\n000003.jpg\n000004.jpg\n")
        (root / "MAFL" / "testing.txt").write_text("000005.jpg\n000002.jpg\n")


@pytest.mark.parametrize("official", [False, True])
def test_layouts_and_splits(tmp_path, official):
    write_celeba(tmp_path, official=official)
    layout = find_celeba(tmp_path)
    assert layout.images.name == "img_align_celeba"
    assert [CelebA(tmp_path, split).names for split in ("train", "val", "test")] == [NAMES[:2], NAMES[2:3], NAMES[3:]]
    assert len(CelebA(tmp_path, "all")) == 5
    assert MAFL(tmp_path, "train").names == ["000001.jpg", "000003.jpg", "000004.jpg"]
    assert MAFL(tmp_path, "test").names == ["000005.jpg", "000002.jpg"]  # the list's order


def test_items_landmarks_and_pixels(tmp_path):
    write_celeba(tmp_path)
    item = MAFL(tmp_path, "test")[0]  # 000005.jpg, k = 4
    assert item["image"].shape == (3, 36, 28)
    # CelebA's 0-based pixel indices become the centres of those pixels.
    np.testing.assert_allclose(item["landmarks"].numpy(), landmarks_of(4) + 0.5)
    np.testing.assert_allclose(item["image"].numpy(), 40 / 255.0, atol=2 / 255.0)
    resized = CelebA(tmp_path, "all", size=16, mode="crop")[4]
    assert resized["image"].shape == (3, 16, 16)
    # 28 x 36 -> 16 x 21 (rounded, so y scales by 21/36), then the centre 16 rows: rows 3..18 (floor of -5/2 = -3).
    scale = np.array([16 / 28, 21 / 36])
    expected = (landmarks_of(4) + 0.5) * scale - np.array([0.0, 3.0])
    np.testing.assert_allclose(resized["landmarks"].numpy(), expected, atol=1e-5)
    batch = next(iter(torch.utils.data.DataLoader(CelebA(tmp_path, "all", size=16), batch_size=5)))
    assert batch["image"].shape == (5, 3, 16, 16) and batch["landmarks"].shape == (5, 5, 2)


def test_kaggle_nesting(tmp_path):
    write_celeba(tmp_path)
    (tmp_path / "img_align_celeba").rename(tmp_path / "inner")
    (tmp_path / "img_align_celeba").mkdir()
    (tmp_path / "inner").rename(tmp_path / "img_align_celeba" / "img_align_celeba")
    assert find_celeba(tmp_path).images == tmp_path / "img_align_celeba" / "img_align_celeba"
    assert len(CelebA(tmp_path, "train")) == 2


def test_missing_annotation_files(tmp_path):
    write_celeba(tmp_path, with_partition=False, with_mafl=False)
    with pytest.raises(DatasetError, match="list_eval_partition.txt"):
        CelebA(tmp_path, "train")
    assert len(CelebA(tmp_path, "all")) == 5
    with pytest.raises(DatasetError, match="MAFL"):
        MAFL(tmp_path, "test")
    (tmp_path / "list_landmarks_align_celeba.txt").unlink()
    with pytest.raises(LsqfaceError, match="list_landmarks_align_celeba.txt"):
        CelebA(tmp_path, "all")
    with pytest.raises(DatasetError, match="does not exist"):
        CelebA(tmp_path / "nowhere")


def test_malformed_landmark_file(tmp_path):
    path = tmp_path / "list_landmarks_align_celeba.txt"
    path.write_text(f"3\n{HEADER}\n000001.jpg 1 2 3 4 5 6 7 8 9 10\n")
    with pytest.raises(DatasetError, match="announces 3 images but lists 1"):
        read_celeba_landmarks(path)
    path.write_text(f"1\n{HEADER}\n000001.jpg 1 2 3\n")
    with pytest.raises(DatasetError, match="fields"):
        read_celeba_landmarks(path)
    path.write_text("1\nx y\n000001.jpg 1 2 3 4 5 6 7 8 9 10\n")
    with pytest.raises(DatasetError, match="header"):
        read_celeba_landmarks(path)


def test_mafl_name_without_landmarks(tmp_path):
    write_celeba(tmp_path)
    (tmp_path / "MAFL" / "testing.txt").write_text("000009.jpg\n")
    with pytest.raises(DatasetError, match="000009.jpg"):
        MAFL(tmp_path, "test")


def test_bad_split(tmp_path):
    write_celeba(tmp_path)
    with pytest.raises(DatasetError, match="split"):
        CelebA(tmp_path, "validation")
    with pytest.raises(DatasetError, match="split"):
        MAFL(tmp_path, "val")


def test_crop_box_then_resize(tmp_path):
    write_celeba(tmp_path)
    # Give image 000002.jpg a structure: column index in red, row index in green.
    rows, cols = np.mgrid[0:36, 0:28]
    pixels = np.stack([cols * 8, rows * 7, np.zeros_like(rows)], axis=2).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img_align_celeba" / "000002.jpg", quality=100)
    item = CelebA(tmp_path, "all", crop_box=(2, 5, 20, 34))[1]  # rows 5..38: the last 3 are outside -> black
    assert item["image"].shape == (3, 34, 20)
    np.testing.assert_allclose(item["image"][0, 0, :].numpy() * 255, (np.arange(20) + 2) * 8, atol=4)
    np.testing.assert_allclose(item["image"][1, :31, 0].numpy() * 255, (np.arange(31) + 5) * 7, atol=4)
    assert item["image"][:, 31:].abs().max() < 0.01
    np.testing.assert_allclose(item["landmarks"].numpy(), landmarks_of(1) + 0.5 - [2, 5], atol=1e-6)
    resized = CelebA(tmp_path, "all", size=10, mode="pad", crop_box=(2, 5, 20, 20))[1]
    expected = (landmarks_of(1) + 0.5 - [2, 5]) * 0.5
    np.testing.assert_allclose(resized["landmarks"].numpy(), expected, atol=1e-6)
    with pytest.raises(LsqfaceError, match="crop_box"):
        CelebA(tmp_path, "all", crop_box=(0, 0, 0, 10))


@pytest.mark.parametrize("crop_box, size, mode", [(None, None, "crop"), ((10, 20, 16, 16), None, "crop"),
                                                  ((10, 20, 16, 16), 10, "pad"), (None, 16, "crop"), ((1, 3, 26, 30), 40, "pad")])
def test_landmark_sits_on_its_annotated_pixel(tmp_path, crop_box, size, mode):
    # Image 000003.jpg (k = 2) gets one bright pixel at its first annotated (column, row) = (22, 30): in every
    # returned image the landmark must be that pixel's centroid (pixel centres at j + 0.5, i + 0.5).
    write_celeba(tmp_path)
    pixels = np.zeros((36, 28, 3), np.uint8)
    columns, rows = landmarks_of(2).astype(int).T
    pixels[rows[0], columns[0]] = 255
    Image.fromarray(pixels).save(tmp_path / "img_align_celeba" / "000003.jpg", format="PNG")  # lossless
    item = CelebA(tmp_path, "all", size=size, mode=mode, crop_box=crop_box)[2]
    weights = item["image"][0].double()
    ys, xs = torch.meshgrid(torch.arange(weights.shape[0], dtype=torch.float64) + 0.5,
                            torch.arange(weights.shape[1], dtype=torch.float64) + 0.5, indexing="ij")
    centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum().item()
    # Resampling moves a single pixel's centroid a little (antialiased downscaling by a non-integer
    # factor: up to 0.03 pixels; bilinear upscaling: up to 0.06); the old convention was off by 0.19 here.
    tolerance = 1e-9 if size is None else 0.04 if item["transform"][0, 0] <= 1 else 0.08
    np.testing.assert_allclose(item["landmarks"][0].numpy(), centroid, atol=tolerance + 1e-5)


def test_thewlis_crop_keeps_rows_30_to_207():
    left, top, width, height = THEWLIS_CROP
    assert (left, top, width, height) == (0, 30, 178, 178)  # image[30:208, 0:178] of a 178 x 218 image


def test_dataset_error_lives_in_errors():
    assert lsqface.data.DatasetError is DatasetError is lsqface.data.images.DatasetError
    assert issubclass(DatasetError, ImageError) and DatasetError.__doc__
