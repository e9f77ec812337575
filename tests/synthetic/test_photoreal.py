"""Whole-head photographs: deterministic, and true maps that hold for the fitted face where it is seen."""

import dataclasses

import pytest
import torch

from lsqface.morphable.uv_model import sample_shape
from lsqface.synthetic.photoreal import PhotoConfig

CONFIG = PhotoConfig(size=48)


@pytest.fixture(scope="module")
def faces(photo_generator):
    return photo_generator.generate([0, 1, 2, 3], CONFIG)


def test_same_seed_same_photo(photo_generator, faces):
    again = photo_generator.generate([2, 0], CONFIG)
    torch.testing.assert_close(again.image[1], faces.image[0])
    torch.testing.assert_close(again.correspondence[0], faces.correspondence[2])
    assert faces.image.shape == (4, 3, 48, 48) and faces.image.min() >= 0 and faces.image.max() <= 1


def test_true_maps_agree_with_the_camera(ict_uv_model, faces):
    """Where the fitted face is seen, its model point at the true correspondence projects to the pixel."""
    errors = []
    for b in range(4):
        rows, columns = torch.nonzero(faces.confidence[b, 0] > 0, as_tuple=True)
        uv = faces.correspondence[b, :, rows, columns].T[None]
        mean, basis = sample_shape(ict_uv_model, uv)
        points = (mean + basis @ torch.cat([faces.identity[b], faces.expression[b]]).float())[0].double()
        camera = points @ faces.rotation[b].T + faces.translation[b]
        projected = camera @ faces.intrinsics[b].T
        centres = torch.stack([columns, rows], -1).double() + 0.5
        errors.append((projected[:, :2] / projected[:, 2:] - centres).norm(dim=-1))
    errors = torch.cat(errors)
    # Maps are averaged over 2 x 2 rendered samples: within a fraction of a pixel, worse only at creases.
    assert len(errors) > 500 and errors.median() < 0.3 and torch.quantile(errors, 0.9) < 1.0


def test_the_head_around_the_face_is_drawn_but_is_not_face(faces):
    drawn_not_face = (faces.image.std(dim=1) >= 0)  # every pixel has a colour; the head covers more than the face
    assert drawn_not_face.all()
    face_share = faces.confidence.mean()
    assert 0.03 < face_share < 0.5


def test_occluders_only_remove_face_pixels(photo_generator):
    clean = photo_generator.generate([7, 8, 9, 10], dataclasses.replace(CONFIG, occluders=0.0))
    occluded = photo_generator.generate([7, 8, 9, 10], dataclasses.replace(CONFIG, occluders=1000.0))
    assert (occluded.confidence <= clean.confidence).all()
    assert occluded.confidence.sum() < clean.confidence.sum()


def test_the_other_look_patches_only_remove_face_pixels(photo_generator):
    from lsqface.synthetic.photoreal import other_look

    plain = dataclasses.replace(CONFIG, effects=None, occluders=0.0)
    other = dataclasses.replace(other_look(plain), effects=None)
    patched = photo_generator.generate([11, 12, 13, 14], dataclasses.replace(other, patch_occluders=1.0))
    clean = photo_generator.generate([11, 12, 13, 14], dataclasses.replace(other, patch_occluders=0.0))
    assert (patched.confidence <= clean.confidence).all() and patched.confidence.sum() < clean.confidence.sum()
    # Another shading: the same faces rendered with spherical harmonics look different.
    shaded = photo_generator.generate([11, 12, 13, 14], dataclasses.replace(other, shading="sh", patch_occluders=0.0))
    assert (shaded.image - clean.image).abs().mean() > 0.01
    torch.testing.assert_close(shaded.confidence, clean.confidence)


def test_sun_shadows_only_darken_and_leave_the_truth_alone(photo_generator, monkeypatch):
    """With shadows on, the images are those of the same sun with nothing in its way, darker where something
    is; the true maps and coefficients are those of the images without the sun (its draws are its own)."""
    import lsqface.synthetic.photoreal as photoreal

    plain = dataclasses.replace(CONFIG, effects=None)
    seeds = [21, 22, 23, 24]
    without = photo_generator.generate(seeds, plain)
    sunlit = photo_generator.generate(seeds, dataclasses.replace(plain, shadows=1.0))
    for name in ("correspondence", "depth", "confidence", "identity", "landmarks_5"):
        torch.testing.assert_close(getattr(sunlit, name), getattr(without, name), rtol=0, atol=0)
    assert (sunlit.image - without.image).abs().mean() > 0.01

    monkeypatch.setattr(photoreal, "light_visibility", lambda vertices, triangles, direction, points, **_:
                        torch.ones(points.shape[:2]))
    unblocked = photo_generator.generate(seeds, dataclasses.replace(plain, shadows=1.0))
    assert (sunlit.image <= unblocked.image + 1e-6).all()
    face = sunlit.confidence.expand_as(sunlit.image) > 0
    darker = (unblocked.image - sunlit.image)[face]
    assert (darker > 0.02).float().mean() > 0.02  # a visible share of the face lies in a cast shadow
