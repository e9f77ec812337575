"""Finding, downloading (only when asked), fingerprinting and dispatching face-model sources."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lsqface
from lsqface.errors import FaceModelError
from lsqface.morphable import sources
from lsqface.morphable.sources import (
    ICT_ARCHIVE_NAME,
    default_search_paths,
    load_source,
    read_landmark_file,
    resolve_source,
    source_fingerprint,
)


@pytest.fixture
def user_cache(tmp_path, monkeypatch) -> Path:
    """An empty user cache for this test (XDG_CACHE_HOME in tmp_path)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "lsqface" / "sources"


def _ict_like_zip(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ICT-FaceKit-master/FaceXModel/generic_neutral_mesh.obj", "v 0 0 0\n")
        archive.writestr("ICT-FaceKit-master/README.md", "readme")
    return path.read_bytes()


# ---------------------------------------------------------------- resolve_source


def test_given_path_is_returned(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"x")
    assert resolve_source(path) == path
    assert resolve_source(str(path)) == path


def test_given_missing_path_raises(tmp_path):
    with pytest.raises(FaceModelError, match="does not exist"):
        resolve_source(tmp_path / "missing.tar.xz")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read files without read permission")
def test_given_unreadable_path_raises(tmp_path):
    path = tmp_path / "model.tar.xz"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(FaceModelError, match="not readable"):
        resolve_source(path)


def test_search_order(tmp_path, user_cache):
    first, second = tmp_path / "a.zip", tmp_path / "b.tar.xz"
    second.write_bytes(b"b")
    assert resolve_source(search_paths=[first, second]) == second
    first.write_bytes(b"a")
    assert resolve_source(search_paths=[first, second]) == first
    # A file already found is used even when a download is allowed: the (unreachable) URL is never fetched.
    assert resolve_source(search_paths=[first], download=True, download_url=(tmp_path / "nope.zip").as_uri()) == first
    assert not user_cache.exists()


def test_nothing_found_without_download_raises_and_names_paths(tmp_path, user_cache):
    searched = [tmp_path / "x" / ICT_ARCHIVE_NAME, tmp_path / "y.zip"]
    served = tmp_path / "served.zip"
    _ict_like_zip(served)
    with pytest.raises(FaceModelError) as raised:
        resolve_source(search_paths=searched, download=False, download_url=served.as_uri())
    message = str(raised.value)
    assert all(str(path) in message for path in searched)
    assert "--source PATH" in message and "--download" in message
    assert not user_cache.exists()  # nothing was downloaded


def test_download_only_when_asked(tmp_path, user_cache):
    served = tmp_path / "served.zip"
    content = _ict_like_zip(served)
    path = resolve_source(search_paths=[tmp_path / "missing.zip"], download=True, download_url=served.as_uri())
    assert path == user_cache / sources.ICT_ZIP_NAME
    assert path.read_bytes() == content
    assert [p.name for p in user_cache.iterdir()] == [sources.ICT_ZIP_NAME]  # no temporary file left
    # The cached zip is found first next time, without downloading.
    assert default_search_paths()[0] == path
    assert resolve_source(download=False) == path


def test_bad_download_leaves_nothing(tmp_path, user_cache):
    served = tmp_path / "served.zip"
    served.write_bytes(b"<html>not a zip</html>")
    with pytest.raises(FaceModelError, match="not a zip"):
        resolve_source(search_paths=[], download=True, download_url=served.as_uri())
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("repo/README.md", "x")
    with pytest.raises(FaceModelError, match="generic_neutral_mesh.obj"):
        resolve_source(search_paths=[], download=True, download_url=other.as_uri())
    with pytest.raises(FaceModelError, match="failed"):
        resolve_source(search_paths=[], download=True, download_url=(tmp_path / "absent.zip").as_uri())
    assert not user_cache.exists() or not any(user_cache.iterdir())


def test_default_search_paths(tmp_path, user_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = default_search_paths()
    repository_root = Path(lsqface.__file__).resolve().parents[1]
    assert paths[0].parent == user_cache and paths[1] == user_cache / ICT_ARCHIVE_NAME
    assert paths[2] == (tmp_path.parent / "shared" / "data" / ICT_ARCHIVE_NAME).resolve()
    assert paths[3] == (repository_root.parent / "shared" / "data" / ICT_ARCHIVE_NAME).resolve()


# ---------------------------------------------------------------- source_fingerprint


def test_fingerprint_of_a_file_is_its_sha256(tmp_path):
    path = tmp_path / "model.tar.xz"
    data = np.random.default_rng(0).bytes(3_000_000)
    path.write_bytes(data)
    assert source_fingerprint(path) == hashlib.sha256(data).hexdigest()


def test_fingerprint_is_fast(tmp_path):
    path = tmp_path / "big.tar.xz"
    path.write_bytes(np.random.default_rng(0).bytes(32 << 20))
    start = time.perf_counter()
    source_fingerprint(path)
    assert time.perf_counter() - start < 1.0  # measured about 0.03 s for 32 MB


def test_fingerprint_of_a_folder(tmp_path):
    folder = tmp_path / "one" / "FaceXModel"
    folder.mkdir(parents=True)
    (folder / "generic_neutral_mesh.obj").write_text("v 0 0 0\n")
    (folder / "vertex_indices.json").write_text("{}")
    (folder / "face.png").write_bytes(b"picture")
    before = source_fingerprint(folder.parent)
    # Same content elsewhere: same fingerprint; unrelated files do not count.
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    (tmp_path / "two" / "FaceXModel" / "face.png").write_bytes(b"another picture")
    assert source_fingerprint(tmp_path / "two") == before
    # Editing a model file, or renaming one, changes it.
    (folder / "generic_neutral_mesh.obj").write_text("v 0 0 1\n")
    assert source_fingerprint(folder.parent) != before
    (folder / "generic_neutral_mesh.obj").write_text("v 0 0 0\n")
    assert source_fingerprint(folder.parent) == before
    (folder / "vertex_indices.json").rename(folder / "other.json")
    assert source_fingerprint(folder.parent) != before


# ---------------------------------------------------------------- landmark files


def test_landmark_file_formats(tmp_path):
    indices = np.arange(68) * 3 + 1
    text = tmp_path / "my68.txt"
    text.write_text("# my landmarks\n" + "\n".join(map(str, indices)) + "\n")
    np.testing.assert_array_equal(read_landmark_file(text), indices)
    commas = tmp_path / "commas.txt"
    commas.write_text(", ".join(map(str, indices)))
    np.testing.assert_array_equal(read_landmark_file(commas), indices)
    as_json = tmp_path / "my68.json"
    as_json.write_text(json.dumps(indices.tolist()))
    np.testing.assert_array_equal(read_landmark_file(as_json), indices)
    as_dict = tmp_path / "dict.json"
    as_dict.write_text(json.dumps({"landmarks_68": indices.tolist()}))
    np.testing.assert_array_equal(read_landmark_file(as_dict), indices)


@pytest.mark.parametrize(
    "content,match",
    [("1 2 3", "holds 3 values"), ("1.5 " * 68, "whole"), ("-1 " * 68, "non-negative"), ("a b c", "not a list"), ("[[1, 2]]", "not a list")],
)
def test_bad_landmark_files(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(FaceModelError, match=match):
        read_landmark_file(path)


def test_missing_landmark_file(tmp_path):
    with pytest.raises(FaceModelError, match="cannot be read"):
        read_landmark_file(tmp_path / "none.txt")


# ---------------------------------------------------------------- load_source


def test_load_source_dispatches_h5_to_bfm(tmp_path):
    from test_bfm import write_bfm

    path = tmp_path / "model2017-tiny.h5"
    write_bfm(path)
    model = load_source(path)
    assert model.name == "bfm2017" and model.n_identity == 7
    assert len(model.source_hash) == 64
    landmark_file = tmp_path / "my68.txt"
    landmark_file.write_text(" ".join(str(i % 50) for i in range(68)))
    with_landmarks = load_source(path, landmarks=landmark_file)
    assert with_landmarks.landmarks_68.shape == (68,)
    assert with_landmarks.source_hash != model.source_hash  # settings are part of the hash
    assert load_source(path).source_hash == model.source_hash


def test_load_source_dispatches_others_to_ict(tmp_path):
    for path in (tmp_path / "folder", tmp_path / "x.zip"):
        if path.suffix == ".zip":
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("r/README.md", "x")
        else:
            path.mkdir()
        with pytest.raises(FaceModelError, match="FaceXModel"):
            load_source(path)

