"""Optional face detection, to crop small faces out of large photos before reconstruction.

lsqface itself needs no detector: the network handles a roughly cropped face
at any in-plane rotation, scale and position. A detector only helps when the
face is a small part of the photo, or when a photo holds several faces.

We use dlib's HOG face detector (``pip install lsqface[detect]``, the
``dlib-bin`` wheel: nothing to compile, and the detector's weights are built
into the library, so no model file is fetched). It is fast on a CPU (about
0.1 s for a 640-pixel photo), and on the real photos we have it finds every
face with no false positive, where OpenCV's Haar cascades also fired on
clothing. HOG only finds roughly upright faces, so the photo is searched at
eight rotations (every 45 degrees) and the boxes are mapped back and merged:
a face at any in-plane angle is found, which is what our rotation-robust
reconstruction needs from a detector. The 68-point landmark predictor of dlib
is not used here (its training data, 300-W, is not for commercial use); it
serves only as an evaluation reference (:mod:`lsqface.evaluate.reference`).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from lsqface.errors import LsqfaceError

#: Rotations (degrees) at which the photo is searched.
SEARCH_ANGLES = (0, 45, 90, 135, 180, 225, 270, 315)


class DetectorError(LsqfaceError):
    """The optional face detector is not installed or found no face."""


def _detector():
    try:
        import dlib
    except ImportError:
        raise DetectorError(
            "Face detection needs dlib; install it with: pip install 'lsqface[detect]' "
            "(or pass the face box with --bbox x,y,width,height)."
        ) from None
    return _frontal_detector(dlib)


@functools.lru_cache(maxsize=1)
def _frontal_detector(dlib):
    # Built once per process: building it costs about as much as searching a small photo.
    return dlib.get_frontal_face_detector()


def _merge(boxes: list[tuple[float, float, float, float, float]], overlap: float = 0.3) -> list[tuple[float, float, float, float]]:
    """Greedy non-maximum suppression over (x, y, w, h, score), keeping the higher scores."""
    kept: list[tuple[float, float, float, float, float]] = []
    for box in sorted(boxes, key=lambda item: -item[4]):
        x, y, w, h, _ = box
        duplicate = False
        for kx, ky, kw, kh, _ in kept:
            inter_w = max(0.0, min(x + w, kx + kw) - max(x, kx))
            inter_h = max(0.0, min(y + h, ky + kh) - max(y, ky))
            intersection = inter_w * inter_h
            if intersection / min(w * h, kw * kh) > overlap:
                duplicate = True
                break
        if not duplicate:
            kept.append(box)
    return [(x, y, w, h) for x, y, w, h, _ in kept]


def detect_faces(image: np.ndarray, max_side: int = 640, threshold: float = 0.3) -> list[tuple[float, float, float, float]]:
    """Face boxes (x, y, width, height) in pixels of ``image`` (H, W, 3) float in [0, 1] or uint8, largest first.

    Args:
        max_side: the photo is searched at most this large (longer side), for speed.
        threshold: smallest HOG score kept (dlib's default is 0; 0.3 drops the weak hits that
            searching eight rotations adds: on our photos true faces score 1.1-2.2).

    Raises:
        DetectorError: dlib is not installed.
    """
    from PIL import Image

    detector = _detector()
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    # A uint8 photo is searched as it is: converting a 50-megapixel photo to float and back costs gigabytes.
    pixels = image if image.dtype == np.uint8 else (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    picture = Image.fromarray(np.ascontiguousarray(pixels))
    if scale < 1.0:
        picture = picture.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
    centre = np.array([picture.width / 2.0, picture.height / 2.0])
    found: list[tuple[float, float, float, float, float]] = []
    for angle in SEARCH_ANGLES:
        # PIL turns counter-clockwise by ``angle`` about the centre; expand keeps every pixel.
        rotated = picture.rotate(angle, resample=Image.BILINEAR, expand=True)
        rotated_centre = np.array([rotated.width / 2.0, rotated.height / 2.0])
        rectangles, scores, _ = detector.run(np.asarray(rotated), 1, threshold)
        radians = math.radians(angle)
        # A point p of the rotated picture came from centre + R(angle) (p - rotated_centre), y down.
        cos, sin = math.cos(radians), math.sin(radians)
        for rectangle, score in zip(rectangles, scores):
            cx = (rectangle.left() + rectangle.right()) / 2.0 - rotated_centre[0]
            cy = (rectangle.top() + rectangle.bottom()) / 2.0 - rotated_centre[1]
            x = centre[0] + cos * cx - sin * cy
            y = centre[1] + sin * cx + cos * cy
            side = float(rectangle.width())
            found.append(((x - side / 2) / scale, (y - side / 2) / scale, side / scale, side / scale, float(score)))
    boxes = _merge(found)
    return sorted(boxes, key=lambda box: -box[2] * box[3])
