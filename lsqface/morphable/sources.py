"""Where a face model comes from: finding, downloading, fingerprinting and loading 3DMM sources.

Two sources are supported: ICT-FaceKit (MIT licence; a ``.tar.xz`` of its
``FaceXModel/`` folder, that folder unpacked, or a GitHub zip of the
repository) and the Basel Face Model 2017 (``.h5``, which users download from
the University of Basel themselves after accepting its licence).

Nothing is ever downloaded unless asked: :func:`resolve_source` with
``download=True`` fetches ICT-FaceKit's GitHub zip into the user's cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from lsqface.errors import FaceModelError
from lsqface.files import atomic_path, cache_dir
from lsqface.morphable.model import MorphableModel

ICT_GITHUB_ZIP_URL = "https://github.com/ICT-VGL/ICT-FaceKit/archive/refs/heads/master.zip"
ICT_ARCHIVE_NAME = "ICT-FaceKit-FaceXModel.tar.xz"
ICT_ZIP_NAME = "ICT-FaceKit-master.zip"
# Bumped whenever a loader's output for the same source changes, so caches keyed on source_hash rebuild.
LOADER_VERSION = "2"


def source_cache_dir() -> Path:
    """The folder where downloaded face-model sources are kept: ``cache_dir() / "sources"``."""
    return cache_dir() / "sources"


def default_search_paths() -> list[Path]:
    """Where :func:`resolve_source` looks for ICT-FaceKit, in order.

    1. the user's cache (a previously downloaded GitHub zip, or a .tar.xz placed there),
    2. ``../shared/data/ICT-FaceKit-FaceXModel.tar.xz`` relative to the current folder,
    3. the same relative to the repository root (the folder holding the ``lsqface`` package).
    """
    import lsqface

    repository_root = Path(lsqface.__file__).resolve().parents[1]
    relative = Path("..") / "shared" / "data" / ICT_ARCHIVE_NAME
    return [
        source_cache_dir() / ICT_ZIP_NAME,
        source_cache_dir() / ICT_ARCHIVE_NAME,
        (Path.cwd() / relative).resolve(),
        (repository_root / relative).resolve(),
    ]


def resolve_source(
    path: str | os.PathLike | None = None,
    *,
    download: bool = False,
    search_paths: Sequence[Path] | None = None,
    download_url: str = ICT_GITHUB_ZIP_URL,
) -> Path:
    """The path of a face-model source: the one given, else the first ICT-FaceKit found, else a download.

    Args:
        path: a source the user named (checked to exist and be readable), or None to search.
        download: with no path and nothing found, download ICT-FaceKit's GitHub zip into
            :func:`source_cache_dir` (with a progress bar). Never done unless True.
        search_paths: where to look when ``path`` is None (default :func:`default_search_paths`).
        download_url: the zip to download (tests point it at a ``file://`` URL).

    Raises:
        FaceModelError: the named path is missing or unreadable, or nothing was found and
            ``download`` is False, or the download failed.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.exists():
            raise FaceModelError(
                f"The face-model source {path} does not exist; pass an ICT-FaceKit .tar.xz, zip or folder, "
                "or a Basel Face Model 2017 .h5."
            )
        if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
            raise FaceModelError(f"The face-model source {path} is not readable; check its permissions.")
        return path
    places = list(default_search_paths() if search_paths is None else search_paths)
    for place in places:
        if place.exists() and os.access(place, os.R_OK):
            return place
    if download:
        return download_ict(download_url, source_cache_dir() / ICT_ZIP_NAME)
    searched = ", ".join(str(place) for place in places)
    raise FaceModelError(
        f"No ICT-FaceKit face model was found (searched {searched}); pass --source PATH to an ICT-FaceKit "
        ".tar.xz, zip or folder or a Basel Face Model 2017 .h5, or pass --download to fetch ICT-FaceKit (MIT licence)."
    )


def download_ict(url: str, destination: Path) -> Path:
    """Download ICT-FaceKit's zip from ``url`` to ``destination`` atomically, with a tqdm progress bar.

    The zip is checked to hold ``FaceXModel/generic_neutral_mesh.obj`` before it
    is renamed into place, so a cut-off or wrong download never lands in the cache.
    """
    from tqdm.auto import tqdm

    try:
        with atomic_path(destination) as temporary:
            with urllib.request.urlopen(url, timeout=60) as response, open(temporary, "wb") as out:
                total = response.headers.get("Content-Length") if hasattr(response, "headers") else None
                with tqdm(
                    total=int(total) if total else None, unit="B", unit_scale=True, desc="ICT-FaceKit", leave=False
                ) as progress:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        progress.update(len(chunk))
            if not zipfile.is_zipfile(temporary):
                raise FaceModelError(f"The download from {url} is not a zip file; try again later or pass --source PATH.")
            with zipfile.ZipFile(temporary) as archive:
                if not any(name.endswith("FaceXModel/generic_neutral_mesh.obj") for name in archive.namelist()):
                    raise FaceModelError(
                        f"The download from {url} does not contain FaceXModel/generic_neutral_mesh.obj; "
                        "pass --source PATH to an ICT-FaceKit copy instead."
                    )
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise FaceModelError(
            f"Downloading ICT-FaceKit from {url} failed ({error}); check the network or pass --source PATH."
        ) from error
    return destination


def source_fingerprint(path: str | os.PathLike) -> str:
    """A sha256 hex digest of a source's content.

    A file (archive, zip, .h5) is hashed byte for byte, streamed. A folder is
    hashed over the names and contents of its model files (``*.obj``, ``*.json``,
    ``*.h5`` under it, sorted by relative path), so renaming the folder keeps the
    fingerprint and editing a model file changes it.
    """
    path = Path(path)
    digest = hashlib.sha256()
    try:
        if path.is_dir():
            files = sorted(
                (file for file in path.rglob("*") if file.is_file() and file.suffix in (".obj", ".json", ".h5")),
                key=lambda file: file.relative_to(path).as_posix(),
            )
            for file in files:
                name = file.relative_to(path).as_posix().encode("utf-8")
                digest.update(len(name).to_bytes(8, "little") + name)
                digest.update(file.stat().st_size.to_bytes(8, "little"))
                _hash_file(file, digest)
        else:
            _hash_file(path, digest)
    except OSError as error:
        raise FaceModelError(f"The face-model source {path} cannot be read ({error}); pass a readable path.") from error
    return digest.hexdigest()


def _hash_file(path: Path, digest: "hashlib._Hash") -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)


def read_landmark_file(path: str | os.PathLike, count: int = 68) -> np.ndarray:
    """Vertex indices (count,) int64 from a landmark file: JSON list or plain text (whitespace or commas).

    The indices are 0-based, in the Multi-PIE 68-point order.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise FaceModelError(f"The landmark file {path} cannot be read ({error}); pass a readable text file.") from error
    try:
        if text.lstrip().startswith(("[", "{")):
            data = json.loads(text)
            if isinstance(data, dict):
                data = data.get("landmarks_68", data.get("landmarks"))
            values = np.asarray(data)
        else:
            lines = [line.split("#", 1)[0] for line in text.splitlines()]
            values = np.asarray(" ".join(lines).replace(",", " ").split(), dtype=np.float64)
        if values.dtype == object or values.ndim != 1:
            raise ValueError("not a flat list of numbers")
        values = values.astype(np.float64)
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        raise FaceModelError(
            f"The landmark file {path} is not a list of {count} vertex indices ({error}); "
            "write one 0-based index per line or a JSON list."
        ) from error
    if values.shape != (count,) or np.any(values != np.round(values)) or np.any(values < 0):
        raise FaceModelError(
            f"The landmark file {path} holds {values.size} values, not {count} non-negative whole vertex indices; "
            f"write {count} 0-based indices in the Multi-PIE order."
        )
    return values.astype(np.int64)


def load_source(
    path: str | os.PathLike, *, region: str | None = None, landmarks: str | os.PathLike | None = None
) -> MorphableModel:
    """Load a face-model source as a :class:`MorphableModel` (mm, unit-variance coefficients).

    ``.h5`` files go to :func:`lsqface.morphable.bfm.load_bfm2017`; anything else
    (``.tar.xz``, ``.tar``, ``.zip``, a folder) to :func:`lsqface.morphable.ict.load_ict`.

    Args:
        path: the source, e.g. from :func:`resolve_source`.
        region: ICT-FaceKit face region, ``"full"`` or ``"narrow"``; None is
            ``lsqface.morphable.ict.DEFAULT_REGION`` (ignored for BFM 2017).
        landmarks: optional file of 68 vertex indices (Multi-PIE order) replacing the source's own.

    Returns:
        The model, with ``source_hash`` covering the source's content and these settings.
    """
    path = Path(path)
    landmark_indices = read_landmark_file(landmarks) if landmarks is not None else None
    settings = {"loader": LOADER_VERSION, "landmarks": None if landmark_indices is None else landmark_indices.tolist()}
    if path.suffix.lower() == ".h5":
        from lsqface.morphable.bfm import load_bfm2017

        model = load_bfm2017(path, landmarks=landmark_indices)
    else:
        from lsqface.morphable.ict import DEFAULT_REGION, load_ict

        region = DEFAULT_REGION if region is None else region
        settings["region"] = region
        model = load_ict(path, region=region, landmarks_68=landmark_indices)
    digest = hashlib.sha256()
    digest.update(source_fingerprint(path).encode("ascii"))
    digest.update(json.dumps(settings, sort_keys=True).encode("utf-8"))
    return _with_source_hash(model, digest.hexdigest())


def _with_source_hash(model: MorphableModel, source_hash: str) -> MorphableModel:
    import dataclasses

    return dataclasses.replace(model, source_hash=source_hash)


def require_landmarks(model: MorphableModel, which: str = "68") -> None:
    """Raise FaceModelError if ``model`` has no ``which`` ("68" or "5") landmarks (a BFM 2017 .h5 without a landmark file)."""
    array = model.landmarks_68 if which == "68" else model.landmarks_5
    if array.size == 0:
        raise FaceModelError(
            f"The face model {model.name} has no {which}-point landmarks; pass --landmarks FILE with 68 "
            "0-based vertex indices in the Multi-PIE order."
        )
