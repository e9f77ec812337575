"""Where lsqface keeps its files, and how it writes them without leaving half a file.

Every file lsqface writes (caches, checkpoints, outputs) goes to a temporary
name in the same folder and is renamed into place, so a crash or a second
process writing the same file never leaves a truncated one behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


def cache_dir() -> Path:
    """The user's cache folder for lsqface: ``$XDG_CACHE_HOME/lsqface`` or ``~/.cache/lsqface``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lsqface"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary file is in the same folder, so the rename is atomic on POSIX
    and Windows; on an exception it is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def read_json_lines(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON lines file (one JSON value a line; blank lines are skipped).

    Raises:
        FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError: as reading and parsing raise them.
    """
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
