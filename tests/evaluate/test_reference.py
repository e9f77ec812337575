"""dlib's 68-point predictor as reference landmarks: the 68 -> 5 reduction, the real predictor, missing dlib."""

import importlib.util

import numpy as np
import pytest

from lsqface.errors import ConfigError
from lsqface.evaluate.reference import five_from_sixty_eight


def _needs_dlib_models():
    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models is not installed (pip install 'lsqface[identity]')")


def test_five_from_sixty_eight_takes_celeba_order_from_hand_computed_means():
    k = np.arange(68, dtype=np.float64)
    points = np.stack([k, k ** 2], axis=1)  # point k at (k, k^2): means of squares are not squares of means
    expected = np.array([
        [38.5, (36**2 + 37**2 + 38**2 + 39**2 + 40**2 + 41**2) / 6],  # image-left eye: 36..41 -> 8911 / 6
        [44.5, (42**2 + 43**2 + 44**2 + 45**2 + 46**2 + 47**2) / 6],  # image-right eye: 42..47 -> 11899 / 6
        [30.0, 900.0],  # nose tip
        [48.0, 2304.0],  # image-left mouth corner
        [54.0, 2916.0],  # image-right mouth corner
    ])
    assert np.allclose(expected[0, 1], 8911 / 6) and np.allclose(expected[1, 1], 11899 / 6)
    assert np.allclose(five_from_sixty_eight(points), expected)
    # Batched: (B, 68, 2) -> (B, 5, 2), each image on its own.
    batch = five_from_sixty_eight(np.stack([points, points + [3.0, -1.0]]))
    assert batch.shape == (2, 5, 2) and np.allclose(batch[1], expected + [3.0, -1.0])
    with pytest.raises(ValueError):
        five_from_sixty_eight(points[:67])


def test_the_real_predictor_places_plausible_landmarks_on_grace_hopper():
    _needs_dlib_models()
    from lsqface.data.images import read_image
    from lsqface.evaluate.reference import dlib_reference
    from lsqface.outputs.batch import demo_photo

    image = read_image(demo_photo())
    reference = dlib_reference()
    points = reference(image)
    assert points.shape == (5, 2) and np.isfinite(points).all()
    left_eye, right_eye, nose, left_mouth, right_mouth = points
    # Image y grows downwards: eyes above the nose above the mouth; "left" is the image's left.
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    inter_ocular = np.linalg.norm(right_eye - left_eye)
    assert 0.08 * image.shape[1] < inter_ocular < 0.4 * image.shape[1]
    # A grey square has no face: None, not a crash.
    assert reference(np.full((80, 80, 3), 0.5)) is None


def test_a_folder_benchmark_skips_photos_without_a_face(tmp_path):
    _needs_dlib_models()
    import shutil

    from PIL import Image

    from lsqface.data.images import read_image
    from lsqface.evaluate.reference import dlib_folder_benchmark, dlib_reference
    from lsqface.outputs.batch import demo_photo

    shutil.copy(demo_photo(), tmp_path / "grace.jpg")
    Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)).save(tmp_path / "grey.png")
    (tmp_path / "notes.png").write_text("not an image")
    paths, names, landmarks, skipped = dlib_folder_benchmark(tmp_path)
    assert names == ["grace.jpg"] and paths == [tmp_path / "grace.jpg"] and landmarks.shape == (1, 5, 2)
    assert np.allclose(landmarks[0], dlib_reference()(read_image(tmp_path / "grace.jpg")))
    assert set(skipped) == {"grey.png", "notes.png"} and "no face" in skipped["grey.png"]


def test_missing_face_recognition_models_is_a_config_error_saying_what_to_install(monkeypatch):
    from lsqface.evaluate.report import check_request

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "face_recognition_models" else real(name, *args))
    with pytest.raises(ConfigError, match=r"pip install 'lsqface\[identity\]'"):
        check_request(folder_images="photos", folder_landmarks="dlib")
