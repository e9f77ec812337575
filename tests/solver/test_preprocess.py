import math

import torch

from lsqface.solver.preprocess import inverse_softplus_preprocess, softplus_preprocess


def test_matches_the_definition():
    image = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    expected = torch.log(1 + torch.exp(4.0 * image)) / 4.0
    torch.testing.assert_close(softplus_preprocess(image), expected, rtol=1e-14, atol=0)
    assert math.isclose(softplus_preprocess(torch.zeros(1, dtype=torch.float64)).item(), math.log(2) / 4)


def test_round_trip_is_exact_in_float64():
    image = torch.linspace(-0.5, 1.5, 2001, dtype=torch.float64)
    for eps in (1.0, 4.0, 20.0):
        back = inverse_softplus_preprocess(softplus_preprocess(image, eps), eps)
        torch.testing.assert_close(back, image, rtol=0, atol=1e-12)


def test_no_overflow_for_large_inputs():
    image = torch.tensor([1e4, -1e4], dtype=torch.float32)
    out = softplus_preprocess(image, 4.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], image[0])
