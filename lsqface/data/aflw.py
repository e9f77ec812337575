"""AFLW with 5 landmarks, in the two layouts the unsupervised-landmark papers use.

1. :class:`AFLW`, the split of Thewlis et al. (ICCV 2017) that Jakab et al.
   (NeurIPS 2018) and later work evaluate on, published as
   ``aflw_release-2.zip``
   (www.robots.ox.ac.uk/~vgg/research/unsupervised_landmarks/resources/aflw_release-2.zip)::

       aflw_release-2/
         output/...                     face crops
         aflw_train_images.txt          one path per line, relative to output/
         aflw_test_images.txt
         aflw_train_keypoints.mat       gt: (N, 5, 2) landmarks stored as (y, x); hw: (N, 2) crop height, width
         aflw_test_keypoints.mat

   We read it as Jakab's ``imm/datasets/aflw_dataset.py`` and Thewlis's
   ``DVE/data_loader/data_loaders.py`` do: swap ``gt`` to (x, y), images from
   ``output/``; no 1-pixel shift, so ``gt`` is taken as 0-based pixel
   indices, and 0.5 is added to put each landmark at the centre of its pixel
   (the package's convention). The landmark order is taken to be CelebA's
   (left eye, right eye, nose, left mouth, right mouth): both codes use points
   0 and 1 as the eyes for the inter-ocular distance.

2. :class:`MTFLTest`, the 2,995 AFLW test faces of the MTFL download of
   Zhang et al. (ECCV 2014, TCDCN; mmlab.ie.cuhk.edu.hk/projects/TCDCN.html),
   used by Thewlis et al. (ICCV 2019, DVE's ``AFLW_MTFL``): ``MTFL/testing.txt``
   with lines ``path x1 ... x5 y1 ... y5 gender smile glasses pose`` (paths
   with Windows backslashes, relative to ``MTFL/``), 1-based MATLAB pixel
   indices, so 1 is subtracted (to 0-based, as DVE does) and 0.5 added (to
   the pixel's centre): 0.5 is subtracted in all.

Items are those of :func:`lsqface.data.images.load_landmark_item`: image,
(5, 2) landmarks in pixels of the returned image, transform, path. Pixel
coordinates are the package's: the pixel in column j, row i has its centre at
(j + 0.5, i + 0.5).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lsqface.data.celeba import LANDMARK_NAMES, _LandmarkDataset
from lsqface.errors import DatasetError

__all__ = ["AFLW", "MTFLTest", "LANDMARK_NAMES", "read_aflw_split", "read_mtfl_annotations"]

AFLW_SOURCE = "www.robots.ox.ac.uk/~vgg/research/unsupervised_landmarks/resources/aflw_release-2.zip"


def read_aflw_split(root: str | os.PathLike, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read one split of the ``aflw_release-2`` layout.

    Args:
        root: the ``aflw_release-2`` folder.
        split: ``"train"`` or ``"test"``.
    Returns:
        image paths relative to ``root/output`` (N,), landmarks (N, 5, 2)
        float64 pixels (x, y) in the package's convention (the stored 0-based
        indices plus 0.5), crop sizes (N, 2) (height, width) in pixels.
    Raises:
        DatasetError: a file is missing or the files disagree.
    """
    from scipy.io import loadmat

    if split not in ("train", "test"):
        raise DatasetError(f"Unknown AFLW split {split!r}; choose train or test.")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"AFLW folder {root} does not exist; unpack {AFLW_SOURCE} and pass its aflw_release-2 folder.")
    names_path = root / f"aflw_{split}_images.txt"
    keypoints_path = root / f"aflw_{split}_keypoints.mat"
    for path in (names_path, keypoints_path):
        if not path.is_file():
            raise DatasetError(f"AFLW annotation file {path} does not exist; unpack {AFLW_SOURCE} into {root}.")
    if not (root / "output").is_dir():
        raise DatasetError(f"AFLW folder {root} has no output/ image folder; unpack {AFLW_SOURCE} into {root}.")
    names = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
    try:
        annotations = loadmat(keypoints_path)
    except (ValueError, NotImplementedError, OSError) as error:
        raise DatasetError(f"Cannot read {keypoints_path} ({error}); re-download {AFLW_SOURCE}.") from None
    if "gt" not in annotations or "hw" not in annotations:
        raise DatasetError(f"{keypoints_path} lacks the 'gt' or 'hw' array; is it from {AFLW_SOURCE}?")
    stored = np.asarray(annotations["gt"], dtype=np.float64)
    sizes = np.asarray(annotations["hw"], dtype=np.float64).reshape(-1, 2)
    if stored.ndim != 3 or stored.shape[1:] != (5, 2):
        raise DatasetError(f"{keypoints_path} holds landmarks of shape {stored.shape}, not (N, 5, 2).")
    if not (len(names) == len(stored) == len(sizes)):
        raise DatasetError(
            f"{names_path.name} lists {len(names)} images but {keypoints_path.name} has {len(stored)} landmark sets "
            f"and {len(sizes)} sizes; re-download {AFLW_SOURCE}."
        )
    # (y, x) 0-based pixel indices -> (x, y) centres of those pixels.
    return names, stored[:, :, ::-1] + 0.5, sizes


class AFLW(_LandmarkDataset):
    """AFLW faces with 5 landmarks, Thewlis et al.'s split (``aflw_release-2``).

    Args:
        root: the ``aflw_release-2`` folder.
        split: ``"train"`` or ``"test"``.
        size: output side in pixels, or None to keep each crop's size.
        mode: ``"crop"`` or ``"pad"`` when resizing.
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", size: int | None = None, mode: str = "crop") -> None:
        names, landmarks, self.sizes = read_aflw_split(root, split)
        super().__init__(Path(root) / "output", names, landmarks, size, mode)


def read_mtfl_annotations(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Parse MTFL's ``training.txt``/``testing.txt``.

    Returns:
        image paths relative to the file's folder, with forward slashes (N,),
        and landmarks (N, 5, 2) float64 pixels (x, y) in the package's
        convention: the file's 1-based indices minus 1 plus 0.5.
    """
    path = Path(path)
    names, points = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 11:
            raise DatasetError(f"Line {number} of {path} has {len(fields)} fields; MTFL lines hold a path and 10 coordinates.")
        try:
            values = np.array([float(v) for v in fields[1:11]])
        except ValueError:
            raise DatasetError(f"Line {number} of {path} has a coordinate that is not a number.") from None
        names.append(fields[0].replace("\\", "/"))
        # x1..x5, y1..y5; MATLAB's 1-based indices -> 0-based (- 1) -> pixel centres (+ 0.5).
        points.append(np.stack([values[:5], values[5:]], axis=1) - 1.0 + 0.5)
    return names, np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)


class MTFLTest(_LandmarkDataset):
    """The AFLW test faces of the MTFL download (2,995 images), 5 landmarks.

    Args:
        root: the folder holding ``MTFL/testing.txt``, or the ``MTFL`` folder itself.
        size, mode: as for :class:`AFLW`.
    """

    def __init__(self, root: str | os.PathLike, size: int | None = None, mode: str = "crop") -> None:
        root = Path(root)
        folder = root / "MTFL" if (root / "MTFL" / "testing.txt").is_file() else root
        annotations = folder / "testing.txt"
        if not annotations.is_file():
            raise DatasetError(
                f"MTFL annotation file {annotations} does not exist; unpack MTFL.zip "
                "(mmlab.ie.cuhk.edu.hk/projects/TCDCN.html) and pass the folder that holds testing.txt."
            )
        names, landmarks = read_mtfl_annotations(annotations)
        super().__init__(folder, names, landmarks, size, mode)
