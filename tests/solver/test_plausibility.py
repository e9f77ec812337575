"""Fit status: a face fitted from its true maps is ok; no face, a mesh behind the camera or an absurd camera is not."""

import dataclasses

import pytest
import torch

from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.reconstruct import ReconstructConfig, assess, reconstruct_from_maps
from lsqface.solver.fit import weighted_median
from lsqface.solver.plausibility import STATUSES, FitMeasures, StatusThresholds, fit_status, mesh_edges


@pytest.fixture(scope="module")
def oracle(ict_uv_model):
    """Three synthetic faces (rolls within 180 degrees, 64 px) fitted from their true maps."""
    faces = generate_faces(ict_uv_model, [11, 12, 13], SyntheticConfig(size=64, roll_range=180.0))
    return reconstruct_from_maps(ict_uv_model, faces.image, faces.correspondence, faces.depth, faces.confidence)


def _measures(**changes) -> FitMeasures:
    """One fit's measures, each at a value good fits give, with ``changes`` applied."""
    values = dict(confident_fraction=0.35, residual_mm=2.0, nearest_depth=3.0, distance=3.0, face_size=0.75,
                  centre_offset=0.01, identity_rms=0.3, expression_rms=0.3, stretch=0.5, mirrored=0.0)
    values.update(changes)
    return FitMeasures(**{name: torch.tensor([float(value)], dtype=torch.float64) for name, value in values.items()})


def test_faces_fitted_from_their_true_maps_are_ok(oracle):
    assert oracle.status == ["ok"] * 3 and oracle.status_reason == [""] * 3 and oracle.face_like == [True] * 3
    measures = oracle.measures
    assert len(measures) == 3
    assert (measures.residual_mm < 0.5).all()  # true maps: the model explains every pixel
    assert ((measures.confident_fraction > 0.1) & (measures.confident_fraction < 0.8)).all()
    record = measures.record(0)
    assert set(record) == {item.name for item in dataclasses.fields(FitMeasures)}
    assert all(isinstance(value, float) for value in record.values())


def test_a_mesh_behind_the_camera_is_implausible(oracle, ict_uv_model):
    behind = oracle.vertices.clone()
    behind[1, :, 2] -= behind[1, :, 2].max() + 10.0  # face 1 entirely behind the camera
    crossing = dataclasses.replace(oracle, vertices=behind)
    result = assess(crossing, ict_uv_model)
    assert result.status[0] == "ok" and result.status[2] == "ok"
    assert result.status[1] == "implausible" and not result.face_like[1]
    assert "behind the camera" in result.status_reason[1]
    assert float(result.measures.nearest_depth[1]) < 0


def test_each_check_flags_its_own_measure():
    assert fit_status(_measures()) == [("ok", "", True)]
    cases = {
        "nearest_depth": (0.1, "too near the camera"),
        "distance": (100.0, "camera distance"),
        "face_size": (0.05, "times the input's size"),
        "centre_offset": (2.0, "centre outside"),
        "identity_rms": (5.0, "shape coefficients"),
        "stretch": (4.0, "edges stretched"),
        "residual_mm": (50.0, "residual"),
        "mirrored": (1.0, "mirrored"),
    }
    for name, (value, phrase) in cases.items():
        [(status, reason, face_like)] = fit_status(_measures(**{name: value}))
        assert status == "implausible" and phrase in reason and not face_like, name
    # A non-finite measure fails its check.
    assert fit_status(_measures(face_size=float("nan")))[0].status == "implausible"
    assert fit_status(_measures(nearest_depth=float("-inf")))[0].status == "implausible"


def test_little_confidence_comes_first_and_keeps_the_geometry_verdict():
    [(status, reason, face_like)] = fit_status(_measures(confident_fraction=0.0))
    assert status == "low_confidence" and "0.0 %" in reason and face_like
    [(status, reason, face_like)] = fit_status(_measures(confident_fraction=0.0, nearest_depth=-1.0))
    assert status == "low_confidence" and "behind the camera" in reason and not face_like
    assert set(STATUSES) == {"ok", "low_confidence", "implausible"}


def test_thresholds_come_from_the_config(oracle, ict_uv_model):
    strict = StatusThresholds(max_residual_mm=0.0)
    result = assess(oracle, ict_uv_model, strict)
    assert result.status == ["implausible"] * 3 and all("residual" in reason for reason in result.status_reason)
    assert ReconstructConfig().status == StatusThresholds()


def test_mesh_edges_and_weighted_median():
    edges = mesh_edges(torch.tensor([[0, 1, 2], [2, 1, 3]]))
    assert edges.tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
    values = torch.tensor([[1.0, 2.0, 3.0, 10.0], [5.0, 1.0, 1.0, 1.0]])
    weights = torch.tensor([[1.0, 1.0, 1.0, 0.0], [3.0, 1.0, 1.0, 0.0]])
    assert weighted_median(values, weights).tolist() == [2.0, 5.0]


def test_thresholds_load_from_a_toml_table():
    from lsqface.config import from_dict

    thresholds = from_dict(StatusThresholds, {"face_size": [0.1, 2.0], "max_residual_mm": 5})
    assert thresholds.face_size == (0.1, 2.0) and thresholds.max_residual_mm == 5.0


@pytest.mark.parametrize("count", [1, 2, 101, 20000])
def test_upper_quantile_is_torch_quantile(count):
    from lsqface.solver.plausibility import upper_quantile

    values = torch.rand(4, count, generator=torch.Generator().manual_seed(count), dtype=torch.float64)
    values[1, : max(1, count // 50)] = float("inf")  # a fit whose edges overflowed
    for q in (0.99, 0.5, 1.0):
        assert torch.equal(upper_quantile(values, q).nan_to_num(-1.0), torch.quantile(values, q, dim=1).nan_to_num(-1.0))
