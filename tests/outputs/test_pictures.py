"""Pictures of an oracle reconstruction of a synthetic face placed inside a larger, non-square photo."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.errors import ImageError
from lsqface.outputs.pictures import (
    BACKGROUND,
    PICTURE_NAMES,
    contact_sheet,
    reconstruction_pictures,
    to_uint8,
    write_pictures,
)
from lsqface.reconstruct import reconstruct_from_maps

SIZE = 64
PHOTO_HEIGHT, PHOTO_WIDTH = 80, 112
TOP, LEFT = 10, 30  # where the synthetic face sits in the photo


@pytest.fixture(scope="module")
def scene(ict_uv_model):
    """A 64 px synthetic face pasted into an 80 x 112 photo; the network frame is the 64 px crop."""
    faces = generate_faces(ict_uv_model, [3], SyntheticConfig(size=SIZE, roll_range=150.0))
    photo = np.full((PHOTO_HEIGHT, PHOTO_WIDTH, 3), 0.5, np.float32)
    photo[TOP:TOP + SIZE, LEFT:LEFT + SIZE] = faces.image[0].permute(1, 2, 0).numpy()
    to_network = torch.tensor([[[1.0, 0.0, -LEFT], [0.0, 1.0, -TOP], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    reconstruction = reconstruct_from_maps(
        ict_uv_model, faces.image, faces.correspondence, faces.depth, faces.confidence,
        to_network=to_network, image_sizes=[(PHOTO_HEIGHT, PHOTO_WIDTH)],
    )
    pictures = reconstruction_pictures(reconstruction, 0, photo, texture_size=64)
    return faces, photo, reconstruction, pictures


def test_names_types_and_sizes(scene):
    _, _, _, pictures = scene
    assert tuple(pictures) == PICTURE_NAMES
    for name, picture in pictures.items():
        assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3, name
    for name in ("overlay", "reconstruction", "geometry", "landmarks"):
        assert pictures[name].shape == (PHOTO_HEIGHT, PHOTO_WIDTH, 3), name  # the photo's full resolution
    for name in ("correspondence", "depth"):
        assert pictures[name].shape == (SIZE, SIZE, 3), name  # the network frame
    assert pictures["confidence"].shape[0] == SIZE and pictures["confidence"].shape[1] > 2 * SIZE
    assert pictures["uv_photo"].shape == (64, 64, 3)


def test_mesh_is_drawn_where_the_face_is(scene):
    """The overlay differs from the photo exactly on the face's true silhouette, shifted into the photo."""
    faces, photo, _, pictures = scene
    truth = np.zeros((PHOTO_HEIGHT, PHOTO_WIDTH), bool)
    truth[TOP:TOP + SIZE, LEFT:LEFT + SIZE] = faces.confidence[0, 0].numpy() > 0.5
    for name in ("overlay", "reconstruction"):
        drawn = np.abs(pictures[name].astype(int) - to_uint8(photo).astype(int)).max(-1) > 2
        intersection = (drawn & truth).sum()
        assert intersection / (drawn | truth).sum() > 0.85, name
    # The geometry picture: plain background off the face, grey shading on it.
    geometry = pictures["geometry"]
    background = geometry[~truth].reshape(-1, 3)
    assert (np.abs(background.astype(int) - to_uint8(np.array(BACKGROUND))).max(-1) <= 1).mean() > 0.95
    face = geometry[ndimage.binary_erosion(truth, iterations=2)]
    assert (face.max(-1) - face.min(-1)).max() <= 1  # grey


def test_maps_are_shown_as_given(scene):
    faces, _, reconstruction, pictures = scene
    confidence = faces.confidence[0, 0].numpy()
    u, v = faces.correspondence[0].numpy()
    np.testing.assert_array_equal(pictures["correspondence"][..., 0], to_uint8(u * confidence))
    np.testing.assert_array_equal(pictures["correspondence"][..., 1], to_uint8(v * confidence))
    off_face = confidence < 0.5
    assert (pictures["depth"][off_face] == 0).all() and (pictures["depth"][~off_face].max(-1) > 0).all()
    # Near is bright: the nearest tenth of the face is brighter than the farthest tenth.
    depth = faces.depth[0, 0].numpy()
    brightness = pictures["depth"].astype(float).sum(-1)
    near, far = np.quantile(depth[~off_face], [0.1, 0.9])
    assert brightness[(~off_face) & (depth < near)].mean() > brightness[(~off_face) & (depth > far)].mean()
    assert (pictures["confidence"][:, :SIZE, 0] == to_uint8(confidence)).all()


def test_landmarks_are_drawn_at_their_positions(scene):
    _, photo, reconstruction, pictures = scene
    changed = np.abs(pictures["landmarks"].astype(int) - to_uint8(photo).astype(int)).max(-1) > 30
    for x, y in reconstruction.landmarks_5[0].numpy():
        row, column = int(y), int(x)
        assert changed[max(row - 3, 0):row + 4, max(column - 3, 0):column + 4].any()
    assert changed.mean() < 0.3


def test_point_cloud_shows_points(scene):
    _, _, _, pictures = scene
    cloud = pictures["point_cloud"]
    assert cloud.shape == (256, 256, 3)
    not_background = np.abs(cloud.astype(int) - to_uint8(np.array(BACKGROUND))).max(-1) > 2
    assert 0.05 < not_background.mean() < 0.8


def test_wrong_photo_size_is_refused(scene):
    _, photo, reconstruction, _ = scene
    with pytest.raises(ImageError):
        reconstruction_pictures(reconstruction, 0, photo[:, :100])


def test_contact_sheet_and_files(scene, tmp_path):
    _, _, _, pictures = scene
    sheet = contact_sheet(pictures, columns=4, tile=50, title_height=16)
    assert sheet.shape == (3 * (50 + 16), 4 * 50, 3) and sheet.dtype == np.uint8
    assert contact_sheet(pictures).shape == (3 * (256 + 20), 3 * 256, 3)
    paths = write_pictures(tmp_path / "out", "face", pictures)
    assert [path.name for path in paths] == [f"face_{name}.png" for name in PICTURE_NAMES]
    for path, picture in zip(paths, pictures.values()):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), picture)
    assert not list((tmp_path / "out").glob(".*tmp"))
