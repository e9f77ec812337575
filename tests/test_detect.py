"""The optional face detector (dlib HOG at eight rotations)."""

import builtins
import math

import numpy as np
import pytest
from PIL import Image

from lsqface.data.images import read_image
from lsqface.detect import DetectorError, detect_faces

dlib = pytest.importorskip("dlib", reason="the optional detector needs: pip install 'lsqface[detect]'")


@pytest.fixture(scope="module")
def grace_hopper():
    import matplotlib.cbook

    return read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _centre(box):
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2])


def test_finds_the_one_face(grace_hopper):
    boxes = detect_faces(grace_hopper)
    assert len(boxes) == 1
    # Her face is centred near (270, 235) in the 512 x 600 photo and about 200 px wide.
    assert np.linalg.norm(_centre(boxes[0]) - [270, 235]) < 30 and 150 < boxes[0][2] < 260


@pytest.mark.parametrize("angle", [90, 135, 200])
def test_finds_the_face_at_any_in_plane_rotation(grace_hopper, angle):
    picture = Image.fromarray((grace_hopper * 255).astype(np.uint8))
    rotated = np.asarray(picture.rotate(angle, resample=Image.BILINEAR, expand=True)).astype(np.float32) / 255
    boxes = detect_faces(rotated)
    assert len(boxes) >= 1
    # Where the upright face centre lands after PIL's counter-clockwise rotation about the centre.
    offset = np.array([270, 235]) - np.array([512, 600]) / 2
    radians = math.radians(angle)
    turned = np.array([[math.cos(radians), math.sin(radians)], [-math.sin(radians), math.cos(radians)]]) @ offset
    expected = turned + np.array(rotated.shape[1::-1]) / 2
    assert min(np.linalg.norm(_centre(box) - expected) for box in boxes) < 40


def test_no_face_in_noise():
    noise = np.random.default_rng(0).random((300, 300, 3)).astype(np.float32)
    assert detect_faces(noise) == []


def test_missing_dlib_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_dlib(name, *args, **kwargs):
        if name == "dlib":
            raise ImportError("no dlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dlib)
    with pytest.raises(DetectorError, match=r"lsqface\[detect\]"):
        detect_faces(np.zeros((64, 64, 3), np.float32))
