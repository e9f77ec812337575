import json

import numpy as np
import trimesh

from lsqface.outputs.export import write_json, write_npz, write_obj, write_ply


def _tetrahedron():
    vertices = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], dtype=np.float64)
    triangles = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    uv = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]])
    return vertices, triangles, uv, colours


def test_obj_with_texture_and_colours_reads_back(tmp_path):
    vertices, triangles, uv, colours = _tetrahedron()
    texture = np.zeros((8, 8, 3), np.float32)
    texture[:4] = [1.0, 0.0, 0.0]
    written = write_obj(tmp_path / "face.obj", vertices, triangles, texture_coords=uv, texture=texture, vertex_colours=colours)
    assert [p.name for p in written] == ["face.obj", "face.mtl", "face_texture.png"]
    mesh = trimesh.load(tmp_path / "face.obj", process=False, maintain_order=True)
    assert mesh.vertices.shape == (4, 3) and mesh.faces.shape == (4, 3)
    np.testing.assert_allclose(mesh.vertices, vertices)
    np.testing.assert_array_equal(mesh.faces, triangles)
    # OBJ's v axis points up: lsqface's downward v is flipped on write and back here.
    np.testing.assert_allclose(mesh.visual.uv, np.c_[uv[:, 0], 1 - uv[:, 1]], atol=1e-6)
    image = np.asarray(mesh.visual.material.image.convert("RGB"))
    assert image.shape == (8, 8, 3) and image[0, 0, 0] == 255 and image[-1, -1, 0] == 0


def test_obj_vertex_colours_without_texture(tmp_path):
    vertices, triangles, _, colours = _tetrahedron()
    write_obj(tmp_path / "plain.obj", vertices, triangles, vertex_colours=colours)
    mesh = trimesh.load(tmp_path / "plain.obj", process=False, maintain_order=True)
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3] / 255.0, colours, atol=1 / 255)


def test_ply_round_trip(tmp_path):
    vertices, triangles, _, colours = _tetrahedron()
    write_ply(tmp_path / "face.ply", vertices, triangles, colours)
    mesh = trimesh.load(tmp_path / "face.ply", process=False)
    np.testing.assert_allclose(mesh.vertices, vertices)
    np.testing.assert_array_equal(mesh.faces, triangles)
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3] / 255.0, colours, atol=1 / 255)


def test_json_and_npz(tmp_path):
    write_json(tmp_path / "p.json", {"K": np.eye(3), "n": np.int64(3), "nested": {"x": (1.5, 2)}})
    assert json.loads((tmp_path / "p.json").read_text()) == {"K": np.eye(3).tolist(), "n": 3, "nested": {"x": [1.5, 2]}}
    write_npz(tmp_path / "m.npz", {"depth": np.ones((2, 2))})
    np.testing.assert_array_equal(np.load(tmp_path / "m.npz")["depth"], np.ones((2, 2)))


def test_obj_text_is_the_text_of_one_format_per_value(tmp_path):
    """write_obj formats whole arrays in one call: the same text as formatting value by value."""
    generator = np.random.default_rng(3)
    vertices = generator.normal(scale=80.0, size=(50, 3))
    vertices[0] = [-0.0, 1e-9, -1e-7]  # signed zeros and values that round to them
    colours = generator.random((50, 3))
    uv = generator.random((50, 2))
    triangles = generator.integers(0, 50, size=(70, 3))
    write_obj(tmp_path / "face.obj", vertices, triangles, texture_coords=uv, texture=np.zeros((4, 4, 3)),
              vertex_colours=colours)
    lines = ["# written by lsqface", "mtllib face.mtl"]
    lines += ["v " + " ".join(f"{value:.6f}" for value in row) for row in np.concatenate([vertices, colours], 1)]
    lines += [f"vt {u:.6f} {1.0 - v:.6f}" for u, v in uv] + ["usemtl face"]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in triangles + 1]
    assert (tmp_path / "face.obj").read_text() == "\n".join(lines) + "\n"
    write_obj(tmp_path / "plain.obj", vertices, triangles)
    plain = ["# written by lsqface"] + ["v " + " ".join(f"{value:.6f}" for value in row) for row in vertices]
    plain += [f"f {a} {b} {c}" for a, b, c in triangles + 1]
    assert (tmp_path / "plain.obj").read_text() == "\n".join(plain) + "\n"


def test_fixed_point_text_is_pythons_for_every_kind_of_value():
    """The numpy formatting of "%.6f" gives Python's text: ties of millionths (half to even on the exact
    binary value), values a hair from a tie, signed zeros, magnitudes from 1e-7 to 1e11, and the values it
    hands to Python (non-finite, 1e12 and over)."""
    from lsqface.outputs.export import _rows

    generator = np.random.default_rng(8)
    ties = (np.arange(-3000, 3000) + 0.5) / 2**7  # exact ties: 1/128 = 0.0078125
    near = np.arange(-3000, 3000) * 1e-6 + 5e-7  # the nearest doubles to ties
    spread = np.concatenate([generator.normal(scale=scale, size=3000) for scale in (1e-7, 1e-3, 1.0, 1e3, 1e6, 1e9, 1e11)])
    special = np.array([0.0, -0.0, -1e-9, 4e-7, -4e-7, 0.9999995, 999.9999996, 1e12, -3.5e13, np.nan, np.inf, -np.inf,
                        np.nextafter(1e12, 0), 5e-324])
    for values in (ties, near, spread, special):
        values = np.resize(values, (len(values) // 3 * 3 or 3,)).reshape(-1, 3)
        expected = "".join("v" + "".join(f" {value:.6f}" for value in row) + "\n" for row in values)
        assert _rows("v", "%.6f", values) == expected
    assert _rows("vt", "%.6f", np.zeros((0, 2))) == ""
