"""Softplus pre-processing of input images (seed E).

Dark pixels make the photometric least squares unstable (the inverse shading
divides by the pixel value), so input values in [0, 1] are lifted away from
zero by ``i' = log(1 + exp(eps i)) / eps``; outputs are mapped back for
display with the exact inverse ``i = log(exp(eps i') - 1) / eps``.
With eps = 4, 0 maps to log(2) / 4 = 0.173 and 1 to 1.0045.
"""

from __future__ import annotations

import torch


def softplus_preprocess(image: torch.Tensor, eps: float = 4.0) -> torch.Tensor:
    """``log(1 + exp(eps i)) / eps`` elementwise, in a form that never overflows.

    Args:
        image: (B, 3, H, W) (or any shape) pixel values, nominally in [0, 1].
        eps: the softplus scale (seed E uses 4); larger lifts dark pixels less.

    Returns:
        Same shape, all values > 0.
    """
    scaled = eps * image
    return (scaled.clamp_min(0) + torch.log1p(torch.exp(-scaled.abs()))) / eps


def inverse_softplus_preprocess(image: torch.Tensor, eps: float = 4.0) -> torch.Tensor:
    """The exact inverse of :func:`softplus_preprocess`: ``log(exp(eps i') - 1) / eps``.

    Computed as ``i' + log(-expm1(-eps i')) / eps`` to stay accurate for large
    and small values alike. Values must be > 0 (the range of the softplus);
    values <= 0 give -inf or NaN, as the inverse is undefined there.

    Args:
        image: (B, 3, H, W) (or any shape) pre-processed pixel values.
        eps: the softplus scale used in the forward direction.
    """
    return image + torch.log(-torch.expm1(-eps * image)) / eps
