"""Direct landmarks from correspondence maps, landmark files and the landmark benchmark."""

import numpy as np
import pytest
import torch
from PIL import Image

from lsqface.errors import DatasetError
from lsqface.evaluate.landmarks import (
    FAILED_ERROR, LandmarkPredictions, direct_landmarks, evaluate_landmarks, folder_benchmark, landmark_uv,
    read_landmark_file, summarise,
)
from lsqface.evaluate.metrics import landmark_error


def _affine_maps(size=24):
    """A (1, 2, S, S) correspondence exactly affine in the pixel centres, and its map."""
    linear = torch.tensor([[0.031, 0.004], [-0.006, 0.027]], dtype=torch.float64)
    offset = torch.tensor([0.11, 0.07], dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64) + 0.5, torch.arange(size, dtype=torch.float64) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys], dim=-1)
    uv = pixels @ linear.T + offset
    return uv.permute(2, 0, 1)[None], linear, offset


def test_direct_landmarks_invert_an_affine_map_exactly_and_return_to_the_original_frame():
    correspondence, linear, offset = _affine_maps()
    confidence = torch.ones(1, 2, 24, 24)
    # Points at non-integer positions well inside the image, in the network frame.
    points = torch.tensor([[5.27, 6.81], [17.4, 6.05], [11.93, 12.5], [7.61, 18.2], [16.02, 17.77]], dtype=torch.float64)
    targets = points @ linear.T + offset
    found = direct_landmarks(correspondence, confidence, targets)
    assert torch.allclose(found[0], points, atol=1e-9)
    # to_network: original -> network is a scale and shift; the answer must come back in original pixels.
    to_network = torch.tensor([[[0.5, 0.0, 3.0], [0.0, 0.5, -1.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    original = (points - torch.tensor([3.0, -1.0], dtype=torch.float64)) / 0.5
    found = direct_landmarks(correspondence, confidence, targets, to_network)
    assert torch.allclose(found[0], original, atol=1e-8)


def test_direct_landmarks_average_each_landmarks_vertices_and_ignore_unconfident_pixels():
    correspondence, linear, offset = _affine_maps()
    confidence = torch.ones(2, 1, 24, 24)
    confidence[1] = 0.0  # the second image has no confident pixel
    vertices = torch.tensor([[[4.2, 5.1], [6.3, 7.7], [5.5, 4.4]], [[15.5, 15.5], [15.5, 15.5], [15.5, 15.5]]], dtype=torch.float64)
    targets = vertices @ linear.T + offset
    found = direct_landmarks(correspondence.expand(2, -1, -1, -1), confidence, targets)
    assert torch.allclose(found[0], vertices.mean(dim=1), atol=1e-9)
    assert torch.isnan(found[1]).all()
    # A wrong uv in an unconfident pixel must not attract the search.
    decoy = correspondence.clone()
    decoy[0, :, 2, 20] = targets[0, 0]
    masked = torch.ones(1, 1, 24, 24)
    masked[0, 0, 2, 20] = 0.0
    assert torch.allclose(direct_landmarks(decoy, masked, targets)[0], vertices.mean(dim=1), atol=1e-9)


def test_direct_landmarks_of_true_synthetic_maps_are_near_the_truth(ict_uv_model):
    from lsqface.data.synthetic import SyntheticConfig, generate_faces

    faces = generate_faces(ict_uv_model, [11, 12], SyntheticConfig(size=64, roll_range=180.0))
    found = direct_landmarks(faces.correspondence, faces.confidence, landmark_uv(ict_uv_model))
    truth = faces.landmarks_5.to(torch.float64)
    pixels = (found - truth).norm(dim=-1)
    # Eyes and nose are visible surface points: sub-pixel (the eye points lie on the lid margins, at the
    # edge of the fitted region's eye holes). Mouth corners may be hidden in the lips' fold.
    assert float(pixels[:, :3].max()) < 0.45
    assert float(landmark_error(found, truth).max()) < 6.0


def test_landmark_uv_is_the_vertex_uv_of_the_landmark_rows(ict_uv_model):
    uv = landmark_uv(ict_uv_model)
    rows = ict_uv_model.model.landmarks_5
    assert uv.shape == (5, 6, 2)
    assert np.allclose(uv.numpy()[2, 3], ict_uv_model.vertex_uv[rows[2, 3]])


def test_read_landmark_file_takes_spaces_commas_comments_and_a_header(tmp_path):
    path = tmp_path / "landmarks.csv"
    path.write_text("name,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n# a comment\n"
                    "a.jpg, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10\n\nsub/b.png 10 20 30 40 50 60 70 80 90 100  # trailing\n")
    names, points = read_landmark_file(path)
    assert names == ["a.jpg", "sub/b.png"]
    assert points.shape == (2, 5, 2)
    assert np.array_equal(points[1, 4], [90.0, 100.0]) and np.array_equal(points[0, 1], [3.0, 4.0])


@pytest.mark.parametrize("text", ["a.jpg 1 2 3\n", "a.jpg 1 2 3 4 5 6 7 8 9 10\nb.jpg 1 2 3 4 5 6 7 8 9 x\n", "# nothing\n"])
def test_read_landmark_file_refuses_bad_lines(tmp_path, text):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DatasetError):
        read_landmark_file(path)


def test_folder_benchmark_refuses_missing_images(tmp_path):
    (tmp_path / "landmarks.txt").write_text("missing.jpg 1 2 3 4 5 6 7 8 9 10\n")
    with pytest.raises(DatasetError, match="not in"):
        folder_benchmark(tmp_path, tmp_path / "landmarks.txt")


def test_summarise_and_failed_images_count_as_failed_error():
    truth = np.tile(np.array([[10.0, 10.0], [30.0, 10.0], [20.0, 20.0], [12.0, 30.0], [28.0, 30.0]]), (3, 1, 1))
    fitted = truth.copy()
    fitted[1] += 1.0  # 1.414 px off everywhere: 7.07 % of the 20 px inter-ocular distance
    fitted[2] = np.nan
    predictions = LandmarkPredictions(["a", "b", "c"], truth, fitted, fitted.copy(), np.zeros((3, 68, 2)), {"c": "failed"})
    errors = predictions.errors("fitted")
    assert np.allclose(errors, [0.0, 100.0 * np.sqrt(2.0) / 20.0, FAILED_ERROR])
    summary = summarise(errors)
    assert np.isclose(summary["mean"], errors.mean()) and np.isclose(summary["median"], np.median(errors))
    assert np.isclose(summary["failure_rate"], 100.0 / 3.0) and summary["count"] == 3
    records = predictions.records()
    assert records[2]["five"] is None and records[2]["error"] == "failed" and records[0]["five"] == truth[0].tolist()


def test_evaluate_landmarks_with_a_network_records_every_image(tmp_path, tiny_reconstructor):
    rng = np.random.default_rng(0)
    paths = []
    for index, size in enumerate([(40, 48), (64, 64)]):
        path = tmp_path / f"{index}.png"
        Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    truth = rng.uniform(5, 35, size=(3, 5, 2))
    predictions = evaluate_landmarks(tiny_reconstructor, [*paths, broken], truth, batch_size=3)
    assert predictions.names == ["0.png", "1.png", "broken.png"]
    assert list(predictions.failures) == ["broken.png"]
    assert predictions.errors("fitted")[2] == FAILED_ERROR
    for index in range(2):
        if predictions.names[index] in predictions.failures:
            continue
        expected = landmark_error(torch.from_numpy(predictions.fitted[index:index + 1]), torch.from_numpy(truth[index:index + 1]))
        assert np.isclose(predictions.errors("fitted")[index], float(expected))
        assert np.isfinite(predictions.sixty_eight[index]).all()


def test_evaluate_landmarks_reconstructs_inside_each_box_and_reports_file_pixels(tmp_path, tiny_reconstructor):
    rng = np.random.default_rng(1)
    path = tmp_path / "wide.png"
    Image.fromarray((rng.random((120, 200, 3)) * 255).astype(np.uint8)).save(path)
    box = (140.0, 70.0, 30.0, 30.0)  # a small "face" in the bottom-right corner
    truth = rng.uniform(0, 100, size=(2, 5, 2))
    predictions = evaluate_landmarks(tiny_reconstructor, [path, path], truth, batch_size=1, boxes=[box, None])
    assert not predictions.failures
    boxed = tiny_reconstructor([path], boxes=[box])
    assert np.allclose(predictions.fitted[0], boxed.landmarks_5.numpy())
    assert np.allclose(predictions.fitted[1], tiny_reconstructor([path]).landmarks_5.numpy())
    assert not np.allclose(predictions.fitted[0], predictions.fitted[1])
    # In file pixels: the network saw only the 48-pixel square around the box (margin 1.6), and the
    # direct landmarks are pixels of what it saw, so they lie in that square of the file (24 pixels
    # either side of the box's centre), or at most the sub-pixel refinement's 1.5 network pixels beyond
    # an edge pixel's centre: 1 network pixel, 1.5 file pixels, past the square's edge.
    direct = predictions.direct[0]
    assert np.isfinite(direct).all() and np.all(np.abs(direct - [155.0, 85.0]) <= 24.0 + 1.5), direct
    assert not np.all(np.abs(predictions.direct[1] - [155.0, 85.0]) <= 24.0)
