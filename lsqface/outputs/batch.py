"""Reconstruct many photos: expand inputs, batch them, write each face's files, report failures.

A bad image (missing, corrupt, too small) never stops the run: it is recorded
with its one-sentence reason and the others go on. A batch whose solve fails
is retried image by image so one hard face does not cost its neighbours.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from lsqface.data.images import IMAGE_EXTENSIONS, list_image_files, read_image
from lsqface.errors import ImageError, LsqfaceError
from lsqface.outputs.save import SAVE_KINDS, save_reconstruction
from lsqface.reconstruct import Reconstructor

logger = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What a batch run did: the files written per image, each failed image with its reason, and each
    written face whose status is not ``ok`` (``doubtful``: name -> "status: reason", a sentence that
    ends with what to try)."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    doubtful: dict[str, str] = field(default_factory=dict)

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
    advice = "" if framed else "; try --detect or --bbox x,y,width,height"
    return f"{status} ({reason}): {meaning}, so the files are marked and the mesh is not one to use{advice}"


def demo_photo() -> str:
    """The built-in demo photo: matplotlib's ``grace_hopper.jpg`` (public domain), so no download is needed."""
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (searched recursively for images) and glob patterns, in order, without repeats.

    Raises:
        ImageError: an input matches nothing, a folder holds no image, or nothing is left at all.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = list_image_files(path)
            if not images:
                raise ImageError(f"Folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}); check the path.")
            found += images
        elif path.exists():
            found.append(path)
        elif any(character in item for character in "*?["):
            matches = sorted(Path(match) for match in glob.glob(item, recursive=True))
            matches = [match for match in matches if match.is_file()]
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


def _stems(paths: Sequence[Path]) -> list[str]:
    """Output names: the file stem, made unique with a counter where two inputs share one."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = path.stem
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        stems.append(stem if count == 0 else f"{stem}_{count}")
    return stems


def reconstruct_files(
    reconstructor: Reconstructor,
    inputs: Sequence[Path],
    output: str | Path,
    *,
    kinds: Iterable[str] = SAVE_KINDS,
    batch_size: int = 8,
    box: Sequence[float] | None = None,
    detect: bool = False,
    progress: bool = True,
    picture_side: int | None = None,
) -> BatchReport:
    """Reconstruct every input image and write its files under ``output``.

    Args:
        reconstructor: the network, UV-3DMM and settings.
        inputs: image paths (see :func:`expand_inputs`).
        output: folder for the results (created).
        kinds: which files to write (``SAVE_KINDS``).
        batch_size: faces per forward pass.
        box: optional face box (x, y, width, height) applied to every image.
        detect: find the faces with :func:`lsqface.detect.detect_faces` and reconstruct each
            (files ``STEM_face0``, ``STEM_face1``, ... largest face first).
        progress: show a tqdm progress bar.
        picture_side: longest side of the pictures drawn over the photo, pixels (None: 1024, 0: the
            photo's own size; :func:`lsqface.outputs.save.save_reconstruction`).
    """
    kinds = list(kinds)
    unknown = sorted(set(kinds) - set(SAVE_KINDS))
    if unknown:
        raise LsqfaceError(f"Unknown output kind '{unknown[0]}'; choose from {', '.join(SAVE_KINDS)}.")
    if picture_side is not None and picture_side < 0:
        raise LsqfaceError(f"The picture size must be 0 (the photo's own) or a positive number of pixels, not {picture_side}.")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    report = BatchReport()
    stems = dict(zip(inputs, _stems(inputs)))
    bar = tqdm(total=len(inputs), unit="image", disable=not progress, desc="reconstruct")
    for start in range(0, len(inputs), batch_size):
        # One item per face: (path, photo, box, stem).
        items: list[tuple[Path, np.ndarray, Sequence[float] | None, str]] = []
        for path in inputs[start:start + batch_size]:
            try:
                photo = read_image(path)
                if detect:
                    from lsqface.detect import detect_faces

                    boxes = detect_faces(photo)
                    if not boxes:
                        raise ImageError(f"No face was found in {path.name}; pass its box with --bbox x,y,width,height.")
                    items += [(path, photo, face, f"{stems[path]}_face{k}") for k, face in enumerate(boxes)]
                else:
                    items.append((path, photo, box, stems[path]))
            except LsqfaceError as error:
                report.failed[str(path)] = str(error)
            bar.update(1)
        groups = [items[k:k + batch_size] for k in range(0, len(items), batch_size)]
        while groups:
            group = groups.pop(0)
            try:
                result = reconstructor([photo for _, photo, _, _ in group], [face for _, _, face, _ in group])
            except LsqfaceError as error:
                if len(group) > 1:
                    groups = [[item] for item in group] + groups
                    continue
                report.failed[f"{group[0][0]} ({group[0][3]})" if detect else str(group[0][0])] = str(error)
                continue
            for index, (path, photo, _, stem) in enumerate(group):
                try:
                    report.written.setdefault(str(path), []).extend(
                        save_reconstruction(result, index, photo, output, stem, kinds, image_name=path.name,
                                            picture_side=picture_side)
                    )
                except LsqfaceError as error:
                    report.failed[str(path)] = str(error)
                    continue
                if result.status[index] != "ok":
                    report.doubtful[f"{path} ({stem})" if detect else str(path)] = status_sentence(
                        result.status[index], result.status_reason[index], framed=detect or box is not None)
    bar.close()
    return report
