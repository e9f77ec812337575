"""Fixtures of the evaluation tests: a tiny untrained network as a Reconstructor."""

import pytest
import torch

from lsqface.nets.checkpoint import config_dict, face_model_summary, save_checkpoint
from lsqface.nets.unet import UNet, UNetConfig
from lsqface.solver.fit import SolverConfig


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, ict_uv_model):
    """An untrained narrow U-Net (32 px input) whose output head is scaled up so its maps vary across the image."""
    torch.manual_seed(0)
    config = UNetConfig(variant="narrow", width=0.125)
    network = UNet(config)
    with torch.no_grad():
        network.output_head.weight.mul_(30.0)
        network.output_head.bias[3:5] += 2.0  # confident enough somewhere for the direct landmarks to search
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.pt"
    save_checkpoint(path, {
        "network_config": config_dict(config),
        "input_size": 32,
        "network_state": network.state_dict(),
        "solver_config": config_dict(SolverConfig(sample_count=500)),
        "face_model": face_model_summary(ict_uv_model),
    })
    return path


@pytest.fixture(scope="session")
def tiny_reconstructor(tiny_checkpoint, ict_uv_model):
    from lsqface.reconstruct import Reconstructor

    return Reconstructor.from_checkpoint(tiny_checkpoint, uv_model=ict_uv_model)
