"""Shared test fixtures.

``ict_model``: the real ICT-FaceKit model (full face region) loaded once per
test run from ``../shared/data/ICT-FaceKit-FaceXModel.tar.xz`` relative to the
repository root (about 7 s); tests using it are skipped where that file is absent.
The expensive fixtures are module-scoped and read their value through ``built_once``,
which builds it the first time any test asks and keeps it in the test run's
``config.stash`` for every later module.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
ICT_ARCHIVE = REPOSITORY_ROOT.parent / "shared" / "data" / "ICT-FaceKit-FaceXModel.tar.xz"
ICT_SKIP_REASON = f"ICT-FaceKit archive not found at {ICT_ARCHIVE} (../shared/data relative to the repository root)"
_BUILT = pytest.StashKey[dict]()


@pytest.fixture(scope="module")
def built_once(request):
    """``get(name, build)``: ``build()``'s value, built the first time the test run asks for ``name``."""
    built = request.config.stash.setdefault(_BUILT, {})

    def get(name, build):
        if name not in built:
            built[name] = build()
        return built[name]

    return get


@pytest.fixture(scope="module")
def ict_archive() -> Path:
    """Path of the real ICT-FaceKit .tar.xz; skips the test where it is absent."""
    if not ICT_ARCHIVE.is_file():
        pytest.skip(ICT_SKIP_REASON)
    return ICT_ARCHIVE


@pytest.fixture(scope="module")
def ict_model(ict_archive, built_once):
    """The ICT-FaceKit MorphableModel, default (narrow) face region, loaded once per test run (several seconds)."""
    from lsqface.morphable.ict import load_ict

    return built_once("ict_model", lambda: load_ict(ict_archive))


@pytest.fixture(scope="module")
def ict_raw_files(ict_archive, built_once) -> dict[str, bytes]:
    """Raw bytes of a few FaceXModel files read straight from the real archive (about 2 s, once per test run).

    Keys: generic_neutral_mesh.obj, identity000.obj, jawOpen.obj, vertex_indices.json.
    """
    def read() -> dict[str, bytes]:
        wanted = {"generic_neutral_mesh.obj", "identity000.obj", "jawOpen.obj", "vertex_indices.json"}
        found: dict[str, bytes] = {}
        with tarfile.open(ict_archive, mode="r|*") as archive:
            for member in archive:
                name = member.name.rsplit("/", 1)[-1]
                if name in wanted and member.isfile():
                    found[name] = archive.extractfile(member).read()
                    if len(found) == len(wanted):
                        break
        return found

    return built_once("ict_raw_files", read)


@pytest.fixture(scope="module")
def ict_uv_model(ict_model, built_once):
    """The UV-3DMM of ``ict_model`` at 128x128 (small for speed), built once per test run (under a second)."""
    from lsqface.morphable.uv_build import build_uv_model

    return built_once("ict_uv_model", lambda: build_uv_model(ict_model, size=128))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, ict_uv_model, built_once):
    """An untrained narrow U-Net (32 px input, width 0.125) saved as a checkpoint.

    Its output head is scaled up so the maps vary across the image (the solve then finds some
    face, not a degenerate one), and the confidence biases raised so the direct landmark reading
    has confident pixels to search.
    """
    import torch

    from lsqface.nets.checkpoint import config_dict, face_model_summary, save_checkpoint
    from lsqface.nets.unet import UNet, UNetConfig
    from lsqface.solver.fit import SolverConfig

    def save() -> Path:
        torch.manual_seed(0)
        config = UNetConfig(variant="narrow", width=0.125)
        network = UNet(config)
        with torch.no_grad():
            network.output_head.weight.mul_(30.0)
            network.output_head.bias[3:5] += 2.0
        path = tmp_path_factory.mktemp("checkpoint") / "tiny.pt"
        save_checkpoint(path, {
            "network_config": config_dict(config),
            "input_size": 32,
            "network_state": network.state_dict(),
            "solver_config": config_dict(SolverConfig(sample_count=500)),
            "face_model": face_model_summary(ict_uv_model),
        })
        return path

    return built_once("tiny_checkpoint", save)


@pytest.fixture
def run_cli(monkeypatch, ict_uv_model):
    """Run ``lsqface.cli.main(args)`` with the test run's 128 px UV-3DMM instead of the default 320 px one."""
    import lsqface.morphable.cache as cache
    from lsqface.cli import main

    monkeypatch.setattr(cache, "load_uv_model", lambda *args, **kwargs: ict_uv_model)
    return main
