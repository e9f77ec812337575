"""Error measures shared by the tests, the evaluation command and training reports."""

from __future__ import annotations

import torch


def inter_ocular_distance(five: torch.Tensor) -> torch.Tensor:
    """Distance (...,) between the two eye centres of 5-point landmarks (..., 5, 2) in CelebA order."""
    return (five[..., 0, :] - five[..., 1, :]).norm(dim=-1)


def landmark_error(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean point distance over the inter-ocular distance, in percent (seed J).

    Args:
        predicted, truth: (B, L, 2) landmarks in pixels; the first two points of ``truth``
            must be the eye centres when L == 5; for L == 68 the eye centres are the means
            of points 36-41 and 42-47.

    Returns:
        (B,) error per image in percent.
    """
    if truth.shape[-2] == 68:
        eyes = torch.stack([truth[..., 36:42, :].mean(-2), truth[..., 42:48, :].mean(-2)], dim=-2)
    else:
        eyes = truth[..., :2, :]
    distance = (predicted - truth).norm(dim=-1).mean(dim=-1)
    return 100.0 * distance / (eyes[..., 0, :] - eyes[..., 1, :]).norm(dim=-1)


def similarity_align(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``source`` (B, V, 3) moved by the least-squares similarity transform onto ``target`` (B, V, 3).

    Umeyama's closed form: rotation from the SVD of the cross-covariance (reflections
    excluded), scale from the singular values, translation from the centroids.
    """
    source_mean = source.mean(dim=-2, keepdim=True)
    target_mean = target.mean(dim=-2, keepdim=True)
    centred_source = source - source_mean
    centred_target = target - target_mean
    covariance = centred_target.transpose(-1, -2) @ centred_source / source.shape[-2]
    u, singular, vh = torch.linalg.svd(covariance)
    sign = torch.sign(torch.linalg.det(u @ vh))
    correction = torch.ones_like(singular)
    correction[..., -1] = sign
    rotation = u @ torch.diag_embed(correction) @ vh
    variance = centred_source.pow(2).sum(dim=(-1, -2)) / source.shape[-2]
    scale = (singular * correction).sum(-1) / variance
    return scale[..., None, None] * centred_source @ rotation.transpose(-1, -2) + target_mean


def vertex_error(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean distance (B,) between ``truth`` and ``predicted`` (B, V, 3) after similarity alignment (units of truth)."""
    return (similarity_align(predicted, truth) - truth).norm(dim=-1).mean(dim=-1)


def rotation_error_degrees(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Angle (B,) in degrees of the rotation taking ``truth`` (B, 3, 3) to ``predicted`` (B, 3, 3)."""
    relative = predicted @ truth.transpose(-1, -2)
    cosine = ((relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cosine))
