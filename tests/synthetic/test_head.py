"""The whole head: the fitted model's vertices, bases and triangles come first and unchanged."""

import numpy as np

from lsqface.synthetic import head as head_module
from lsqface.synthetic.head import EYEBALL, FACE, FITTED_VERTEX_COUNT, SKIN, TEETH, TRANSPARENT_RANGE, load_head


def test_fitted_region_is_the_fitted_model(head, ict_model):
    count = FITTED_VERTEX_COUNT
    assert ict_model.n_vertices == count
    np.testing.assert_allclose(head.shape_mean[:count], ict_model.shape_mean, atol=1e-4)
    np.testing.assert_allclose(head.identity_basis[:count], ict_model.identity_basis, atol=1e-5)
    np.testing.assert_allclose(head.expression_basis[:count], ict_model.expression_basis, atol=1e-5)
    np.testing.assert_array_equal(head.triangles[: head.face_triangle_count], ict_model.triangles)


def test_every_opaque_part_and_no_transparent_layer(head):
    rest = head.triangles[head.face_triangle_count:]
    assert (rest >= FITTED_VERTEX_COUNT).any(axis=1).all()  # nothing of the fitted region is drawn twice
    used = np.unique(rest)
    assert not ((used >= TRANSPARENT_RANGE[0]) & (used < TRANSPARENT_RANGE[1])).any()
    parts = set(np.unique(head.part[used]).tolist())
    assert {FACE, SKIN, EYEBALL, TEETH} <= parts
    assert head.triangles.max() < head.n_vertices and head.triangles.min() >= 0
    # The scalp is above the face, and the neck below it.
    skin = head.shape_mean[head.part == SKIN]
    face = head.shape_mean[:FITTED_VERTEX_COUNT]
    assert skin[:, 1].max() > face[:, 1].max() + 30 and skin[:, 1].min() < face[:, 1].min() - 50


def test_skin_normals_point_outwards(head):
    # Hair volume and hat shells push along these normals: up on the crown, back behind the head.
    skin = head.part == SKIN
    crown = skin & (head.shape_mean[:, 1] > 120)
    back = skin & (head.shape_mean[:, 2] < -70) & (head.shape_mean[:, 1] > 0)
    assert crown.sum() > 50 and back.sum() > 50
    assert (head.normals[crown, 1] > 0).mean() > 0.95
    assert (head.normals[back, 2] < 0).mean() > 0.95


def test_the_cache_is_read_back_without_building(head, ict_archive, ict_model, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def build(*args, **kwargs):
        calls.append(args)
        return head

    monkeypatch.setattr(head_module, "build_head", build)
    first = load_head(ict_archive, ict_model.triangles)
    second = load_head(ict_archive, ict_model.triangles)
    assert len(calls) == 1
    assert list((tmp_path / "lsqface" / "heads").glob("*.npz"))
    for name in ("shape_mean", "identity_basis", "triangles", "part", "normals"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert second.face_triangle_count == head.face_triangle_count
