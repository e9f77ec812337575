"""Fixtures of the evaluation tests: a tiny untrained network as a Reconstructor, built once per test run."""

import pytest


@pytest.fixture(scope="module")
def tiny_reconstructor(tiny_checkpoint, ict_uv_model, built_once):
    from lsqface.reconstruct import Reconstructor

    return built_once("tiny_reconstructor", lambda: Reconstructor.from_checkpoint(tiny_checkpoint, uv_model=ict_uv_model))
