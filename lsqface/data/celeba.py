"""CelebA (aligned) and its MAFL subset, in the layouts they are published in.

CelebA (Liu et al. 2015; http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html):

    img_align_celeba/000001.jpg ...            (178 x 218 pixels)
    list_landmarks_align_celeba.txt            line 1: count; line 2: the ten column
                                               names "lefteye_x lefteye_y righteye_x ...";
                                               then "000001.jpg 69 109 106 113 77 142 73 152 108 154"
    list_eval_partition.txt                    "000001.jpg 0": 0 train, 1 val, 2 test

The official download puts these under ``Img/``, ``Anno/`` and ``Eval/``;
Kaggle's copy nests ``img_align_celeba/img_align_celeba/``. Every one of these
placements is found from the dataset's root folder.

MAFL (Zhang et al., "Learning Deep Representation for Face Alignment with
Auxiliary Attributes", TPAMI 2016) is a subset of CelebA: ``MAFL/training.txt``
(19,000 images) and ``MAFL/testing.txt`` (1,000 images), one CelebA file name
per line (only the first whitespace-separated field is used). This is how the
unsupervised-landmark papers we compare against read it (Thewlis et al. 2017,
Jakab et al. 2018; the layout of their ``celeba.zip``,
www.robots.ox.ac.uk/~vgg/research/unsupervised_landmarks/resources/celeba.zip,
which holds ``Img/``, ``Anno/``, ``Eval/`` and ``MAFL/``), with landmarks taken
from CelebA's aligned landmark file.

Landmarks are (5, 2) pixels (x, y) in CelebA's order: left eye, right eye,
nose, left mouth corner, right mouth corner. "Left" is CelebA's: the eye on
the image's left. CelebA's file gives integer pixel indices (column, row),
taken as 0-based as those papers do; :func:`read_celeba_landmarks` converts
them to the package's convention, where the pixel in column j, row i has its
centre at (j + 0.5, i + 0.5), by adding 0.5. Crop boxes such as
:data:`THEWLIS_CROP` are integer pixel indices too, and move landmarks by
(-left, -top), so a landmark keeps its place on the face exactly as in those
papers' code (which subtracts the crop's corner from the 0-based indices).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lsqface.data.images import load_landmark_item
from lsqface.errors import ConfigError, DatasetError

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
CELEBA_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                  "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")
PARTITIONS = {"train": 0, "val": 1, "test": 2}
#: (left, top, width, height): the 178 x 178 square 30 rows down that Thewlis et al.,
#: Jakab et al. and DVE cut from aligned CelebA/MAFL images ("move head up a bit"):
#: rows 30 .. 207 (Python's ``image[30:208]``), i.e. [0, 178] x [30, 208] in pixel coordinates.
THEWLIS_CROP = (0, 30, 178, 178)


@dataclass(frozen=True)
class CelebALayout:
    """Where the files of a CelebA copy are. ``partition`` and ``mafl`` may be None (absent)."""

    images: Path
    landmarks: Path
    partition: Path | None
    mafl: Path | None


def _first_existing(paths: list[Path], want_dir: bool) -> Path | None:
    for path in paths:
        if (path.is_dir() if want_dir else path.is_file()):
            return path
    return None


def find_celeba(root: str | os.PathLike) -> CelebALayout:
    """Locate CelebA's image folder and annotation files under ``root``.

    Raises:
        DatasetError: the root, the image folder or the landmark file is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"CelebA folder {root} does not exist; pass the folder that holds img_align_celeba/.")
    # Kaggle's copy nests img_align_celeba/img_align_celeba/: take the first folder that holds JPEGs.
    folders = [root / "img_align_celeba" / "img_align_celeba", root / "img_align_celeba", root / "Img" / "img_align_celeba", root / "Img" / "img_align_celeba_hq"]
    images = next((folder for folder in folders if folder.is_dir() and any(folder.glob("*.jpg"))), None)
    if images is None:
        raise DatasetError(f"CelebA folder {root} has no img_align_celeba/ (nor Img/img_align_celeba/); download the aligned images.")
    landmarks = _first_existing([root / "list_landmarks_align_celeba.txt", root / "Anno" / "list_landmarks_align_celeba.txt"], False)
    if landmarks is None:
        raise DatasetError(
            f"CelebA folder {root} has no list_landmarks_align_celeba.txt (nor Anno/list_landmarks_align_celeba.txt); "
            "download it with the images."
        )
    partition = _first_existing([root / "list_eval_partition.txt", root / "Eval" / "list_eval_partition.txt"], False)
    mafl = _first_existing([root / "MAFL"], True)
    return CelebALayout(images=images, landmarks=landmarks, partition=partition, mafl=mafl)


def read_celeba_landmarks(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Parse ``list_landmarks_align_celeba.txt``.

    Returns:
        file names (N,) and landmarks (N, 5, 2) float64 pixels (x, y) in the
        package's convention: the file's 0-based pixel indices plus 0.5 (the
        centre of the annotated pixel).
    Raises:
        DatasetError: malformed file (wrong header, count or row).
    """
    path = Path(path)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 2:
        raise DatasetError(f"Landmark file {path} is too short; it needs a count line and a header line.")
    try:
        count = int(lines[0].split()[0])
    except ValueError:
        raise DatasetError(f"Landmark file {path} does not start with the number of images; is it CelebA's file?") from None
    header = tuple(lines[1].split())
    if header != CELEBA_COLUMNS:
        raise DatasetError(f"Landmark file {path} has header {' '.join(header)!r}; expected {' '.join(CELEBA_COLUMNS)!r}.")
    names, values = [], []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if len(fields) != 11:
            raise DatasetError(f"Line {number} of {path} has {len(fields)} fields instead of a file name and 10 numbers.")
        names.append(fields[0])
        try:
            values.append([float(v) for v in fields[1:]])
        except ValueError:
            raise DatasetError(f"Line {number} of {path} has a value that is not a number.") from None
    if len(names) != count:
        raise DatasetError(f"Landmark file {path} announces {count} images but lists {len(names)}; re-download it.")
    # 0-based pixel indices -> the centres of those pixels (j + 0.5, i + 0.5).
    return names, np.asarray(values, dtype=np.float64).reshape(-1, 5, 2) + 0.5


def read_partition(path: str | os.PathLike) -> dict[str, int]:
    """Parse ``list_eval_partition.txt`` into {file name: 0 train, 1 val, 2 test}."""
    path = Path(path)
    partition = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DatasetError(f"Line {number} of {path} is not 'file-name 0|1|2'; is it CelebA's list_eval_partition.txt?")
        partition[fields[0]] = int(fields[1])
    return partition


def read_name_list(path: str | os.PathLike) -> list[str]:
    """Parse a MAFL list (``training.txt``/``testing.txt``): the first field of every non-empty line."""
    return [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]


class _LandmarkDataset(torch.utils.data.Dataset):
    """Images with 5 landmarks; items as :func:`lsqface.data.images.load_landmark_item` returns them."""

    def __init__(self, images: Path, names: list[str], landmarks: np.ndarray, size: int | None, mode: str,
                 crop_box: tuple[int, int, int, int] | None = None) -> None:
        if mode not in ("pad", "crop"):
            raise ConfigError(f"Resize mode must be 'pad' or 'crop', got {mode!r}.")
        if crop_box is not None and (len(crop_box) != 4 or crop_box[2] < 1 or crop_box[3] < 1):
            raise ConfigError(f"crop_box must be (left, top, width, height) with a positive size, got {crop_box!r}.")
        self.images = images
        self.names = names
        self.landmarks = landmarks
        self.size = size
        self.mode = mode
        self.crop_box = None if crop_box is None else tuple(int(v) for v in crop_box)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        path = self.images / self.names[index]
        return load_landmark_item(path, self.landmarks[index], self.size, self.mode, self.crop_box)


def _select(all_names: list[str], all_landmarks: np.ndarray, wanted: list[str], source: str) -> tuple[list[str], np.ndarray]:
    position = {name: k for k, name in enumerate(all_names)}
    missing = [name for name in wanted if name not in position]
    if missing:
        raise DatasetError(f"{len(missing)} images of {source} (e.g. {missing[0]}) have no landmarks; the CelebA copy is incomplete.")
    return list(wanted), all_landmarks[[position[name] for name in wanted]]


class CelebA(_LandmarkDataset):
    """Aligned CelebA with its 5 landmarks.

    Args:
        root: the CelebA folder (see the module notes for the layouts found).
        split: ``"train"``, ``"val"``, ``"test"`` (CelebA's partition) or ``"all"``.
        size: output side in pixels, or None for the original 178 x 218.
        mode: ``"crop"`` (centre square) or ``"pad"`` when resizing.
        crop_box: (left, top, width, height) integer pixels cut out before
            resizing (columns left .. left + width - 1, rows top .. top +
            height - 1), e.g. :data:`THEWLIS_CROP` for the published MAFL
            protocol; None: none.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", size: int | None = None, mode: str = "crop",
                 crop_box: tuple[int, int, int, int] | None = None) -> None:
        if split not in (*PARTITIONS, "all"):
            raise DatasetError(f"Unknown CelebA split {split!r}; choose train, val, test or all.")
        self.layout = find_celeba(root)
        names, landmarks = read_celeba_landmarks(self.layout.landmarks)
        if split != "all":
            if self.layout.partition is None:
                raise DatasetError(
                    f"CelebA folder {root} has no list_eval_partition.txt (nor Eval/list_eval_partition.txt), "
                    "needed for the train/val/test split; download it or use split='all'."
                )
            partition = read_partition(self.layout.partition)
            wanted = [name for name in names if partition.get(name) == PARTITIONS[split]]
            names, landmarks = _select(names, landmarks, wanted, f"the {split} split")
        super().__init__(self.layout.images, names, landmarks, size, mode, crop_box)


class MAFL(_LandmarkDataset):
    """The MAFL train (19,000) or test (1,000) subset of aligned CelebA, with CelebA's 5 landmarks.

    Args:
        root: the CelebA folder holding ``MAFL/training.txt`` and ``MAFL/testing.txt``.
        split: ``"train"`` or ``"test"``.
        size, mode, crop_box: as for :class:`CelebA`.
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", size: int | None = None, mode: str = "crop",
                 crop_box: tuple[int, int, int, int] | None = None) -> None:
        files = {"train": "training.txt", "test": "testing.txt"}
        if split not in files:
            raise DatasetError(f"Unknown MAFL split {split!r}; choose train or test.")
        self.layout = find_celeba(root)
        if self.layout.mafl is None or not (self.layout.mafl / files[split]).is_file():
            raise DatasetError(
                f"{Path(root) / 'MAFL' / files[split]} does not exist; put MAFL's training.txt and testing.txt "
                "in a MAFL/ folder inside the CelebA folder."
            )
        names, landmarks = read_celeba_landmarks(self.layout.landmarks)
        wanted = read_name_list(self.layout.mafl / files[split])
        names, landmarks = _select(names, landmarks, wanted, f"MAFL/{files[split]}")
        super().__init__(self.layout.images, names, landmarks, size, mode, crop_box)
