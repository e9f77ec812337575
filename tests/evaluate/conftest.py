"""Fixtures of the evaluation tests: a tiny untrained network as a Reconstructor."""

import pytest


@pytest.fixture(scope="session")
def tiny_reconstructor(tiny_checkpoint, ict_uv_model):
    from lsqface.reconstruct import Reconstructor

    return Reconstructor.from_checkpoint(tiny_checkpoint, uv_model=ict_uv_model)
