"""Synthetic benchmark: the oracle (true maps) scores near zero; seeds are the reserved ones."""

import numpy as np
import pytest

from lsqface.evaluate.benchmark import EVALUATION_SEED_START, ORACLE, evaluate_synthetic, evaluation_seeds


@pytest.fixture(scope="module")
def oracle_results(ict_uv_model):
    from lsqface.reconstruct import ReconstructConfig
    from lsqface.solver.fit import SolverConfig

    # Two faces at two ranges keep it to a few seconds; fewer samples than the default solve suffice for true maps.
    config = ReconstructConfig(input_size=64, solver=SolverConfig(sample_count=2000))
    return evaluate_synthetic(ORACLE, ict_uv_model, ranges=(0.0, 90.0), count=2, size=64, batch_size=2, oracle_config=config)


def test_the_oracle_scores_near_zero_at_every_range(oracle_results):
    for result in oracle_results:
        summary = result.summary()
        assert summary["solve_failures"] == 0 and summary["count"] == 2
        assert summary["fitted"] < 1.0, summary  # percent of the inter-ocular distance
        assert summary["vertex_mm"] < 1.0, summary
        assert summary["rotation_degrees"] < 1.0, summary
        assert summary["direct"] < 5.0, summary  # hidden mouth-corner vertices keep it above the fitted error
        assert summary["fitted_failure_rate"] == 0.0


def test_the_mean_face_baseline_is_the_mean_shape_scored_like_a_fit(oracle_results, ict_uv_model):
    """Independently: align the mean shape to each face by an SVD Procrustes in numpy."""
    from lsqface.data.synthetic import SyntheticConfig, generate_faces

    result = oracle_results[1]
    faces = generate_faces(ict_uv_model, list(result.seeds), SyntheticConfig(size=64, roll_range=90.0))
    mean = ict_uv_model.model.shape_mean
    for k, truth in enumerate(faces.vertices.numpy().astype(np.float64)):
        a, b = mean - mean.mean(0), truth - truth.mean(0)
        u, singular, vt = np.linalg.svd(a.T @ b)
        sign = np.sign(np.linalg.det(u @ vt))
        rotation = u @ np.diag([1.0, 1.0, sign]) @ vt
        scale = (singular * [1.0, 1.0, sign]).sum() / (a ** 2).sum()
        aligned = scale * a @ rotation + truth.mean(0)
        expected = np.linalg.norm(aligned - truth, axis=1).mean()
        assert result.mean_face_vertex_error[k] == pytest.approx(expected, rel=1e-6)
    # A shapeless fit is millimetres off; the oracle recovers the shape.
    assert np.all(result.mean_face_vertex_error > 1.0) and np.all(result.vertex_error < 1.0)
    assert result.summary()["mean_face_vertex_median_mm"] == pytest.approx(np.median(result.mean_face_vertex_error))


def test_ranges_share_seeds_and_bound_the_roll(oracle_results):
    still, turned = oracle_results
    assert np.array_equal(still.seeds, turned.seeds)
    assert list(still.seeds) == evaluation_seeds(2) and min(still.seeds) >= EVALUATION_SEED_START
    assert np.allclose(still.roll, 0.0)
    assert np.all(np.abs(turned.roll) <= 90.0) and np.abs(turned.roll).max() > 1.0


def test_records_carry_every_face(oracle_results):
    records = oracle_results[1].records()
    assert len(records) == 2
    assert records[0]["seed"] == EVALUATION_SEED_START and records[0]["roll_range"] == 90.0
    assert np.isclose(records[1]["fitted_error"], oracle_results[1].fitted_error[1])


def test_a_network_goes_through_the_same_path(tiny_reconstructor, ict_uv_model):
    (result,) = evaluate_synthetic(tiny_reconstructor, ict_uv_model, ranges=(45.0,), count=2, size=32, batch_size=2)
    assert result.fitted_error.shape == (2,) and np.isfinite(result.fitted_error).all()
    # An untrained network is far from the truth: the measures must notice.
    assert result.failed.all() or result.fitted_error.mean() > 5.0


def test_a_failed_batch_is_retried_face_by_face(tiny_reconstructor, ict_uv_model):
    from lsqface.errors import SolverError

    class OneAtATime:
        """The tiny network, refusing batches of more than one face as an ill-posed solve would."""

        uv_model = ict_uv_model

        def __call__(self, images):
            if len(images) > 1:
                raise SolverError("batch refused")
            return tiny_reconstructor(images)

    (batched,) = evaluate_synthetic(OneAtATime(), ict_uv_model, ranges=(15.0,), count=2, size=32, batch_size=2)
    (single,) = evaluate_synthetic(tiny_reconstructor, ict_uv_model, ranges=(15.0,), count=2, size=32, batch_size=1)
    assert not batched.failed.any()
    assert np.allclose(batched.fitted_error, single.fitted_error) and np.allclose(batched.vertex_error, single.vertex_error)


@pytest.mark.parametrize("look", ["photo", "other"])
def test_the_oracle_scores_near_zero_on_whole_head_photographs(look, ict_uv_model, ict_archive, tmp_path, monkeypatch):
    """The true maps of the whole-head looks fit back to the truth: their maps and their truth agree."""
    from lsqface.reconstruct import ReconstructConfig
    from lsqface.solver.fit import SolverConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the head is built into a throw-away cache
    config = ReconstructConfig(input_size=64, solver=SolverConfig(sample_count=2000))
    results = evaluate_synthetic(ORACLE, ict_uv_model, ranges=(180.0,), count=3, size=64, batch_size=3,
                                 oracle_config=config, look=look)
    summary = results[0].summary()
    assert summary["count"] == 3 and summary["solve_failures"] == 0
    assert np.median(results[0].fitted_error) < 2.0, summary
    # Occluders hide part of the face from the maps: the shape is fitted from what is seen.
    assert np.median(results[0].vertex_error) < 2.5, summary


def test_an_unknown_look_is_refused(ict_uv_model):
    from lsqface.errors import ConfigError

    with pytest.raises(ConfigError, match="look"):
        evaluate_synthetic(ORACLE, ict_uv_model, count=1, look="cartoon")
