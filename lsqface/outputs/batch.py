"""Reconstruct many photos: expand inputs, batch them, write each face's files, report failures.

A bad image (missing, corrupt, too small) never stops the run: it is recorded
with its one-sentence reason and the others go on. A batch whose solve fails
is retried image by image so one hard face does not cost its neighbours.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from lsqface.data import images
from lsqface.data.images import IMAGE_EXTENSIONS, list_image_files, read_photo
from lsqface.errors import ImageError, LsqfaceError
from lsqface.outputs.save import SAVE_KINDS, output_names, save_reconstruction
from lsqface.reconstruct import Reconstructor

logger = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What a batch run did: the files written per image, each failed image with its reason, and each
    written face whose status is not ``ok`` (``doubtful``: name -> "status: reason", a sentence that
    ends with what to try)."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    # Inputs whose outputs a previous run completed (rerun with redo to write them again).
    failed: dict[str, str] = field(default_factory=dict)
    doubtful: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def status_sentence(status: str, reason: str, framed: bool = False) -> str:
    """One line telling a user that a written fit is not ``ok``, why, and what to try.

    Args:
        status: ``low_confidence`` or ``implausible``; reason: the checks that failed.
        framed: whether the face was already cropped (--detect or --bbox), so cropping is no advice.
    """
    meaning = ("the network found little or no face" if status == "low_confidence"
               else "the fitted mesh is not shaped or placed like a face")
    advice = "" if framed else "; try --bbox x,y,width,height"
    return f"{status} ({reason}): {meaning}, so the files are marked and the mesh is not one to use{advice}"


def demo_photo() -> str:
    """The built-in demo photo: matplotlib's ``grace_hopper.jpg`` (public domain), so no download is needed."""
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


#: The record an output folder keeps of what lsqface wrote there, one JSON line per face (see :class:`OutputFolder`).
MANIFEST_NAME = "lsqface-outputs.jsonl"


def expand_inputs(inputs: Sequence[str], exclude: Iterable[Path] = ()) -> list[Path]:
    """Files, folders (searched recursively for images) and glob patterns, in order, without repeats.

    Files lsqface wrote itself are never inputs: those recorded in the manifest (``MANIFEST_NAME``)
    of any searched folder, and any path in ``exclude`` (the output folder's own files).

    Raises:
        ImageError: an input matches nothing, a folder holds no image, or nothing is left at all.
    """
    excluded = {_key(path) for path in exclude}
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for manifest in path.rglob(MANIFEST_NAME):
                excluded |= {_key(manifest.parent / name) for name in OutputFolder(manifest.parent).all_names()}
            images = [image for image in list_image_files(path) if _key(image) not in excluded]
            if not images:
                raise ImageError(f"Folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}) other than "
                                 "lsqface's own outputs; check the path.")
            found += images
        elif path.exists() or path.is_symlink():
            found.append(path)
        elif any(character in item for character in "*?["):
            matches = sorted(Path(match) for match in glob.glob(item, recursive=True))
            matches = [match for match in matches if match.is_file() and _key(match) not in excluded]
            if not matches:
                raise ImageError(f"The pattern {item} matches no file; check it (quote it so the shell leaves it alone).")
            found += matches
        else:
            # Kept so that the run reports it beside the others instead of stopping here.
            found.append(path)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise ImageError("No input images were given; pass files, folders or glob patterns.")
    return unique


def _key(path: Path) -> str:
    """One name per file, however it was spelled (relative, through links)."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return str(Path(path).absolute())


class OutputFolder:
    """An output folder and the record of the files lsqface wrote in it, so that nothing else is replaced.

    ``MANIFEST_NAME`` holds one JSON line per face: ``{"input": path, "stem": STEM, "files": [...]}``
    written *before* the face's files (a claim), then the same with ``"done": true, "faces": n,
    "face": k, "kinds": [...]`` once they are all written. So:

    - a file lsqface did not write (not claimed) is never replaced: a face whose names are taken is
      written beside it under ``STEM-2``, ``STEM-3``, ...;
    - two faces never share a name: a stem claimed by one input is never given to another;
    - a rerun skips each input whose faces are all done with their files present, and writes the
      others again under the stems they claimed; ``kill -9`` loses at most the faces being written.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.owner_of_stem: dict[str, str] = {}
        self.owner_of_name: dict[str, str] = {}
        self.done: dict[str, dict[int, dict]] = {}
        self.claimed_stems: dict[str, list[str]] = {}
        manifest = self.path / MANIFEST_NAME
        if manifest.is_file():
            for line in manifest.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                    owner, stem, files = str(record["input"]), str(record["stem"]), [str(name) for name in record["files"]]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash
                self._own(owner, stem, files)
                if record.get("done"):
                    self.done.setdefault(owner, {})[int(record.get("face", 0))] = record

    def _own(self, owner: str, stem: str, files: Iterable[str]) -> None:
        self.owner_of_stem.setdefault(stem, owner)
        for name in files:
            self.owner_of_name.setdefault(name, owner)
        if stem not in self.claimed_stems.setdefault(owner, []):
            self.claimed_stems[owner].append(stem)

    def all_names(self) -> list[str]:
        return list(self.owner_of_name)

    def complete(self, owner: str, kinds: Iterable[str]) -> bool:
        """Whether every face of input ``owner`` was written with (at least) ``kinds`` and its files are all there."""
        faces = self.done.get(owner, {})
        if not faces:
            return False
        count = int(next(iter(faces.values())).get("faces", 1))
        return all(
            k in faces and set(kinds) <= set(faces[k].get("kinds", ()))
            and all((self.path / name).is_file() for name in faces[k]["files"])
            for k in range(count)
        )

    def allocate(self, owner: str, base: str, kinds: Sequence[str]) -> str:
        """A stem for a face of input ``owner``: ``base`` if its files are free, else ``base-2``, ``base-3``, ...

        Free: not claimed by another input, and either absent or claimed by this one.
        """
        for number in range(1, 100_000):
            stem = base if number == 1 else f"{base}-{number}"
            if self.owner_of_stem.get(stem, owner) != owner:
                continue
            names = output_names(stem, kinds)
            if all(self.owner_of_name.get(name, owner) == owner
                   and (name in self.owner_of_name or not os.path.lexists(self.path / name)) for name in names):
                self.owner_of_stem[stem] = owner
                return stem
        raise LsqfaceError(f"Every name for the outputs of {base} is taken in {self.path}; choose another -o folder.")

    def record(self, record: dict) -> None:
        """Append one line to the manifest and flush it to the disk."""
        self._own(record["input"], record["stem"], record["files"])
        with open(self.path / MANIFEST_NAME, "a", encoding="utf-8") as manifest:
            manifest.write(json.dumps(record) + "\n")
            manifest.flush()
            os.fsync(manifest.fileno())


def open_output_folder(output: str | Path, inputs: Sequence[Path] = ()) -> OutputFolder:
    """Create (if needed) and check the output folder, and read what lsqface wrote there before.

    Raises:
        LsqfaceError: the path is a file (or an input), or the folder cannot be created or written.
    """
    output = Path(output)
    if any(_key(output) == _key(path) for path in inputs):
        raise LsqfaceError(f"-o {output} is one of the inputs; pass a folder for the results.")
    if output.exists() and not output.is_dir():
        raise LsqfaceError(f"-o {output} is a file, not a folder; pass a folder for the results (it is created).")
    try:
        output.mkdir(parents=True, exist_ok=True)
        folder = OutputFolder(output)
        with open(output / MANIFEST_NAME, "a", encoding="utf-8"):
            pass
    except OSError as error:
        raise LsqfaceError(f"Cannot write into the output folder {output} ({error.strerror or error}); "
                           "pass a folder you can write to.") from None
    return folder


#: A face box may be at most this many times the photo's longer side (it is cropped at its own size).
BOX_SIDE_LIMIT = 4


def check_box(box: Sequence[float] | None, photo: np.ndarray, photo_scale: tuple[float, float],
              name: str) -> tuple[float, float, float, float] | None:
    """A box in the photo's own pixels as a box in ``photo``'s (decoded) pixels, once it is known to frame it.

    Raises:
        ImageError: the box is not finite, lies outside the photo, or has a side over ``BOX_SIDE_LIMIT``
            times the photo's longer side.
    """
    if box is None:
        return None
    x, y, width, height = (float(value) for value in box)
    scale_x, scale_y = photo_scale
    x, y, width, height = x / scale_x, y / scale_y, width / scale_x, height / scale_y
    rows, columns = photo.shape[:2]
    longest = BOX_SIDE_LIMIT * max(rows, columns)
    if not all(np.isfinite([x, y, width, height])) or min(width, height) <= 0:
        raise ImageError(f"The box {tuple(box)} is not a box; pass --bbox x,y,width,height with positive sizes.")
    if max(width, height) > longest or x >= columns or y >= rows or x + width <= 0 or y + height <= 0:
        raise ImageError(f"The box {tuple(box)} does not frame a face in {name} ({round(columns * scale_x)}x"
                         f"{round(rows * scale_y)} pixels): it must overlap the photo and be at most {BOX_SIDE_LIMIT} "
                         "times its longer side; check --bbox x,y,width,height.")
    return (x, y, width, height)


def reconstruct_files(
    reconstructor: Reconstructor,
    inputs: Sequence[Path],
    output: str | Path,
    *,
    kinds: Iterable[str] = SAVE_KINDS,
    batch_size: int = 8,
    box: Sequence[float] | None = None,
    detect: bool | None = False,
    progress: bool = True,
    picture_side: int | None = None,
    redo: bool = False,
    largest_face: bool = False,
) -> BatchReport:
    """Reconstruct every input image and write its files under ``output``.

    Nothing lsqface did not write is replaced, and a rerun goes on where the last one stopped
    (see :class:`OutputFolder`).

    Args:
        reconstructor: the network, UV-3DMM and settings.
        inputs: image paths (see :func:`expand_inputs`).
        output: folder for the results (created).
        kinds: which files to write (``SAVE_KINDS``).
        batch_size: faces per forward pass.
        box: optional face box (x, y, width, height) applied to every image.
        detect: True: find the faces with :func:`lsqface.detect.detect_faces` and reconstruct each
            (files ``STEM_face0``, ``STEM_face1``, ... largest face first; a photo without a face
            fails). None (automatic framing, the command line's default): the same where the
            detector is installed, except that one face is written as ``STEM`` and a photo where
            none is found is reconstructed whole. False: the whole photo (or ``box``). The JSON's
            ``framing`` says which was done.
        progress: show a tqdm progress bar.
        picture_side: longest side of the pictures drawn over the photo, pixels (None: 1024, 0: the
            photo's own size; :func:`lsqface.outputs.save.save_reconstruction`).
        redo: reconstruct again the inputs whose outputs are complete (default: skip them).
        largest_face: with detection, reconstruct the largest face only.
    """
    kinds = list(dict.fromkeys(kinds))
    unknown = sorted(set(kinds) - set(SAVE_KINDS))
    if unknown:
        raise LsqfaceError(f"Unknown output kind '{unknown[0]}'; choose from {', '.join(SAVE_KINDS)}.")
    if not kinds:
        raise LsqfaceError(f"Nothing to write; pass --save with one or more of {','.join(SAVE_KINDS)}.")
    if picture_side is not None and picture_side < 0:
        raise LsqfaceError(f"The picture size must be 0 (the photo's own) or a positive number of pixels, not {picture_side}.")
    if int(batch_size) < 1:
        raise LsqfaceError(f"The batch size must be at least 1, not {batch_size}.")
    output = Path(output)
    folder = open_output_folder(output, inputs)
    report = BatchReport()
    owners = {path: _key(path) for path in inputs}
    todo = []
    for path in inputs:
        if not redo and folder.complete(owners[path], kinds):
            report.skipped.append(str(path))
        else:
            todo.append(path)
    # The inputs whose own stem is unique go first, so a shared stem never takes another input's name.
    counts: dict[str, int] = {}
    for path in todo:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    stems: dict[Path, str] = {}
    for path in sorted(todo, key=lambda path: counts[path.stem] > 1):
        # A rerun writes an input under the stem it claimed before (replacing its own files only).
        previous = folder.claimed_stems.get(owners[path], [])
        base = previous[0] if previous else path.stem
        stems[path] = folder.allocate(owners[path], base, kinds)
    scales: dict[Path, tuple[float, float]] = {}
    # Counted when a batch's files are written, so the rate is photos reconstructed and written per second.
    bar = tqdm(total=len(todo), unit="photo", disable=not progress, desc="reconstruct")
    for start in range(0, len(todo), batch_size):
        # One item per face: (path, photo, box, stem, face number, face count, framing).
        items: list[tuple[Path, np.ndarray, Sequence[float] | None, str, int, int, dict]] = []
        for path in todo[start:start + batch_size]:
            try:
                photo, scales[path] = read_photo(path, max_pixels=images.MAX_PIXELS)
                boxes, reason = _find_faces(photo, path.name, detect if box is None else False)
                if boxes:
                    boxes = boxes[:1] if largest_face else boxes
                    several = len(boxes) > 1 or detect is True
                    for k, face in enumerate(boxes):
                        stem = folder.allocate(owners[path], f"{stems[path]}_face{k}", kinds) if several else stems[path]
                        scale_x, scale_y = scales[path]
                        framing = {"method": "detector", "face": k, "faces": len(boxes),
                                   "box": [face[0] * scale_x, face[1] * scale_y, face[2] * scale_x, face[3] * scale_y]}
                        items.append((path, photo, face, stem, k, len(boxes), framing))
                else:
                    framing = ({"method": "box", "face": 0, "faces": 1, "box": [float(value) for value in box]}
                               if box is not None else {"method": "whole_photo", "face": 0, "faces": 1, "box": None})
                    if reason:
                        framing["reason"] = reason
                    items.append((path, photo, check_box(box, photo, scales[path], path.name), stems[path], 0, 1,
                                  framing))
            except LsqfaceError as error:
                report.failed[str(path)] = str(error)
        groups = [items[k:k + batch_size] for k in range(0, len(items), batch_size)]
        while groups:
            group = groups.pop(0)
            try:
                result = reconstructor([item[1] for item in group], [item[2] for item in group])
            except LsqfaceError as error:
                if len(group) > 1:
                    groups = [[item] for item in group] + groups
                    continue
                report.failed[f"{group[0][0]} ({group[0][3]})" if group[0][5] > 1 else str(group[0][0])] = str(error)
                continue
            for index, (path, photo, _, stem, face, faces, framing) in enumerate(group):
                name = f"{path} ({stem})" if faces > 1 else str(path)
                try:
                    report.written.setdefault(str(path), []).extend(
                        _save_face(folder, result, index, photo, owners[path], stem, kinds, path.name, picture_side,
                                   face, faces, scales[path], framing))
                except LsqfaceError as error:
                    report.failed[name] = str(error)
                    continue
                if result.status[index] != "ok":
                    report.doubtful[name] = status_sentence(
                        result.status[index], result.status_reason[index], framed=framing["method"] != "whole_photo")
        bar.update(len(todo[start:start + batch_size]))
    bar.close()
    for path in report.failed:
        report.written.pop(path, None)
    return report


def _find_faces(photo: np.ndarray, name: str, detect: bool | None) -> tuple[list, str]:
    """The detected face boxes (photo pixels of ``photo``, largest first) and, when there are none, why.

    ``detect`` as in :func:`reconstruct_files`: True requires a face, None looks where it can, False never looks.
    """
    if detect is False:
        return [], ""
    from lsqface.detect import DetectorError, detect_faces

    try:
        boxes = detect_faces(photo)
    except DetectorError:
        if detect:
            raise
        return [], "no face detector is installed (pip install 'lsqface[detect]')"
    if not boxes and detect:
        raise ImageError(f"No face was found in {name}; pass its box with --bbox x,y,width,height.")
    return boxes, "" if boxes else "the detector found no face"


def _save_face(folder: OutputFolder, result, index: int, photo: np.ndarray, owner: str, stem: str, kinds: list[str],
               image_name: str, picture_side: int | None, face: int, faces: int,
               photo_scale: tuple[float, float], framing: dict) -> list[Path]:
    """Claim the face's names in the manifest, write its files, and record them as done.

    A write error (disk full, name too long, folder turned read-only) removes the files of this
    face written so far and becomes an ``LsqfaceError`` naming the reason, so the batch goes on.
    """
    names = output_names(stem, kinds)
    claim = {"input": owner, "stem": stem, "files": names}
    try:
        folder.record(claim)
        written = save_reconstruction(result, index, photo, folder.path, stem, kinds, image_name=image_name,
                                      picture_side=picture_side, photo_scale=photo_scale, extra={"framing": framing})
        folder.record({**claim, "done": True, "face": face, "faces": faces, "kinds": kinds,
                       "status": result.status[index] if result.status else "ok"})
    except OSError as error:
        for name in names:
            with contextlib.suppress(OSError):
                (folder.path / name).unlink()
        raise LsqfaceError(f"its files could not be written to {folder.path} ({error.strerror or error}); free some "
                           "space, shorten the name or pass another -o folder, then run the same command again.") from None
    return written
