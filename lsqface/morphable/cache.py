"""The UV-3DMM cache: build once per source and settings, then load in a fraction of a second.

A cache file is an uncompressed ``.npz`` (no pickled objects, memory-mapped when read) under
``lsqface.files.cache_dir() / "uv-3dmm"``, named by a sha256 key over the
source's content fingerprint, the UV size, the face region, the landmark
file's content and the cache format version. It holds the per-vertex
``MorphableModel`` too, so loading needs no access to the source. It is
written to a temporary name and renamed, so two processes building the same
cache at once each write a whole file and the last rename wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from lsqface.errors import CacheError
from lsqface.files import atomic_path, cache_dir
from lsqface.morphable.model import MorphableModel
from lsqface.morphable.uv_model import UVMorphableModel

logger = logging.getLogger(__name__)

# Bump when the cache layout or the way the UV images are built changes.
CACHE_FORMAT_VERSION = 2
_MAGIC = "lsqface-uv-3dmm"

_MODEL_ARRAYS = (
    "shape_mean",
    "identity_basis",
    "expression_basis",
    "albedo_mean",
    "albedo_basis",
    "triangles",
    "landmarks_68",
    "landmarks_5",
)
_IMAGE_ARRAYS = ("shape_images", "albedo_images", "normal_image", "mask_image")


def uv_model_cache_folder() -> Path:
    """The default folder of UV-3DMM cache files: ``cache_dir() / "uv-3dmm"``."""
    return cache_dir() / "uv-3dmm"


def cache_key(
    source_fingerprint: str, size: int, region: str | None = None, landmark_content: bytes | None = None, loader_version: str = ""
) -> str:
    """The sha256 hex key of a UV-3DMM built from a source with these settings."""
    settings = {
        "format": CACHE_FORMAT_VERSION,
        "source": source_fingerprint,
        "size": int(size),
        "region": region,
        "landmarks": None if landmark_content is None else hashlib.sha256(landmark_content).hexdigest(),
        "loader": str(loader_version),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()


def write_uv_model_cache(uv_model: UVMorphableModel, path: str | os.PathLike) -> Path:
    """Write ``uv_model`` to ``path`` (uncompressed .npz) atomically; returns the path."""
    model = uv_model.model
    header = {
        "magic": _MAGIC,
        "format": CACHE_FORMAT_VERSION,
        "name": model.name,
        "expression_names": list(model.expression_names),
        "source_hash": model.source_hash,
        "notes": model.notes,
    }
    arrays = {name: np.ascontiguousarray(getattr(model, name)) for name in _MODEL_ARRAYS}
    # Images are stored pixel-major, (S, S, C), the layout sampling reads fastest.
    arrays.update(
        {name: getattr(uv_model, name).detach().cpu().permute(1, 2, 0).contiguous().numpy() for name in _IMAGE_ARRAYS}
    )
    arrays["vertex_uv"] = np.ascontiguousarray(uv_model.vertex_uv)
    arrays["header"] = np.frombuffer(json.dumps(header, default=str).encode("utf-8"), dtype=np.uint8)
    path = Path(path)
    with atomic_path(path) as temporary:
        # A file object, so numpy does not append ".npz" to the temporary name.
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
    return path


def _memory_map_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an uncompressed .npz, memory-mapped copy-on-write (pages are read when used).

    ``np.load`` copies each member of an .npz into memory; mapping them instead
    makes opening a 300 MB cache take milliseconds.
    """
    arrays = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename} is compressed or not an array")
            handle.seek(info.header_offset)
            local_header = handle.read(30)
            if len(local_header) != 30 or local_header[:4] != b"PK\x03\x04":
                raise ValueError(f"member {info.filename} has no local header")
            name_length = int.from_bytes(local_header[26:28], "little")
            extra_length = int.from_bytes(local_header[28:30], "little")
            handle.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(handle)
            if dtype.hasobject:
                raise ValueError(f"member {info.filename} holds Python objects")
            offset = handle.tell()
            count = int(np.prod(shape)) * dtype.itemsize
            if offset + count > info.header_offset + 30 + name_length + extra_length + info.file_size:
                raise ValueError(f"member {info.filename} is shorter than its header says")
            if count == 0:
                array = np.zeros(shape, dtype=dtype)
            else:
                array = np.memmap(handle, dtype=dtype, mode="c", offset=offset, shape=shape, order="F" if fortran_order else "C")
            arrays[info.filename[: -len(".npy")]] = array
    return arrays


def read_uv_model_cache(path: str | os.PathLike) -> UVMorphableModel:
    """Load a UV-3DMM cache file written by ``write_uv_model_cache``.

    Raises:
        CacheError: the file is missing, cut short, not a lsqface UV-3DMM cache,
            or from another cache format version.
    """
    path = Path(path)
    hint = f"delete {path} or run `lsqface model build --rebuild`"
    try:
        arrays = _memory_map_npz(path)
        if "header" not in arrays:
            raise CacheError(f"{path} is not a lsqface UV-3DMM cache; {hint}.")
        header = json.loads(np.asarray(arrays.pop("header")).tobytes().decode("utf-8"))
        if not isinstance(header, dict) or header.get("magic") != _MAGIC:
            raise CacheError(f"{path} is not a lsqface UV-3DMM cache; {hint}.")
        if header.get("format") != CACHE_FORMAT_VERSION:
            raise CacheError(
                f"{path} is a UV-3DMM cache of format {header.get('format')}, this lsqface reads format "
                f"{CACHE_FORMAT_VERSION}; {hint}."
            )
        missing = {"vertex_uv", *_MODEL_ARRAYS, *_IMAGE_ARRAYS} - set(arrays)
        if missing:
            raise CacheError(f"{path} lacks {', '.join(sorted(missing))}; {hint}.")
    except CacheError:
        raise
    except FileNotFoundError as error:
        raise CacheError(f"The UV-3DMM cache {path} does not exist; run `lsqface model build`.") from error
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise CacheError(f"The UV-3DMM cache {path} is cut short or damaged ({error}); {hint}.") from error

    model = MorphableModel(
        name=str(header["name"]),
        **{name: arrays[name] for name in _MODEL_ARRAYS},
        expression_names=tuple(header.get("expression_names", ())),
        source_hash=str(header.get("source_hash", "")),
        notes=dict(header.get("notes") or {}),
    )
    size = arrays["mask_image"].shape[0]
    expected = {
        "shape_images": (size, size, 3 + 3 * model.n_shape),
        "albedo_images": (size, size, 3 + 3 * model.n_albedo),
        "normal_image": (size, size, 3),
        "mask_image": (size, size, 1),
        "vertex_uv": (model.n_vertices, 2),
    }
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise CacheError(f"{path} holds {name} of shape {arrays[name].shape}, expected {shape}; {hint}.")
    return UVMorphableModel(
        model=model,
        vertex_uv=arrays["vertex_uv"],
        **{name: torch.from_numpy(arrays[name]).permute(2, 0, 1) for name in _IMAGE_ARRAYS},
    )


def load_uv_model(
    source: str | os.PathLike | None = None,
    size: int = 320,
    *,
    download: bool = False,
    rebuild: bool = False,
    region: str | None = None,
    landmarks: str | os.PathLike | None = None,
    cache_folder: str | os.PathLike | None = None,
) -> UVMorphableModel:
    """The UV-3DMM of a face-model source: from the cache, or built and cached.

    Args:
        source: ICT-FaceKit archive/folder/zip or BFM 2017 .h5; None finds ICT-FaceKit
            (see ``lsqface.morphable.sources.resolve_source``).
        size: S, the UV image size in pixels.
        download: download ICT-FaceKit if no source is given or found.
        rebuild: build again even if a cache file exists.
        region: ICT-FaceKit face region ("full" or "narrow"); None is ``ict.DEFAULT_REGION`` ("narrow").
        landmarks: optional file of 68 landmark vertex indices replacing the source's own.
        cache_folder: where cache files live (default ``uv_model_cache_folder()``).

    A cache file that cannot be read is rebuilt, with a logged warning.

    Raises:
        FaceModelError: the source is missing or malformed.
        ConfigError: ``size`` is below 2 pixels.
    """
    from lsqface.errors import ConfigError, FaceModelError
    from lsqface.morphable import sources
    from lsqface.morphable.uv_build import build_uv_model

    if int(size) < 2:
        raise ConfigError(f"The UV image size must be at least 2 pixels, got {size}; pass a size such as 320.")
    path = sources.resolve_source(source, download=download)
    landmark_content = None
    if landmarks is not None:
        try:
            landmark_content = Path(landmarks).read_bytes()
        except OSError as error:
            raise FaceModelError(f"The landmark file {landmarks} cannot be read ({error}); pass a readable file.") from error
    if region is None:
        from lsqface.morphable.ict import DEFAULT_REGION

        region = DEFAULT_REGION
    key = cache_key(
        sources.source_fingerprint(path),
        size,
        region,
        landmark_content,
        loader_version=getattr(sources, "LOADER_VERSION", ""),
    )
    folder = Path(cache_folder) if cache_folder is not None else uv_model_cache_folder()
    cache_path = folder / f"{key}.npz"
    if cache_path.exists() and not rebuild:
        try:
            return read_uv_model_cache(cache_path)
        except CacheError as error:
            logger.warning("Rebuilding the UV-3DMM cache: %s", error)
    model = sources.load_source(path, region=region, landmarks=landmarks)
    uv_model = build_uv_model(model, size=int(size))
    write_uv_model_cache(uv_model, cache_path)
    return uv_model
