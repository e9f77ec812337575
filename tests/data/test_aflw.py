"""AFLW (aflw_release-2) and MTFL read from tiny copies of their layouts."""

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from lsqface.data.aflw import AFLW, MTFLTest, read_aflw_split, read_mtfl_annotations
from lsqface.errors import DatasetError


def landmarks_xy(k):
    return np.array([[8 + k, 10], [20, 11 + k], [14, 16], [9, 22 + k], [19, 23]], dtype=float)


def write_aflw_release(root, n_train=3, n_test=2):
    (root / "output" / "sub").mkdir(parents=True)
    for split, count in (("train", n_train), ("test", n_test)):
        names, gt, hw = [], [], []
        for k in range(count):
            name = f"sub/{split}_{k}.jpg"
            height, width = 30 + k, 28
            Image.fromarray(np.full((height, width, 3), 30 * k, np.uint8)).save(root / "output" / name, quality=95)
            names.append(name)
            gt.append(landmarks_xy(k)[:, ::-1])  # stored (y, x), as in the release
            hw.append([height, width])
        (root / f"aflw_{split}_images.txt").write_text("\n".join(names) + "\n")
        savemat(root / f"aflw_{split}_keypoints.mat", {"gt": np.array(gt), "hw": np.array(hw, dtype=float)})


def test_aflw_release_layout(tmp_path):
    write_aflw_release(tmp_path)
    names, landmarks, sizes = read_aflw_split(tmp_path, "train")
    assert names == ["sub/train_0.jpg", "sub/train_1.jpg", "sub/train_2.jpg"]
    np.testing.assert_allclose(landmarks[2], landmarks_xy(2) + 0.5)  # swapped to (x, y), pixel centres
    np.testing.assert_allclose(sizes[1], [31, 28])
    test = AFLW(tmp_path, "test")
    assert len(test) == 2
    item = test[1]
    assert item["image"].shape == (3, 31, 28)
    np.testing.assert_allclose(item["landmarks"].numpy(), landmarks_xy(1) + 0.5)
    np.testing.assert_allclose(item["image"].numpy(), 30 / 255.0, atol=2 / 255.0)
    assert AFLW(tmp_path, "test", size=16)[0]["image"].shape == (3, 16, 16)


def test_aflw_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        AFLW(tmp_path / "nowhere")
    write_aflw_release(tmp_path)
    (tmp_path / "aflw_test_keypoints.mat").unlink()
    with pytest.raises(DatasetError, match="aflw_test_keypoints.mat does not exist"):
        AFLW(tmp_path, "test")
    assert len(AFLW(tmp_path, "train")) == 3
    (tmp_path / "aflw_train_images.txt").unlink()
    with pytest.raises(DatasetError, match="aflw_train_images.txt"):
        AFLW(tmp_path, "train")
    with pytest.raises(DatasetError, match="split"):
        AFLW(tmp_path, "val")


def test_aflw_disagreeing_files(tmp_path):
    write_aflw_release(tmp_path)
    (tmp_path / "aflw_test_images.txt").write_text("sub/test_0.jpg\n")
    with pytest.raises(DatasetError, match="lists 1 images but"):
        AFLW(tmp_path, "test")
    savemat(tmp_path / "aflw_test_keypoints.mat", {"gt": np.zeros((1, 68, 2)), "hw": np.zeros((1, 2))})
    with pytest.raises(DatasetError, match="shape"):
        AFLW(tmp_path, "test")


def write_mtfl(root):
    folder = root / "MTFL" / "AFLW"
    folder.mkdir(parents=True)
    lines = []
    for k in range(3):
        Image.fromarray(np.full((40, 40, 3), 50 * k, np.uint8)).save(folder / f"{k}-image{k:05d}.jpg")
        points = landmarks_xy(k) + 1  # MATLAB 1-based
        coordinates = " ".join(f"{v:g}" for v in np.concatenate([points[:, 0], points[:, 1]]))
        lines.append(f"AFLW\\{k}-image{k:05d}.jpg {coordinates} 1 2 2 3")
    (root / "MTFL" / "testing.txt").write_text("\n".join(lines) + "\n")


def test_mtfl_test_layout(tmp_path):
    write_mtfl(tmp_path)
    names, landmarks = read_mtfl_annotations(tmp_path / "MTFL" / "testing.txt")
    assert names[1] == "AFLW/1-image00001.jpg"
    # 1-based indices -> 0-based (- 1) -> pixel centres (+ 0.5).
    np.testing.assert_allclose(landmarks[1], landmarks_xy(1) + 0.5)
    for root in (tmp_path, tmp_path / "MTFL"):
        dataset = MTFLTest(root)
        assert len(dataset) == 3
        np.testing.assert_allclose(dataset[2]["landmarks"].numpy(), landmarks_xy(2) + 0.5)
        assert dataset[2]["image"].shape == (3, 40, 40)


def test_mtfl_missing_and_malformed(tmp_path):
    with pytest.raises(DatasetError, match="testing.txt does not exist"):
        MTFLTest(tmp_path)
    (tmp_path / "testing.txt").write_text("AFLW\\a.jpg 1 2 3\n")
    with pytest.raises(DatasetError, match="fields"):
        MTFLTest(tmp_path)
