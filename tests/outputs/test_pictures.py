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
    FIT_PICTURES,
    PICTURE_NAMES,
    STATUS_COLOUR,
    batch_mesh_pictures,
    contact_sheet,
    mark_status,
    mesh_pictures,
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


def _interior(picture, margin):
    """The picture without its status banner (top) and border."""
    return picture[margin:-margin, margin:-margin]


def test_pictures_of_a_large_photo_are_drawn_at_a_bounded_size(scene):
    faces, photo, reconstruction, full = scene
    bounded = reconstruction_pictures(reconstruction, 0, photo, texture_size=64, max_side=56)
    for name in ("overlay", "reconstruction", "geometry", "landmarks"):
        assert bounded[name].shape == (PHOTO_HEIGHT // 2, PHOTO_WIDTH // 2, 3), name
    for name in ("correspondence", "depth", "confidence", "uv_photo", "point_cloud"):
        assert bounded[name].shape == full[name].shape, name
    # The mesh lands where the face is in the half-size photo: the truth's silhouette, halved.
    truth = np.zeros((PHOTO_HEIGHT, PHOTO_WIDTH), bool)
    truth[TOP:TOP + SIZE, LEFT:LEFT + SIZE] = faces.confidence[0, 0].numpy() > 0.5
    half = truth[::2, ::2]
    small_photo = np.asarray(Image.fromarray(to_uint8(photo)).resize((PHOTO_WIDTH // 2, PHOTO_HEIGHT // 2), Image.BILINEAR))
    drawn = np.abs(bounded["overlay"].astype(int) - small_photo.astype(int)).max(-1) > 2
    assert (drawn & half).sum() / (drawn | half).sum() > 0.8
    changed = np.abs(bounded["landmarks"].astype(int) - small_photo.astype(int)).max(-1) > 30
    for x, y in reconstruction.landmarks_5[0].numpy() / 2:
        assert changed[max(int(y) - 2, 0):int(y) + 3, max(int(x) - 2, 0):int(x) + 3].any()
    # No bound (None) keeps the photo's size.
    assert reconstruction_pictures(reconstruction, 0, photo, texture_size=64, max_side=None)["overlay"].shape[:2] == (
        PHOTO_HEIGHT, PHOTO_WIDTH)


def test_a_fit_that_is_not_a_face_is_marked_and_not_rendered(scene):
    import dataclasses

    _, photo, reconstruction, _ = scene
    failed = dataclasses.replace(reconstruction, status=["implausible"], face_like=[False],
                                 status_reason=["part of the mesh is behind the camera"])
    pictures = reconstruction_pictures(failed, 0, photo, texture_size=64)
    banner = 12
    for name in FIT_PICTURES:
        picture = pictures[name]
        assert (picture[-1] == STATUS_COLOUR).all() and (picture[:, 0] == STATUS_COLOUR).all(), name  # red border
        assert (picture[:banner // 2, picture.shape[1] // 2 + 20] == STATUS_COLOUR).all() or name == "uv_photo", name
    # Nothing of the mesh is drawn: the overlay is the photo, the geometry the plain background.
    np.testing.assert_array_equal(_interior(pictures["overlay"], banner)[:, :-banner],
                                  _interior(to_uint8(photo), banner)[:, :-banner])
    geometry = _interior(pictures["geometry"], banner)
    assert (np.abs(geometry.astype(int) - to_uint8(np.array(BACKGROUND))).max(-1) <= 1).all()
    # The maps are the network's, not the fit's: left unmarked.
    assert (pictures["depth"][-1] != STATUS_COLOUR).any()
    sheet = contact_sheet(pictures, status="implausible", reason="part of the mesh is behind the camera")
    assert (sheet[-1] == STATUS_COLOUR).all() and (sheet[:, -1] == STATUS_COLOUR).all()
    assert not (contact_sheet(pictures)[-1] == STATUS_COLOUR).all()


def test_a_face_like_fit_with_little_confidence_is_drawn_and_marked(scene):
    import dataclasses

    _, photo, reconstruction, full = scene
    doubtful = dataclasses.replace(reconstruction, status=["low_confidence"], face_like=[True],
                                   status_reason=["the network is confident on 2.0 % of its input"])
    pictures = reconstruction_pictures(doubtful, 0, photo, texture_size=64)
    assert (pictures["overlay"][-1] == STATUS_COLOUR).all()
    np.testing.assert_array_equal(_interior(pictures["overlay"], 14), _interior(full["overlay"], 14))


def test_a_mesh_behind_the_camera_draws_nothing(scene):
    import dataclasses

    _, photo, reconstruction, _ = scene
    vertices = reconstruction.vertices.clone()
    vertices[..., 2] = -vertices[..., 2]  # the face mirrored through the camera: x / z wraps around
    behind = dataclasses.replace(reconstruction, vertices=vertices)
    pictures = mesh_pictures(behind, 0, photo)
    np.testing.assert_array_equal(pictures["overlay"], to_uint8(photo))


def test_mark_status_keeps_the_size_and_fits_the_text():
    picture = np.full((40, 60, 3), 100, np.uint8)
    marked = mark_status(picture, "implausible", "a reason far too long to fit in sixty pixels of banner text")
    assert marked.shape == picture.shape and (marked[-1] == STATUS_COLOUR).all()
    assert (marked[20, 20] == 100).all()  # the middle is left alone
    bottom = mark_status(picture, "low_confidence", bottom=True)
    assert (bottom[-6, 30] != 100).any() and (bottom[6, 30] == 100).all()


def test_faces_drawn_together_are_drawn_as_one_by_one(ict_uv_model):
    """batch_mesh_pictures rasterises a batch in one call; each face's pictures are mesh_pictures' bit for bit."""
    import dataclasses

    faces = generate_faces(ict_uv_model, [5, 6, 7], SyntheticConfig(size=SIZE, roll_range=150.0))
    reconstruction = reconstruct_from_maps(ict_uv_model, faces.image, faces.correspondence, faces.depth,
                                           faces.confidence)
    # The middle face is not face-like: it is not rendered, together or alone.
    reconstruction = dataclasses.replace(reconstruction, face_like=[True, False, True])
    photos = [faces.image[index].permute(1, 2, 0).numpy() for index in range(3)]
    photos[2] = to_uint8(photos[2])  # a uint8 photo beside float ones
    together = batch_mesh_pictures(reconstruction, [2, 1, 0], [photos[2], photos[1], photos[0]])
    for position, index in enumerate([2, 1, 0]):
        alone = mesh_pictures(reconstruction, index, photos[index])
        assert together[position].keys() == alone.keys()
        for name in alone:
            np.testing.assert_array_equal(together[position][name], alone[name], err_msg=f"{index} {name}")
    assert (together[0]["overlay"] != to_uint8(photos[2])).any()  # the face-like faces are drawn


def test_faces_drawn_together_need_one_photo_each(scene):
    _, photo, reconstruction, _ = scene
    with pytest.raises(ImageError, match="one photo per face"):
        batch_mesh_pictures(reconstruction, [0], [photo, photo])
