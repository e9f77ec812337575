"""Reference landmarks for photos without annotations: dlib's 68-point shape predictor, reduced to 5.

``lsqface evaluate --folder DIR --landmarks dlib`` compares our 5 landmarks
with the 5 that dlib's 68-point predictor (``shape_predictor_68_face_landmarks.dat``
of the ``face-recognition-models`` package, ``pip install 'lsqface[identity]'``)
places on the same photo. The number is an *agreement* between two
estimators, not an error against ground truth: dlib's predictor is itself
off by a few percent of the inter-ocular distance on in-the-wild faces, and
it is trained for upright faces.

The face box is the largest face of dlib's HOG detector run upright (the
predictor needs a box of the size and position its training used; the
detector of :mod:`lsqface.detect` searches eight rotations, whose boxes of
tilted faces the predictor was never trained on). A photo where the detector
finds no face has no reference and is skipped, with its reason.

68 -> 5 (:func:`five_from_sixty_eight`), in CelebA's order, as the model's own
``landmarks_5`` (:func:`lsqface.morphable.ict.five_landmarks_from_68`) and the
MAFL loader: the eye on the image's left is the mean of 68-point 36..41
(0-based; the iBUG "right eye" of the subject), the image-right eye the mean
of 42..47, the nose tip 30, the image-left mouth corner 48, the image-right
mouth corner 54. dlib gives integer pixel indices; the package's pixel centre
is at (j + 0.5, i + 0.5), so 0.5 is added.

dlib's 68-point model is trained on iBUG 300-W, whose licence excludes
commercial use: it serves here as a measuring stick only, never inside the
reconstruction.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from lsqface.errors import ConfigError, ImageError

#: The weight file of dlib's 68-point predictor in face-recognition-models.
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
#: The reserved value of ``--landmarks`` that asks for dlib's reference landmarks.
DLIB_LANDMARKS = "dlib"
#: What a report calls a benchmark measured against dlib.
DLIB_REFERENCE = "agreement with dlib's 68-point predictor"

#: A reference: (H, W, 3) float image in [0, 1] -> (5, 2) pixels, or None with no face.
Reference = Callable[[np.ndarray], "np.ndarray | None"]


def five_from_sixty_eight(points: np.ndarray) -> np.ndarray:
    """The 5 CelebA landmarks (..., 5, 2) from 68 iBUG points (..., 68, 2), in the same units.

    Rows: image-left eye centre (mean of 36..41), image-right eye centre (mean of 42..47),
    nose tip (30), image-left mouth corner (48), image-right mouth corner (54); 0-based indices.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-2:] != (68, 2):
        raise ValueError(f"Expected (..., 68, 2) points, got shape {points.shape}.")
    return np.stack([points[..., 36:42, :].mean(axis=-2), points[..., 42:48, :].mean(axis=-2),
                     points[..., 30, :], points[..., 48, :], points[..., 54, :]], axis=-2)


def predictor_path() -> Path:
    """Path of dlib's 68-point predictor weights, checked before anything slow is loaded.

    Raises:
        ConfigError: dlib, face-recognition-models or its 68-point file is missing.
    """
    from lsqface.evaluate.identity import dlib_models

    _, models = dlib_models("--landmarks dlib")
    path = models / PREDICTOR_FILE
    if not path.is_file():
        raise ConfigError(f"dlib's 68-point predictor {path} is missing; reinstall it: "
                          "pip install --force-reinstall 'lsqface[identity]'.")
    return path


def dlib_search_image(image: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The photo as dlib reads it, and the copy its face detector searches.

    Args:
        image: (H, W, 3) float in [0, 1].
        max_side: the longest side the detector searches, for speed (the predictor runs on the photo).

    Returns:
        pixels (H, W, 3) uint8; the searched copy (bilinear, at most ``max_side`` on its longer side;
        ``pixels`` itself when the photo is smaller); its scale (<= 1).
    """
    from PIL import Image

    pixels = np.ascontiguousarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    height, width = pixels.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    searched = pixels
    if scale < 1.0:
        searched = np.asarray(Image.fromarray(pixels).resize((round(width * scale), round(height * scale)), Image.BILINEAR))
    return pixels, searched, scale


def dlib_photo_rectangle(dlib, rectangle, scale: float):
    """A dlib rectangle found in the searched copy (:func:`dlib_search_image`), in the photo's pixels."""
    if scale >= 1.0:
        return rectangle
    return dlib.rectangle(round(rectangle.left() / scale), round(rectangle.top() / scale),
                          round(rectangle.right() / scale), round(rectangle.bottom() / scale))


def dlib_points(shape) -> np.ndarray:
    """(68, 2) float64 pixels of a dlib shape, pixel centres at j + 0.5 (dlib counts whole pixels)."""
    return np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], dtype=np.float64) + 0.5


def dlib_reference(upsample: int = 1, max_side: int = 1280) -> Reference:
    """dlib's 68-point predictor in the largest upright HOG face, reduced to 5 landmarks.

    Args:
        upsample: times the HOG detector upsamples the image (finds faces down to about 40 pixels at 1).
        max_side: the detector searches the photo at most this large (longer side), for speed; the
            predictor always runs on the full-resolution photo.

    Returns:
        A callable (H, W, 3) float image in [0, 1] -> (5, 2) float64 pixels (pixel centres at
        j + 0.5), or None when no face is found.

    Raises:
        ConfigError: dlib or face-recognition-models is not installed.
    """
    from lsqface.evaluate.identity import dlib_models

    path = predictor_path()
    dlib, _ = dlib_models("--landmarks dlib")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(path))

    def locate(image: np.ndarray) -> np.ndarray | None:
        pixels, searched, scale = dlib_search_image(image, max_side)
        faces = list(detector(searched, upsample))
        if not faces:
            return None
        face = dlib_photo_rectangle(dlib, max(faces, key=lambda rect: rect.area()), scale)
        return five_from_sixty_eight(dlib_points(predictor(pixels, face)))

    return locate


def dlib_folder_benchmark(folder: str | os.PathLike, reference: Reference | None = None,
                          progress: Callable | None = None) -> tuple[list[Path], list[str], np.ndarray, dict[str, str]]:
    """Image paths, names, (N, 5, 2) dlib reference landmarks and skipped images of an image folder.

    Args:
        folder: the image folder (searched as :func:`lsqface.data.images.list_image_files` does).
        reference: the reference (default :func:`dlib_reference`).
        progress: optional wrapper of the image iterator (e.g. tqdm).

    Returns:
        paths, names (relative to ``folder``) and landmarks of the images with a reference, and
        {name: reason} of the images without one (no face found, unreadable).

    Raises:
        DatasetError: the folder does not exist or holds no image.
        ConfigError: dlib or its models are missing.
    """
    from lsqface.data.images import list_image_files, read_image
    from lsqface.errors import DatasetError

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"Image folder {folder} does not exist; pass a folder of photos with --folder.")
    photos = list_image_files(folder)
    if not photos:
        raise DatasetError(f"Image folder {folder} holds no image; pass a folder of photos with --folder.")
    reference = dlib_reference() if reference is None else reference
    paths, names, landmarks, skipped = [], [], [], {}
    for path in (progress(photos) if progress is not None else photos):
        name = Path(path).relative_to(folder).as_posix()
        try:
            points = reference(read_image(path))
        except ImageError as error:
            skipped[name] = str(error)
            continue
        if points is None:
            skipped[name] = "dlib's face detector found no face"
            continue
        paths.append(Path(path))
        names.append(name)
        landmarks.append(points)
    return paths, names, np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2), skipped

