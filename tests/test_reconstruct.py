"""The reconstruct path, checked with the oracle: true maps of synthetic faces must give back the known face."""

import numpy as np
import pytest
import torch

from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.evaluate.metrics import landmark_error, rotation_error_degrees, vertex_error
from lsqface.reconstruct import ReconstructConfig, frame_image, reconstruct_from_maps


@pytest.fixture(scope="module")
def uv_model_320(ict_model):
    """The UV-3DMM at the default 320 px: the oracle's accuracy depends on the UV resolution."""
    from lsqface.morphable.uv_build import build_uv_model

    return build_uv_model(ict_model, size=320)


@pytest.mark.parametrize("roll_range", [0.0, 45.0, 90.0, 180.0])
def test_oracle_recovers_camera_and_shape_at_any_in_plane_rotation(uv_model_320, roll_range):
    config = SyntheticConfig(size=128, roll_range=roll_range)
    seeds = [100 + int(roll_range) + k for k in range(3)]
    faces = generate_faces(uv_model_320, seeds, config)
    if roll_range:
        assert faces.pose[:, 2].abs().max() > 0.3 * roll_range  # the draws really are rotated
    result = reconstruct_from_maps(uv_model_320, faces.image, faces.correspondence, faces.depth, faces.confidence)
    errors = landmark_error(result.landmarks_5.float(), faces.landmarks_5)
    assert errors.max() < 0.5, errors  # percent of the inter-ocular distance
    vertex_mm = vertex_error(result.vertices, faces.vertices)
    assert vertex_mm.max() < 0.5, vertex_mm  # millimetres after similarity alignment
    assert rotation_error_degrees(result.rotation, faces.rotation).max() < 1.0
    roll_error = (result.pose[:, 2] - faces.pose[:, 2] + 180) % 360 - 180
    assert roll_error.abs().max() < 1.0


def test_results_are_mapped_back_to_the_original_image(uv_model_320):
    """A face rendered at 256 px, framed down to the network's 128 px, comes back in 256 px coordinates."""
    faces = generate_faces(uv_model_320, [7], SyntheticConfig(size=256, roll_range=30))
    image = faces.image[0].permute(1, 2, 0).numpy()
    framed, to_network = frame_image(image, 128)
    assert framed.shape == (3, 128, 128)
    np.testing.assert_allclose(to_network.numpy(), [[0.5, 0, 0], [0, 0.5, 0], [0, 0, 1]])
    # Downsample the true maps the same way (nearest pixel centres) and fit.
    maps = torch.cat([faces.correspondence, faces.depth, faces.confidence], 1)[..., 1::2, 1::2]
    result = reconstruct_from_maps(
        uv_model_320, framed[None], maps[:, :2], maps[:, 2:3], maps[:, 3:4], to_network=to_network[None], image_sizes=[(256, 256)]
    )
    assert landmark_error(result.landmarks_5.float(), faces.landmarks_5).item() < 1.0
    torch.testing.assert_close(result.intrinsics[0], faces.intrinsics[0], rtol=0.01, atol=1.0)


def test_frame_image_with_a_face_box():
    image = np.zeros((100, 200, 3), np.float32)
    image[40:60, 140:160] = 1.0  # a bright square, the "face"
    framed, to_network = frame_image(image, 64, box=(140, 40, 20, 20), margin=2.0)
    # The box centre (150, 50) maps to the centre of the framed image.
    centre = to_network.numpy() @ np.array([150.0, 50.0, 1.0])
    np.testing.assert_allclose(centre[:2], [32.0, 32.0])
    assert framed[:, 24:40, 24:40].mean() > 0.9 and framed[:, :8].mean() < 0.05


@pytest.mark.parametrize("box", [(10.0, 10.0, 21.0, 21.0), (3.0, 17.0, 20.0, 14.0), (12.25, 7.875, 18.5, 22.125),
                                 (19.5, 19.5, 21.0, 21.0), (20.0, 20.0, 20.0, 20.0)])
def test_a_turned_photo_with_its_turned_box_frames_the_same_pixels_turned(box):
    """Whole-pixel boxes of odd sides put the crop's corner on an exact half, boxes centred on the photo
    leave no whole-pixel corner at some sides: the crop of a photo turned by a quarter turn, in the box
    turned with it, is still the crop of the upright photo turned."""
    generator = np.random.default_rng(5)
    photo = generator.random((60, 60, 3)).astype(np.float32)
    x, y, w, h = box
    framed, _ = frame_image(photo, 32, box=box, margin=1.6)
    for turns in (1, 2, 3):
        # numpy's rot90 turns anticlockwise on screen: (x, y) -> (y, 60 - x) per turn.
        turned_box = (x, y, w, h)
        for _ in range(turns):
            bx, by, bw, bh = turned_box
            turned_box = (by, 60.0 - bx - bw, bh, bw)
        turned, _ = frame_image(np.ascontiguousarray(np.rot90(photo, turns)), 32, box=turned_box, margin=1.6)
        torch.testing.assert_close(turned, torch.rot90(framed, turns, dims=(1, 2)), rtol=0, atol=1e-5)


class _PixelwiseNetwork(torch.nn.Module):
    """A 1 x 1 convolution: its maps at a pixel depend on that pixel alone, so they turn exactly with the image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Conv2d(3, 5, 1)
        with torch.no_grad():
            self.head.weight.mul_(3.0)

    def forward(self, inputs):
        from lsqface.nets.unet import maps_from_logits

        return maps_from_logits(self.head(inputs))


@pytest.mark.parametrize("copies", [2, 4])
def test_rotation_ensemble_turns_each_copy_back(copies):
    from lsqface.reconstruct import rotation_ensemble_maps

    network = _PixelwiseNetwork()
    inputs = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        single = network(inputs)
        averaged = rotation_ensemble_maps(network, inputs, copies)
    # Every copy, turned back, is the same map, so the average is the single pass (a copy left
    # turned would differ: the maps vary across the image).
    for name in ("correspondence", "depth", "confidence", "logits"):
        torch.testing.assert_close(getattr(averaged, name), getattr(single, name), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(network(torch.rot90(inputs, 1, dims=(2, 3))).correspondence, single.correspondence)


def test_rotation_ensemble_averages_with_geometric_confidence():
    from lsqface.reconstruct import rotation_ensemble_maps

    class TurnSensitive(torch.nn.Module):
        # Correspondence 0.2 and geometric confidence 0.9 on upright copies (marked by a bright
        # top-left pixel); 0.6 and 0.1 on turned ones.
        def forward(self, inputs):
            from lsqface.nets.unet import NetworkMaps

            upright = (inputs[:, :1, :1, :1] > 0.5).to(inputs.dtype).expand(-1, 1, *inputs.shape[2:])
            correspondence = (0.6 - 0.4 * upright).expand(-1, 2, -1, -1)
            confidence = torch.cat([0.1 + 0.8 * upright, torch.full_like(upright, 0.5)], 1)
            depth = torch.ones_like(upright)
            return NetworkMaps(correspondence, depth, confidence, torch.zeros(inputs.shape[0], 5, *inputs.shape[2:]))

    inputs = torch.zeros(1, 3, 4, 4)
    inputs[:, :, 0, 0] = 1.0
    maps = rotation_ensemble_maps(TurnSensitive(), inputs, 2)
    expected = (0.2 * 0.9 + 0.6 * 0.1) / (0.9 + 0.1)
    torch.testing.assert_close(maps.correspondence, torch.full((1, 2, 4, 4), expected))
    torch.testing.assert_close(maps.confidence[:, :1], torch.full((1, 1, 4, 4), 0.5))


def test_rotation_ensemble_refuses_other_counts():
    from lsqface.errors import ConfigError
    from lsqface.reconstruct import ReconstructConfig

    with pytest.raises(ConfigError):
        ReconstructConfig(rotation_ensemble=3)


def _true_fit(faces, size):
    """What refine_boxes reads from a Reconstruction, filled with the generator's true camera."""
    from types import SimpleNamespace

    return SimpleNamespace(vertices=faces.vertices, intrinsics=faces.intrinsics, image_sizes=[(size, size)] * len(faces.vertices))


@pytest.mark.parametrize("drawn, wanted", [(0.45, 0.75), (0.7, 0.6)])
def test_refine_boxes_frame_the_face_as_the_generator_did(ict_uv_model, drawn, wanted):
    """On the true camera, the square holds the face at the wanted fraction, centred on its centroid."""
    from lsqface.reconstruct import refine_boxes

    size, margin = 128, 1.6
    # The mean face (no identity or expression), whose centroid is the one the generator places.
    config = SyntheticConfig(size=size, face_fraction=(drawn, drawn), roll_range=180, identity_std=0.0, expression_std=0.0)
    faces = generate_faces(ict_uv_model, [3, 4, 5], config)
    boxes = refine_boxes(_true_fit(faces, size), ict_uv_model.model, wanted, margin)
    for k, box in enumerate(boxes):
        x, y, width, height = box
        assert width == pytest.approx(height)
        # The generator put the face's width at `drawn` of the picture; the square is that over `wanted`.
        assert margin * width == pytest.approx(size * drawn / wanted, rel=1e-6)
        centroid = faces.vertices[k].mean(0).numpy()
        projected = faces.intrinsics[k].numpy() @ centroid
        np.testing.assert_allclose([x + 0.5 * width, y + 0.5 * height], projected[:2] / projected[2], atol=1e-6)


def test_refine_boxes_refuse_fits_that_frame_nothing(ict_uv_model):
    from lsqface.reconstruct import refine_boxes

    faces = generate_faces(ict_uv_model, [3, 4, 5, 6], SyntheticConfig(size=64))
    fit = _true_fit(faces, 64)
    fit.vertices = fit.vertices.clone()
    fit.vertices[0, :, 2] *= -1.0  # behind the camera
    fit.vertices[1, 0, 0] = float("nan")
    fit.vertices[2, :, 0] += 50 * 64 * fit.vertices[2, :, 2].mean() / faces.intrinsics[2, 0, 0]  # 50 photo widths aside
    boxes = refine_boxes(fit, ict_uv_model.model, 0.75, 1.6)
    assert boxes[:3] == [None, None, None] and boxes[3] is not None


def test_frames_agree():
    from lsqface.reconstruct import frames_agree

    reference = (10.0, 20.0, 100.0, 100.0)
    assert frames_agree((12.0, 19.0, 102.0, 102.0), reference)
    assert not frames_agree((10.0, 20.0, 150.0, 150.0), reference)  # a third larger
    assert not frames_agree((30.0, 20.0, 100.0, 100.0), reference)  # moved by a fifth of the side
    assert not frames_agree(None, reference)


def test_refine_keeps_the_old_frame_of_a_face_whose_refit_disagrees(monkeypatch):
    """Three photos: one refits in its new frame and asks for it again (it moves), one asks for a very
    different frame after its refit (it stays), one gives no usable frame at all (it stays)."""
    from dataclasses import dataclass

    from lsqface.reconstruct import Reconstructor

    @dataclass
    class Rows:
        boxes: list

    asked = {None: [(0.0, 0.0, 10.0, 10.0), (0.0, 0.0, 10.0, 10.0), None],
             "moved": [(0.0, 0.0, 10.0, 10.0), (0.0, 0.0, 40.0, 40.0), None]}
    calls = []

    def fake_reconstruct(self, arrays, boxes):
        calls.append(list(boxes))
        return Rows(boxes=list(boxes))

    def fake_refine_boxes(self, result):
        # The frame each photo's fit asks for: before any refit, then after one.
        return asked[None if result.boxes[0] is None else "moved"]

    monkeypatch.setattr(Reconstructor, "_reconstruct", fake_reconstruct)
    monkeypatch.setattr(Reconstructor, "_refine_boxes", fake_refine_boxes)
    reconstructor = Reconstructor.__new__(Reconstructor)
    reconstructor.config = ReconstructConfig(refine_passes=1)
    images = [np.zeros((32, 32, 3), np.float32)] * 3
    result = reconstructor(images)
    # Two passes: the rows of the faces that keep their frame come from the first (lsqface.reconstruct.merge_rows).
    assert calls == [[None, None, None],
                     [(0.0, 0.0, 10.0, 10.0), (0.0, 0.0, 10.0, 10.0), None]]
    assert result.boxes == [(0.0, 0.0, 10.0, 10.0), None, None]


def test_refine_settings_are_checked():
    from lsqface.errors import ConfigError

    with pytest.raises(ConfigError):
        ReconstructConfig(refine_passes=-1)
    with pytest.raises(ConfigError):
        ReconstructConfig(refine_fraction=1.5)


def test_confident_fraction_counts_input_pixels_over_one_half():
    import dataclasses

    from lsqface.reconstruct import Reconstruction

    confidence = torch.zeros(2, 2, 4, 4)
    confidence[0, 0, :2] = 0.9  # half the pixels of face 0
    confidence[0, 1] = 1.0  # the photometric channel is not counted
    confidence[1, 0, 0, 0] = 0.5  # exactly one half is not over it
    fields = {field.name: None for field in dataclasses.fields(Reconstruction)}
    result = Reconstruction(**{**fields, "confidence": confidence})
    assert result.confident_fraction().tolist() == [0.5, 0.0]


def test_merged_rows_equal_a_refit_in_the_mixed_frames(tiny_checkpoint, ict_uv_model):
    """The re-framing keeps the old rows of the faces that stay (merge_rows) instead of fitting the whole
    batch a third time: the rows are what that third fit gives, network maps, samples and fit alike."""
    from lsqface.reconstruct import Reconstructor, merge_rows

    reconstructor = Reconstructor.from_checkpoint(tiny_checkpoint, uv_model=ict_uv_model)
    generator = np.random.default_rng(1)
    arrays = [generator.random((48, 40, 3)).astype(np.float32) for _ in range(4)]
    old = [None, (4.0, 6.0, 30.0, 30.0), None, (0.0, 0.0, 20.0, 24.0)]
    new = [(5.0, 5.0, 28.0, 28.0), (2.0, 2.0, 36.0, 36.0), (10.0, 12.0, 20.0, 20.0), (3.0, 1.0, 22.0, 22.0)]
    take = [True, False, False, True]
    merged = merge_rows(reconstructor._reconstruct(arrays, old), reconstructor._reconstruct(arrays, new), take)
    refit = reconstructor._reconstruct(arrays, [b if t else a for a, b, t in zip(old, new, take)])
    for name in ("vertices", "landmarks_5", "intrinsics", "identity", "inverse_lighting", "correspondence",
                 "confidence", "to_network"):
        torch.testing.assert_close(getattr(merged, name), getattr(refit, name), rtol=1e-5, atol=1e-5)
    assert torch.equal(merged.fit.samples.indices, refit.fit.samples.indices)
    torch.testing.assert_close(merged.fit.geometric_weights, refit.fit.geometric_weights, rtol=1e-5, atol=1e-7)
    assert merged.status == refit.status and merged.image_sizes == refit.image_sizes
    torch.testing.assert_close(merged.measures.residual_mm, refit.measures.residual_mm, rtol=1e-5, atol=1e-6)
    assert torch.equal(merged.triangles, refit.triangles)


@pytest.mark.parametrize("copies", [2, 4])
def test_predicted_maps_equal_one_network_call_per_turned_copy(tiny_checkpoint, ict_uv_model, copies):
    """predict_maps sends every quarter-turned copy of every photo through the folded, channels-last network
    in one batch; the maps are those of the plain network called on each copy alone, averaged."""
    import dataclasses

    from lsqface.nets.unet import NetworkMaps
    from lsqface.reconstruct import Reconstructor, network_input, rotation_ensemble_maps

    reconstructor = Reconstructor.from_checkpoint(tiny_checkpoint, uv_model=ict_uv_model)
    reconstructor.config = dataclasses.replace(reconstructor.config, rotation_ensemble=copies)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    batched = reconstructor.predict_maps(images)
    inputs = network_input(images, reconstructor.config.solver.softplus_eps)
    with torch.no_grad():
        # One call per turned copy of one photo: the ensemble's own arithmetic, fed copy by copy.
        def per_copy(batch):
            maps = [reconstructor.network(part) for part in batch.split(1)]
            return NetworkMaps(**{name: torch.cat([getattr(item, name) for item in maps])
                                  for name in ("correspondence", "depth", "confidence", "logits")})
        expected = rotation_ensemble_maps(per_copy, inputs, copies)
    for name in ("correspondence", "depth", "confidence", "logits"):
        torch.testing.assert_close(getattr(batched, name), getattr(expected, name), rtol=1e-4, atol=1e-5)


def test_presets_change_only_what_they_say():
    from lsqface.errors import ConfigError
    from lsqface.reconstruct import preset_config
    from lsqface.solver.fit import SolverConfig

    stored = ReconstructConfig(input_size=64, rotation_ensemble=4, refine_passes=1,
                               solver=SolverConfig(sample_count=2000, robust_iterations=5, precision="float64",
                                                   reprojection_iterations=3))
    assert preset_config(stored, "reference") == stored
    accurate = preset_config(stored, "accurate")
    assert accurate.solver.precision == "mixed"
    assert (accurate.rotation_ensemble, accurate.refine_passes, accurate.solver.robust_iterations,
            accurate.solver.reprojection_iterations) == (4, 1, 5, 3)
    fast = preset_config(stored, "fast")
    assert (fast.rotation_ensemble, fast.refine_passes, fast.solver.robust_iterations,
            fast.solver.reprojection_iterations) == (1, 0, 0, 0)
    assert fast.solver.precision == "mixed" and fast.solver.sample_count == 2000 and fast.input_size == 64
    with pytest.raises(ConfigError, match="preset"):
        preset_config(stored, "fastest")


def test_a_box_frames_only_the_part_of_the_photo_it_covers():
    """frame_image reads only the photo's part inside the square: the result is the padded crop of the
    whole converted photo resized by torch, within 1e-6 (the same weights summed in another order), for
    a box inside the photo and one over its corner."""
    from lsqface.data.images import fit_to_square, to_tensor

    image = np.random.default_rng(5).random((90, 120, 3)).astype(np.float32)
    for box in ((30.0, 20.0, 40.0, 40.0), (-20.0, 60.0, 50.0, 50.0)):
        framed, to_network = frame_image(image, 32, box=box, margin=1.6)
        side = 1.6 * 50.0 if box[2] == 50.0 else 1.6 * 40.0
        left, top = int(np.floor(box[0] + box[2] / 2 - side / 2)), int(np.floor(box[1] + box[3] / 2 - side / 2))
        size = int(np.ceil(side))
        padded = torch.zeros(3, size + 200, size + 200)
        padded[:, 100 - top:100 - top + 90, 100 - left:100 - left + 120] = to_tensor(image)
        expected, _ = fit_to_square(padded[:, 100:100 + size, 100:100 + size], 32)
        torch.testing.assert_close(framed, expected, rtol=0.0, atol=1e-6)



def test_a_uint8_photo_frames_as_its_float_copy_and_a_large_part_is_reduced_first(monkeypatch):
    """A uint8 photo (read_photo keeps 8-bit files so) frames bit for bit as read_image's float copy; a part over
    FULL_FLOAT_PIXELS is box-averaged by an integer factor first, the matrix still in the photo's own pixels."""
    import lsqface.data.images as images

    photo = np.random.default_rng(6).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    photo[30:50, 70:90] = 255  # a bright square, the "face"
    floats = images.read_image(photo)
    for box in (None, (70.0, 30.0, 20.0, 20.0), (-20.0, 60.0, 50.0, 50.0)):
        framed, to_network = frame_image(photo, 32, box=box)
        expected, expected_matrix = frame_image(floats, 32, box=box)
        assert torch.equal(framed, expected) and torch.equal(to_network, expected_matrix)
    monkeypatch.setattr(images, "FULL_FLOAT_PIXELS", 1000)
    for box in (None, (20.0, -10.0, 60.0, 60.0)):
        framed, to_network = frame_image(photo, 32, box=box)
        expected, expected_matrix = frame_image(floats, 32, box=box)
        # Reduced 4 (whole photo) or 3 times (the box's part): the same picture, the square where the matrix says.
        assert framed.shape == (3, 32, 32) and (framed - expected).abs().mean() < 0.03
        corners = to_network.numpy() @ np.array([[70.0, 30.0, 1.0], [90.0, 50.0, 1.0]]).T
        expected_corners = expected_matrix.numpy() @ np.array([[70.0, 30.0, 1.0], [90.0, 50.0, 1.0]]).T
        np.testing.assert_allclose(corners, expected_corners, atol=0.5)
        (left, right), (top, bottom) = np.round(corners[:2]).astype(int)
        assert framed[:, top + 1:bottom - 1, left + 1:right - 1].mean() > 0.9

def test_mesh_from_float32_basis_products_is_the_float64_mesh(ict_uv_model):
    """fitted_mesh with its basis products in float32 (inference with mixed solves) gives the float64 mesh
    within 1e-4 mm and the colours within 1e-5."""
    import dataclasses

    from lsqface.reconstruct import fitted_mesh

    faces = generate_faces(ict_uv_model, [3, 4], SyntheticConfig(size=64, roll_range=90.0))
    with torch.no_grad():
        result = reconstruct_from_maps(ict_uv_model, faces.image, faces.correspondence, faces.depth, faces.confidence)
    fit = dataclasses.replace(result.fit, **{name: getattr(result.fit, name).double() for name in (
        "rotation", "translation", "intrinsics", "identity_coefficients", "expression_coefficients",
        "albedo_coefficients", "inverse_lighting")})
    double = fitted_mesh(ict_uv_model, fit)
    single = fitted_mesh(ict_uv_model, fit, basis_dtype=torch.float32)
    assert single.vertices.dtype == torch.float64
    assert float((single.vertices - double.vertices).abs().max()) < 1e-4
    assert float((single.colour - double.colour).abs().max()) < 1e-5
    assert float((single.albedo - double.albedo).abs().max()) < 1e-5
