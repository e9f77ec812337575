"""The photo texture, checked against the true colour of synthetic faces computed in UV space."""

import numpy as np
import pytest
import torch

from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.errors import ImageError
from lsqface.lighting.sh import sh_shading
from lsqface.outputs.texture import photo_texture, uv_vertices
from lsqface.reconstruct import reconstruct_from_maps
from lsqface.render.interpolate import interpolate, vertex_normals
from lsqface.render.rasterize import rasterize

SIZE = 128


@pytest.fixture(scope="module")
def yawed_faces(ict_uv_model):
    """Two faces without albedo detail (their colour is then known per vertex), turned up to 70 degrees."""
    config = SyntheticConfig(size=128, yaw_range=70.0, albedo_detail=0.0)
    faces = generate_faces(ict_uv_model, [0, 1], config)
    reconstruction = reconstruct_from_maps(ict_uv_model, faces.image, faces.correspondence, faces.depth, faces.confidence)
    return faces, reconstruction


def true_texture(uv_model, faces, index):
    """Per texel: the true colour albedo x SH shading, and whether the true surface faces the camera."""
    model = uv_model.model
    vertices = faces.vertices[index:index + 1]
    triangles = torch.as_tensor(model.triangles, dtype=torch.int64)
    albedo = torch.as_tensor(model.albedo_mean) + torch.as_tensor(model.albedo_basis) @ faces.albedo[index]
    normals = vertex_normals(vertices, triangles)
    fragments = rasterize(uv_vertices(uv_model.vertex_uv, SIZE), triangles, SIZE, SIZE)
    values = interpolate(torch.cat([albedo[None], normals, vertices], -1), fragments, None, triangles)[0]
    unit_normals = torch.nn.functional.normalize(values[..., 3:6], dim=-1)
    shading = sh_shading(unit_normals, faces.lighting[index][None, None]).clamp_min(0.0)
    colour = (values[..., 0:3].clamp(0, 1) * shading).clamp(0, 1)
    towards_camera = torch.nn.functional.normalize(-values[..., 6:9], dim=-1)
    cosine = (unit_normals * towards_camera).sum(-1)
    return colour.numpy(), cosine.numpy(), fragments.mask[0].numpy()


@pytest.fixture(scope="module")
def textures(ict_uv_model, yawed_faces):
    """Per face: (texture, visible) from the photo and (true colour, cosine, covered) from the truth."""
    faces, reconstruction = yawed_faces
    results = []
    for index in range(2):
        photo = faces.image[index].permute(1, 2, 0).numpy()
        results.append((photo_texture(reconstruction, index, photo, size=SIZE), true_texture(ict_uv_model, faces, index)))
    return results


def test_visible_texels_have_the_true_colour(textures):
    for (texture, visible), (truth, cosine, covered) in textures:
        assert texture.shape == (SIZE, SIZE, 3) and visible.shape == (SIZE, SIZE)
        # Away from grazing angles a texel is sampled from a well-resolved part of the photo.
        frontal = visible & (cosine > 0.5)
        assert frontal.sum() > 0.3 * covered.sum()
        error = np.abs(texture[frontal] - truth[frontal]).max(-1)
        assert np.median(error) < 0.02, np.median(error)
        assert np.quantile(error, 0.9) < 0.06, np.quantile(error, 0.9)


def test_far_side_of_a_turned_face_is_invisible(yawed_faces, textures):
    faces, reconstruction = yawed_faces
    index = int(faces.pose[:, 0].abs().argmax())
    assert abs(float(faces.pose[index, 0])) > 40.0  # really turned
    photo = faces.image[index].permute(1, 2, 0).numpy()
    (texture, visible), (_, cosine, covered) = textures[index]
    away = covered & (cosine < -0.1)
    assert away.sum() > 0.1 * covered.sum()
    assert not visible[away].any()
    # Hidden texels take the fitted colour, not the photo's background.
    fitted, _ = photo_texture(reconstruction, index, np.zeros_like(photo), size=SIZE)
    np.testing.assert_allclose(texture[away], fitted[away])
    assert visible[covered & (cosine > 0.5)].mean() > 0.95


def test_texture_fills_outside_the_chart_and_checks_the_photo_size(yawed_faces):
    faces, reconstruction = yawed_faces
    photo = faces.image[0].permute(1, 2, 0).numpy()
    texture, visible = photo_texture(reconstruction, 0, photo, size=64)
    assert texture.shape == (64, 64, 3) and texture.dtype == np.float32
    assert np.isfinite(texture).all() and (texture >= 0).all() and (texture <= 1).all()
    # No black holes outside the chart: every texel is filled from the nearest chart texel.
    assert (texture.max(-1) > 0).all()
    with pytest.raises(ImageError):
        photo_texture(reconstruction, 0, photo[:100], size=64)


def test_cached_texels_interpolate_as_the_rasteriser_does(ict_uv_model, yawed_faces):
    """The texture's rasterisation is made once per layout and size (uv_texels); reading the fitted
    surface through it gives what rasterising and interpolating every time gave."""
    from lsqface.outputs.texture import uv_texels

    _, reconstruction = yawed_faces
    triangles = reconstruction.triangles
    covered, corners, weights = uv_texels(ict_uv_model.vertex_uv, triangles, SIZE)
    assert uv_texels(ict_uv_model.vertex_uv, triangles, SIZE)[1] is corners  # cached
    attributes = torch.cat([reconstruction.vertices, reconstruction.normals], -1)[:1]
    fragments = rasterize(uv_vertices(ict_uv_model.vertex_uv, SIZE), triangles, SIZE, SIZE)
    expected = interpolate(attributes, fragments, None, triangles)[0][fragments.mask[0]]
    assert torch.equal(covered, fragments.mask[0])
    torch.testing.assert_close((attributes[0][corners] * weights[..., None]).sum(1), expected, rtol=1e-9, atol=1e-9)


def test_a_large_photo_is_sampled_only_where_the_face_is(yawed_faces, monkeypatch):
    """Over FULL_FLOAT_PIXELS the photo is converted only inside the box its visible texels reach (from uint8
    as it is, box-averaged too where that box is over the bound): the texture is the whole photo's."""
    import lsqface.data.images as images

    faces, reconstruction = yawed_faces
    photo = (faces.image[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    whole, visible = photo_texture(reconstruction, 0, photo, size=64)
    regions = []
    convert = images.photo_region

    def photo_region(*args):
        regions.append(args[1:])
        return convert(*args)

    monkeypatch.setattr(images, "photo_region", photo_region)
    monkeypatch.setattr(images, "FULL_FLOAT_PIXELS", 128 * 128 - 1)
    cropped, cropped_visible = photo_texture(reconstruction, 0, photo, size=64)
    (top, left, bottom, right, factor), = regions
    assert factor == 1 and (bottom - top) * (right - left) < 0.8 * 128 * 128
    assert np.array_equal(cropped_visible, visible)
    np.testing.assert_allclose(cropped, whole, atol=1e-5)
    monkeypatch.setattr(images, "FULL_FLOAT_PIXELS", 1000)
    reduced, _ = photo_texture(reconstruction, 0, photo, size=64)
    # Three times coarser (a 128-pixel face in blocks of 3 x 3): blurred, not moved.
    assert regions[-1][-1] == 3 and np.abs(reduced - whole)[visible].mean() < 0.05


def test_the_depth_rendered_around_the_face_is_the_whole_photos(yawed_faces, monkeypatch):
    """The visibility test renders only the window the mesh can cover, shifted by whole pixels: the same
    visible texels and texture, bit for bit, as rendering the whole photo; and the photo is sampled only
    inside the box of the visible texels, within 1e-6 of sampling the whole photo (float32 grid)."""
    import torch.nn.functional as F

    import lsqface.outputs.texture as texture_module

    faces, reconstruction = yawed_faces
    photo = np.zeros((300, 400, 3), np.float32)  # the face's 128 pixels inside a larger photo
    photo[100:228, 150:278] = faces.image[0].permute(1, 2, 0).numpy()
    placed = dataclasses_replace_frame(reconstruction, (300, 400), shift=(150.0, 100.0))
    windowed = photo_texture(placed, 0, photo, size=64)
    windows = []
    drawn_window = texture_module._drawn_window

    def whole_photo(image_vertices, height, width):
        windows.append(drawn_window(image_vertices, height, width))
        return (0, 0), (width, height)

    monkeypatch.setattr(texture_module, "_drawn_window", whole_photo)
    whole = photo_texture(placed, 0, photo, size=64)
    (left, top), (right, bottom) = windows[0]
    assert (right - left) * (bottom - top) < 0.2 * 300 * 400  # the window is the face's
    assert np.array_equal(windowed[1], whole[1]) and windowed[1].any()
    np.testing.assert_array_equal(windowed[0], whole[0])

    points = torch.tensor([[160.2, 110.7], [270.5, 220.25], [200.0, 150.0]], dtype=torch.float64)
    sampled = texture_module._sample_photo(photo, points, torch.tensor([True, True, False]))
    grid = (points / torch.tensor([400.0, 300.0], dtype=torch.float64) * 2 - 1).float()
    expected = F.grid_sample(torch.from_numpy(photo).permute(2, 0, 1)[None], grid[None, None], mode="bilinear",
                             padding_mode="border", align_corners=False)[0, :, 0].T
    torch.testing.assert_close(sampled[:2], expected[:2], rtol=0, atol=1e-6)


def dataclasses_replace_frame(reconstruction, image_size, shift):
    """The reconstruction as if its photo were ``image_size`` with the original picture at ``shift`` (x, y)."""
    import dataclasses

    translate = torch.tensor([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return dataclasses.replace(reconstruction, intrinsics=translate @ reconstruction.intrinsics.double(),
                               image_sizes=[image_size] * len(reconstruction))
