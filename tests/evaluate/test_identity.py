"""Identity: cosine similarities, pairs, earth mover's distances, renderings of oracle reconstructions."""

import numpy as np
import pytest
import torch

from lsqface.errors import ConfigError
from lsqface.evaluate.identity import (
    cosine_similarity, crop_square, face_box, identity_distances, onnx_descriptor, pair_similarities, render_colour,
    rendering_similarity,
)


def tiny_descriptor(image: np.ndarray) -> np.ndarray:
    """A fixed random projection of the image averaged down to 8 x 8, mean removed (a toy face descriptor)."""
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    small = torch.nn.functional.adaptive_avg_pool2d(tensor, 8).reshape(-1).numpy().astype(np.float64)
    projection = np.random.default_rng(7).standard_normal((32, small.size))
    return projection @ (small - small.mean())


def test_cosine_similarity_matches_the_definition():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 16)), rng.standard_normal((4, 16))
    expected = [a[k] @ b[k] / np.linalg.norm(a[k]) / np.linalg.norm(b[k]) for k in range(4)]
    assert np.allclose(cosine_similarity(a, b), expected)
    assert np.isclose(cosine_similarity(a[0], 3.0 * a[0]), 1.0)


def test_pairs_split_by_identity_and_distances_are_earth_movers():
    rng = np.random.default_rng(1)
    descriptors = rng.standard_normal((5, 8))
    same, different = pair_similarities(descriptors, ["a", "a", "b", "a", "c"])
    assert len(same) == 3 and len(different) == 7
    assert np.isclose(sorted(same)[0], min(cosine_similarity(descriptors[i], descriptors[j]) for i, j in [(0, 1), (0, 3), (1, 3)]))
    # Equal-size samples: W1 is the mean distance between the sorted values.
    rendering = np.array([0.2, 0.5, 0.9])
    distances = identity_distances(rendering, same, different[:3])
    assert np.isclose(distances["to_same"], np.abs(np.sort(rendering) - np.sort(same)).mean())
    assert np.isclose(distances["to_different"], np.abs(np.sort(rendering) - np.sort(different[:3])).mean())
    assert np.isnan(identity_distances(rendering, np.zeros(0), different)["to_same"])


def test_crop_square_pads_with_black():
    image = np.ones((10, 12, 3), dtype=np.float32)
    crop = crop_square(image, (-2, 6, 6))
    assert crop.shape == (6, 6, 3)
    assert crop[:4, 2:].min() == 1.0 and crop[:, :2].max() == 0.0 and crop[4:].max() == 0.0


@pytest.fixture(scope="module")
def oracle(ict_uv_model):
    from lsqface.data.synthetic import SyntheticConfig, generate_faces
    from lsqface.reconstruct import ReconstructConfig, reconstruct_from_maps
    from lsqface.solver.fit import SolverConfig

    faces = generate_faces(ict_uv_model, [21, 22], SyntheticConfig(size=64, background="none"))
    result = reconstruct_from_maps(ict_uv_model, faces.image, faces.correspondence, faces.depth, faces.confidence,
                                   config=ReconstructConfig(input_size=64, solver=SolverConfig(sample_count=2000)))
    return faces, result


def test_rendering_covers_the_face_and_keeps_the_photo_elsewhere(oracle):
    faces, result = oracle
    photo = faces.image[0].permute(1, 2, 0).numpy()
    over_black = render_colour(result, 0)
    over_photo = render_colour(result, 0, np.full_like(photo, 0.25))
    drawn = over_black.max(axis=-1) > 0
    mask = faces.confidence[0, 0].numpy() > 0
    assert (drawn & mask).sum() > 0.9 * mask.sum()
    assert np.allclose(over_photo[~drawn], 0.25)
    # The oracle's colour explains the photo: small mean difference on the face.
    assert np.abs(over_black[mask & drawn] - photo[mask & drawn]).mean() < 0.1
    left, top, side = face_box(result, 0)
    rows, columns = np.nonzero(mask)
    assert left <= columns.min() and top <= rows.min() and left + side >= columns.max() and top + side >= rows.max()


def test_a_rendering_is_more_like_its_own_photo_than_another(oracle):
    faces, result = oracle
    photos = [image.permute(1, 2, 0).numpy() for image in faces.image]
    own = rendering_similarity(result, photos, tiny_descriptor)
    swapped = rendering_similarity(result, photos[::-1], tiny_descriptor)
    assert own.shape == (2,) and np.all(own > swapped)
    assert np.all(rendering_similarity(result, photos, tiny_descriptor, background="photo") > swapped)
    with pytest.raises(ConfigError):
        rendering_similarity(result, photos, tiny_descriptor, background="grey")


def test_onnx_descriptor_explains_what_is_missing(tmp_path):
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="onnxruntime"):
            onnx_descriptor(tmp_path / "face.onnx")
    else:
        with pytest.raises(ConfigError, match="does not exist"):
            onnx_descriptor(tmp_path / "face.onnx")


def test_dlib_descriptor_tells_one_synthetic_face_from_itself_and_another(oracle):
    import importlib.util

    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models is not installed (pip install 'lsqface[identity]')")
    from lsqface.evaluate.identity import dlib_descriptor

    faces, _ = oracle
    describe = dlib_descriptor()
    first = describe(faces.image[0].permute(1, 2, 0).numpy())
    assert first.shape == (128,)
    assert np.isclose(cosine_similarity(first, describe(faces.image[0].permute(1, 2, 0).numpy())), 1.0)
    second = describe(faces.image[1].permute(1, 2, 0).numpy())
    assert cosine_similarity(first, second) < 0.999


def test_identity_from_name():
    from lsqface.evaluate.identity import identity_from_name

    assert [identity_from_name(name) for name in ("obama.jpg", "obama2.jpg", "dir/Obama_3.png", "42.png")] == ["obama", "obama", "obama", "42"]


def test_evaluate_identity_combines_renderings_and_pairs(tiny_reconstructor, tmp_path):
    from PIL import Image

    from lsqface.evaluate.identity import evaluate_identity

    rng = np.random.default_rng(2)
    paths = []
    for name in ("ann1.png", "ann2.png", "bob.png"):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / name)
        paths.append(tmp_path / name)
    measures = evaluate_identity(tiny_reconstructor, paths, tiny_descriptor)
    values = list(measures.values())
    assert len(values) == 5 and "(1 pairs)" in list(measures)[1] and "(2 pairs)" in list(measures)[2]
    assert all(np.isfinite(value) for value in values) and -1.0 <= values[0] <= 1.0
