"""Adaptive regularisation (seed G eq. 18) against a hand computation."""

import pytest
import torch

from lsqface.train.adaptive import AdaptiveConfig, AdaptiveRegularisation


def _clamp(value, low, high):
    return max(low, min(high, value))


def test_three_steps_match_hand_computation():
    adaptive = AdaptiveRegularisation(shape_count=2, albedo_count=1)
    # Coefficients of three iterations, batch of two images; columns: two shape, one albedo.
    batches = [
        torch.tensor([[3.0, 0.1, 2.0], [1.0, 0.1, 0.0]], dtype=torch.float64),
        torch.tensor([[30.0, 0.0, 1.0], [10.0, 0.2, 1.0]], dtype=torch.float64),
        torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]], dtype=torch.float64),
    ]
    delta = 0.05
    mean_square = [0.1, 0.1, 0.1]
    mean_weight = [0.1, 0.1, 0.1]
    weight = [_clamp(_clamp(0.1, 0.99, 1.01) * 0.1, 1e-4, 1e4)] * 3
    assert weight[0] == pytest.approx(0.099)
    for coefficients in batches:
        for i in range(3):
            batch_mean = float((coefficients[:, i] ** 2).mean())
            mean_weight[i] = (1 - delta) * mean_weight[i] + delta * weight[i]
            mean_square[i] = (1 - delta) * mean_square[i] + delta * batch_mean
            weight[i] = _clamp(_clamp(mean_square[i], 0.99, 1.01) * mean_weight[i], 1e-4, 1e4)
        adaptive.update(AdaptiveRegularisation.batch_statistics(coefficients[:, :2], coefficients[:, 2:]))
        assert adaptive.mean_square.tolist() == pytest.approx(mean_square, rel=1e-12)
        assert adaptive.mean_weight.tolist() == pytest.approx(mean_weight, rel=1e-12)
        assert adaptive.weight.tolist() == pytest.approx(weight, rel=1e-12)
    # The large first coefficient has E[a^2] > 1 after step 2: its weight grows, the others shrink.
    assert weight[0] > 0.099 and weight[1] < 0.099
    assert adaptive.shape_weights.tolist() == pytest.approx(weight[:2])
    assert adaptive.albedo_weights.tolist() == pytest.approx(weight[2:])


def test_weight_clamp_and_disabled():
    config = AdaptiveConfig(initial_mean_weight=1e5, initial_mean_square=50.0)
    adaptive = AdaptiveRegularisation(1, 1, config)
    assert adaptive.weight.tolist() == [1e4, 1e4]
    frozen = AdaptiveRegularisation(1, 1, AdaptiveConfig(enabled=False))
    before = frozen.weight.clone()
    frozen.update(AdaptiveRegularisation.batch_statistics(torch.full((3, 1), 9.0), torch.full((3, 1), 9.0)))
    assert torch.equal(frozen.weight, before)


def test_split_statistics_equal_whole_batch_and_state_round_trip():
    torch.manual_seed(0)
    shape, albedo = torch.randn(6, 4) * 3, torch.randn(6, 2)
    whole = AdaptiveRegularisation(4, 2)
    whole.update(AdaptiveRegularisation.batch_statistics(shape, albedo))
    split = AdaptiveRegularisation(4, 2)
    split.update(AdaptiveRegularisation.batch_statistics(shape[:2], albedo[:2])
                 + AdaptiveRegularisation.batch_statistics(shape[2:], albedo[2:]))
    assert torch.allclose(whole.weight, split.weight, rtol=1e-14, atol=0)
    copy = AdaptiveRegularisation(4, 2)
    copy.load_state_dict(whole.state_dict())
    assert torch.equal(copy.weight, whole.weight) and torch.equal(copy.mean_square, whole.mean_square)
    with pytest.raises(ValueError):
        AdaptiveRegularisation(3, 2).load_state_dict(whole.state_dict())
