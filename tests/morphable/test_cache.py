"""The UV-3DMM cache: round trip, keys, damaged files, rebuilding, and two processes building it at once."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lsqface.errors import CacheError
from lsqface.morphable import cache
from lsqface.morphable.cache import load_uv_model, read_uv_model_cache, write_uv_model_cache
from lsqface.morphable.sources import load_source
from lsqface.morphable.uv_build import build_uv_model

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def write_tiny_bfm(path: Path, n: int = 12, seed: int = 0) -> Path:
    """A BFM 2017-layout .h5 of an n x n bumpy grid (mm, facing +z, y up) with a one-cell hole."""
    generator = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.linspace(-60, 60, n), np.linspace(-60, 60, n))
    points = np.stack([xs.ravel(), ys.ravel(), 30 * np.exp(-(xs**2 + ys**2).ravel() / 2000)], axis=1)
    triangles = []
    for row in range(n - 1):
        for column in range(n - 1):
            if (row, column) == (4, 5):
                continue
            a, b, c, d = row * n + column, row * n + column + 1, (row + 1) * n + column, (row + 1) * n + column + 1
            triangles += [[a, b, d], [a, d, c]]
    triangles = np.array(triangles)
    vertices = n * n

    def basis(columns: int) -> np.ndarray:
        return np.linalg.qr(generator.standard_normal((3 * vertices, columns)))[0].astype(np.float32)

    arrays = {
        "shape/model/mean": points.ravel().astype(np.float32),
        "shape/model/pcaBasis": basis(6),
        "shape/model/pcaVariance": np.array([400, 100, 50, 20, 9, 4], np.float32),
        "shape/representer/points": points.T.astype(np.float32),
        "shape/representer/cells": triangles.T.astype(np.uint32),
        "color/model/mean": generator.uniform(0.3, 0.7, 3 * vertices).astype(np.float32),
        "color/model/pcaBasis": basis(4),
        "color/model/pcaVariance": np.array([0.5, 0.2, 0.1, 0.05], np.float32),
        "expression/model/mean": np.zeros(3 * vertices, np.float32),
        "expression/model/pcaBasis": basis(3),
        "expression/model/pcaVariance": np.array([30, 10, 3], np.float32),
    }
    with h5py.File(path, "w") as handle:
        for name, value in arrays.items():
            handle.create_dataset(name, data=value)
    return path


def assert_same_uv_model(a, b) -> None:
    for name in ("shape_images", "albedo_images", "normal_image", "mask_image"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    np.testing.assert_array_equal(a.vertex_uv, b.vertex_uv)
    for name in ("shape_mean", "identity_basis", "expression_basis", "albedo_mean", "albedo_basis", "triangles", "landmarks_68", "landmarks_5"):
        np.testing.assert_array_equal(getattr(a.model, name), getattr(b.model, name), err_msg=name)
    assert (a.model.name, a.model.expression_names, a.model.source_hash) == (b.model.name, b.model.expression_names, b.model.source_hash)


@pytest.fixture()
def tiny_source(tmp_path) -> Path:
    return write_tiny_bfm(tmp_path / "tiny.h5")


def test_round_trip_of_the_ict_uv_model(ict_uv_model, tmp_path):
    path = write_uv_model_cache(ict_uv_model, tmp_path / "ict.npz")
    loaded = read_uv_model_cache(path)
    assert_same_uv_model(ict_uv_model, loaded)
    assert loaded.model.notes == ict_uv_model.model.notes
    assert loaded.shape_images.permute(1, 2, 0).is_contiguous()  # pixel-major, the fast sampling layout
    assert [p.name for p in tmp_path.iterdir()] == ["ict.npz"]  # no temporary left behind


def test_load_builds_then_reads_the_cache(tiny_source, tmp_path):
    folder = tmp_path / "cache"
    built = load_uv_model(tiny_source, size=24, cache_folder=folder)
    files = list(folder.glob("*.npz"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = load_uv_model(tiny_source, size=24, cache_folder=folder)
    assert files[0].stat().st_mtime_ns == stamp
    assert_same_uv_model(built, again)
    assert_same_uv_model(built, build_uv_model(load_source(tiny_source), size=24))
    # Another size is another key; --rebuild rewrites the same file.
    load_uv_model(tiny_source, size=16, cache_folder=folder)
    assert len(list(folder.glob("*.npz"))) == 2
    load_uv_model(tiny_source, size=24, cache_folder=folder, rebuild=True)
    assert len(list(folder.glob("*.npz"))) == 2


def test_key_depends_on_every_setting():
    base = cache.cache_key("abc", 320, "full", None, "1")
    others = [
        cache.cache_key("abd", 320, "full", None, "1"),
        cache.cache_key("abc", 321, "full", None, "1"),
        cache.cache_key("abc", 320, "narrow", None, "1"),
        cache.cache_key("abc", 320, "full", b"1 2 3", "1"),
        cache.cache_key("abc", 320, "full", None, "2"),
    ]
    assert len({base, *others}) == 6


def test_default_folder_follows_xdg_cache_home(tiny_source, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load_uv_model(tiny_source, size=8)
    assert len(list((tmp_path / "xdg" / "lsqface" / "uv-3dmm").glob("*.npz"))) == 1


def test_truncated_foreign_and_old_files_raise_cache_error(tiny_source, tmp_path):
    uv_model = build_uv_model(load_source(tiny_source), size=16)
    path = write_uv_model_cache(uv_model, tmp_path / "good.npz")
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 10):
        truncated = tmp_path / f"cut{cut}.npz"
        truncated.write_bytes(data[:cut])
        with pytest.raises(CacheError, match="cut short or damaged|not a lsqface"):
            read_uv_model_cache(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, something=np.zeros(3))
    with pytest.raises(CacheError, match="not a lsqface UV-3DMM cache"):
        read_uv_model_cache(foreign)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(CacheError):
        read_uv_model_cache(text)
    with pytest.raises(CacheError, match="does not exist"):
        read_uv_model_cache(tmp_path / "missing.npz")


def test_other_format_version_raises_cache_error(tiny_source, tmp_path, monkeypatch):
    uv_model = build_uv_model(load_source(tiny_source), size=8)
    monkeypatch.setattr(cache, "CACHE_FORMAT_VERSION", cache.CACHE_FORMAT_VERSION + 1)
    path = write_uv_model_cache(uv_model, tmp_path / "future.npz")
    monkeypatch.undo()
    with pytest.raises(CacheError, match="format"):
        read_uv_model_cache(path)


def test_corrupt_cache_is_rebuilt_with_a_warning(tiny_source, tmp_path, caplog):
    folder = tmp_path / "cache"
    built = load_uv_model(tiny_source, size=16, cache_folder=folder)
    (path,) = folder.glob("*.npz")
    path.write_bytes(path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="lsqface.morphable.cache"):
        rebuilt = load_uv_model(tiny_source, size=16, cache_folder=folder)
    assert any("Rebuilding" in record.getMessage() for record in caplog.records)
    assert_same_uv_model(built, rebuilt)
    assert_same_uv_model(built, read_uv_model_cache(path))


@pytest.mark.slow  # two fresh interpreters import torch at once: about 6 s on 2 cores
def test_two_processes_building_the_same_cache_at_once(tiny_source, tmp_path):
    folder = tmp_path / "cache"
    script = (
        "import sys; from lsqface.morphable.cache import load_uv_model; "
        "load_uv_model(sys.argv[1], size=48, cache_folder=sys.argv[2], rebuild=True)"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(tiny_source), str(folder)], env=environment, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for process in processes:
        _, error = process.communicate(timeout=120)
        assert process.returncode == 0, error.decode()
    files = list(folder.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporaries left
    assert_same_uv_model(read_uv_model_cache(files[0]), build_uv_model(load_source(tiny_source), size=48))
