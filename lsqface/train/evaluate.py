"""A learning signal that needs no real data: 5-landmark error on held-out synthetic faces.

Held-out faces are drawn from the main-training synthetic distribution with
seeds no training step uses (lsqface.train.data, purpose "evaluate"). The
network's maps go through :func:`lsqface.reconstruct.reconstruct_from_maps`
(the path users run), and the "Fitted" 5 landmarks are compared with the true
ones: mean point distance over the inter-ocular distance, in percent (seed J).
The "Direct" landmarks (seed I) need no fit: each landmark vertex is placed at
the confident pixel whose predicted (u, v) is nearest its own, and each of the 5
landmarks is the mean of its vertices' positions; they measure the
correspondence map alone.
"""

from __future__ import annotations

import dataclasses

import torch

from lsqface.data.synthetic import generate_faces
from lsqface.errors import SolverError
from lsqface.evaluate.metrics import landmark_error
from lsqface.morphable.uv_model import UVMorphableModel
from lsqface.nets.unet import UNet
from lsqface.reconstruct import ReconstructConfig, network_input, reconstruct_from_maps
from lsqface.train.config import TrainConfig
from lsqface.train.data import position_generator, synthetic_config


def direct_landmarks_5(uv_model: UVMorphableModel, correspondence: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """(B, 5, 2) landmarks read off a correspondence map, pixels (centres at j + 0.5, i + 0.5).

    Args:
        correspondence: (B, 2, H, W) predicted (u, v); confidence: (B, C, H, W), channel 0 is used:
            only pixels above half the image's maximum confidence are searched.
    """
    batch, _, height, width = correspondence.shape
    groups = torch.as_tensor(uv_model.model.landmarks_5, dtype=torch.int64)  # (5, k)
    vertex_uv = torch.as_tensor(uv_model.vertex_uv, dtype=torch.float32)[groups.reshape(-1)]  # (5k, 2)
    uv = correspondence.detach().float().reshape(batch, 2, -1).transpose(1, 2)  # (B, HW, 2)
    weight = confidence[:, 0].detach().reshape(batch, -1)
    confident = weight >= 0.5 * weight.amax(dim=1, keepdim=True)
    distance = torch.cdist(vertex_uv.expand(batch, -1, -1), uv)  # (B, 5k, HW)
    distance = distance.masked_fill(~confident[:, None, :], float("inf"))
    index = distance.argmin(dim=2)  # (B, 5k)
    pixels = torch.stack([(index % width).float() + 0.5, torch.div(index, width, rounding_mode="floor").float() + 0.5], dim=-1)
    return pixels.reshape(batch, groups.shape[0], groups.shape[1], 2).mean(dim=2)


def held_out_faces(uv_model: UVMorphableModel, config: TrainConfig, count: int):
    """``count`` synthetic faces (lsqface.data.SyntheticFaces) that training never draws."""
    seeds = [int(position_generator(config.seed, index, "evaluate").initial_seed() % (1 << 31)) for index in range(count)]
    data = dataclasses.replace(config.data, background="procedural" if config.data.background == "none" else config.data.background)
    synthetic = synthetic_config(data, config.input_size)
    if synthetic.background == "none":
        synthetic = dataclasses.replace(synthetic, background="procedural")
    return generate_faces(uv_model, seeds, synthetic)


@torch.no_grad()
def synthetic_landmark_error(network: UNet, uv_model: UVMorphableModel, config: TrainConfig, count: int = 64,
                             batch_size: int = 16, faces=None) -> dict[str, float]:
    """Fitted 5-landmark error (percent of the inter-ocular distance) of ``network`` on held-out synthetic faces.

    Args:
        network: the U-Net (evaluated in eval mode, then put back in its previous mode).
        uv_model: the UV-3DMM it predicts into.
        config: the run's settings (input size, solver, data distribution, seed).
        count: number of held-out faces.
        batch_size: faces per forward pass.
        faces: optional pre-drawn faces (from :func:`held_out_faces`) to compare several networks on.

    Returns:
        {"mean": ..., "median": ..., "direct_mean": ..., "direct_median": ..., "count": ..., "failed": ...}:
        fitted and direct errors in percent; a fitted error is capped at 100 % (a failed solve counts
        as 100 % and in "failed").
    """
    faces = held_out_faces(uv_model, config, count) if faces is None else faces
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device
    reconstruct_config = ReconstructConfig(input_size=config.input_size, solver=config.solver, sampling_seed=config.seed)
    errors, direct_errors, failed = [], [], 0
    try:
        for start in range(0, faces.image.shape[0], batch_size):
            images = faces.image[start:start + batch_size].to(device)
            maps = network(network_input(images, config.solver.softplus_eps))
            truth = faces.landmarks_5[start:start + batch_size].to(torch.float64)
            direct = direct_landmarks_5(uv_model, maps.correspondence, maps.confidence).cpu().to(torch.float64)
            direct_errors.append(landmark_error(direct, truth))
            try:
                result = reconstruct_from_maps(uv_model, images, maps.correspondence, maps.depth, maps.confidence,
                                               config=reconstruct_config)
                error = landmark_error(result.landmarks_5.cpu().to(torch.float64), truth)
                error = torch.where(torch.isfinite(error), error, torch.full_like(error, 100.0)).clamp(max=100.0)
            except SolverError:
                error = torch.full((images.shape[0],), 100.0, dtype=torch.float64)
                failed += images.shape[0]
            errors.append(error)
    finally:
        network.train(was_training)
    errors, direct_errors = torch.cat(errors), torch.cat(direct_errors)
    return {"mean": float(errors.mean()), "median": float(errors.median()),
            "direct_mean": float(direct_errors.mean()), "direct_median": float(direct_errors.median()),
            "count": int(errors.numel()), "failed": failed}
