"""Does the reconstruction look like the person? Face-recognition descriptors (seed I).

The reconstruction's colour is rendered at the photo's resolution (over black
or over the photo itself), a face-recognition network describes the rendering
and the photo, and their cosine similarity says how much of the identity the
reconstruction keeps. One number per photo makes a distribution; the earth
mover's distance (1-D Wasserstein, :func:`scipy.stats.wasserstein_distance`)
from it to the similarities of same-identity photo pairs and of
different-identity photo pairs places it between "the same person" (small
distance to the first) and "a stranger" (small distance to the second).

Descriptors are pluggable: any callable taking an (H, W, 3) float image in
[0, 1] to a (D,) vector. Two ready ones, both optional imports:

- :func:`dlib_descriptor`: dlib's 128-D face-recognition ResNet (``pip install
  'lsqface[identity]'``: the ``dlib-bin`` wheel and the
  ``face-recognition-models`` data package). It finds the face (HOG
  detector), places dlib's 5 landmarks and describes the aligned 150 x 150
  chip. Its creators call two faces the same person below a Euclidean
  distance of 0.6.
- :func:`onnx_descriptor`: any ONNX face-embedding network (e.g. an ArcFace
  export) through ``onnxruntime``, which lsqface does not install.

The images given to a descriptor are square crops around the reconstructed
face (:func:`face_box`), the same crop for the photo and its rendering, so a
descriptor without a detector sees the face too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lsqface.errors import ConfigError

#: A face-recognition descriptor: (H, W, 3) float image in [0, 1] -> (D,) vector.
Descriptor = Callable[[np.ndarray], np.ndarray]


def cosine_similarity(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarity (...,) of descriptors (..., D) and (..., D)."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    norms = np.linalg.norm(first, axis=-1) * np.linalg.norm(second, axis=-1)
    return (first * second).sum(-1) / np.maximum(norms, 1e-12)


def dlib_models(user: str = "dlib"):
    """dlib and the folder of face-recognition-models' weight files: ``(dlib module, Path)``.

    Args:
        user: what needs them, for the error's sentence (e.g. "The dlib descriptor").

    Raises:
        ConfigError: dlib or face-recognition-models is not installed.
    """
    import importlib.util

    # face_recognition_models imports pkg_resources (setuptools) only to find its own files: find them directly.
    spec = importlib.util.find_spec("face_recognition_models")
    try:
        import dlib
    except ImportError:
        dlib = None
    if dlib is None or spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{user} needs dlib and its models: pip install 'lsqface[identity]' "
                          "(dlib-bin and face-recognition-models).")
    return dlib, Path(list(spec.submodule_search_locations)[0]) / "models"


def dlib_descriptor(upsample: int = 1, jitter: int = 1) -> Descriptor:
    """dlib's 128-D face-recognition ResNet as a descriptor (needs ``lsqface[identity]``).

    Args:
        upsample: times the HOG detector upsamples the image (finds smaller faces).
        jitter: random re-crops averaged per descriptor (dlib's ``num_jitters``; 1 is plain).

    Raises:
        ConfigError: dlib or face-recognition-models is not installed.
    """
    dlib, models = dlib_models("The dlib descriptor")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def describe(image: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
        height, width = pixels.shape[:2]
        faces = list(detector(pixels, upsample))
        # No face found (a rendering over black, say): the crop is already around the face.
        box = max(faces, key=lambda rect: rect.area()) if faces else dlib.rectangle(0, 0, width - 1, height - 1)
        return np.asarray(encoder.compute_face_descriptor(pixels, predictor(pixels, box), jitter), dtype=np.float64)

    return describe


def onnx_descriptor(path: str | os.PathLike, size: int | None = None, mean: float = 0.5, std: float = 0.5) -> Descriptor:
    """An ONNX face-embedding network as a descriptor (needs ``onnxruntime``).

    The image is resized to the network's square input (``size``, or the model's static input
    size), normalised as (x - mean) / std on [0, 1] values, given as (1, 3, S, S) RGB float32,
    and the first output is flattened.

    Raises:
        ConfigError: onnxruntime is missing, the file does not exist, or the input size is unknown.
    """
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("ONNX descriptors need onnxruntime: pip install onnxruntime.") from None
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX descriptor {path} does not exist; give the path of a face-embedding .onnx file.")
    runtime = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model_input = runtime.get_inputs()[0]
    if size is None:
        side = model_input.shape[-1]
        if not isinstance(side, int):
            raise ConfigError(f"{path} has a dynamic input size; pass its input side (e.g. 112).")
        size = side

    def describe(image: np.ndarray) -> np.ndarray:
        from PIL import Image

        pixels = Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        tensor = ((np.asarray(pixels, dtype=np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None]
        return np.asarray(runtime.run(None, {model_input.name: tensor.astype(np.float32)})[0], dtype=np.float64).reshape(-1)

    return describe


def face_box(reconstruction, index: int, margin: float = 1.3) -> tuple[int, int, int]:
    """Square (left, top, side) integer pixels around face ``index``'s projected vertices, ``margin`` times their extent.

    The extent is clipped to the image (a wild reconstruction gives at most the whole image).
    """
    height, width = reconstruction.image_sizes[index]
    points = reconstruction.image_vertices()[index, :, :2].detach().cpu().numpy()
    size = np.array([width, height], dtype=np.float64)
    low = np.clip(np.nan_to_num(points.min(axis=0), nan=0.0), 0.0, size)
    high = np.clip(np.nan_to_num(points.max(axis=0), nan=0.0), 0.0, size)
    if np.any(high - low <= 0):
        low, high = np.zeros(2), size
    centre, side = 0.5 * (low + high), margin * float((high - low).max())
    side = max(int(np.ceil(side)), 8)
    return int(np.floor(centre[0] - 0.5 * side)), int(np.floor(centre[1] - 0.5 * side)), side


def crop_square(image: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """The (side, side, 3) part of ``image`` (H, W, 3) in ``box`` (left, top, side); black outside the image."""
    left, top, side = box
    height, width = image.shape[:2]
    out = np.zeros((side, side, 3), dtype=np.float32)
    rows = slice(max(top, 0), min(top + side, height))
    columns = slice(max(left, 0), min(left + side, width))
    if rows.stop > rows.start and columns.stop > columns.start:
        out[rows.start - top:rows.stop - top, columns.start - left:columns.stop - left] = image[rows, columns]
    return out


def render_colour(reconstruction, index: int, photo: np.ndarray | None = None) -> np.ndarray:
    """Face ``index``'s reconstructed colour rendered at its photo's resolution, (H, W, 3) float32 in [0, 1].

    Args:
        reconstruction: a :class:`lsqface.reconstruct.Reconstruction`.
        index: which face of the batch.
        photo: (H, W, 3) float in [0, 1] to render over, or None for black.
    """
    from lsqface.render.shading import render_mesh

    height, width = reconstruction.image_sizes[index]
    vertices = reconstruction.image_vertices()[index:index + 1].detach().cpu().float()
    colour = reconstruction.colour[index:index + 1].detach().cpu().float()
    background = None if photo is None else torch.from_numpy(np.asarray(photo, dtype=np.float32)).permute(2, 0, 1)[None]
    image, _ = render_mesh(vertices, reconstruction.triangles.cpu(), colour, height, width, background=background,
                           cull_backfaces=True)
    return image[0].permute(1, 2, 0).clamp(0.0, 1.0).numpy()


def rendering_similarity(reconstruction, photos: Sequence[np.ndarray], descriptor: Descriptor,
                         background: str = "black", margin: float = 1.3) -> np.ndarray:
    """Cosine similarity (B,) between each photo's descriptor and its reconstruction's rendering's.

    Args:
        reconstruction: B faces reconstructed from ``photos``.
        photos: B (H, W, 3) float images in [0, 1], each the one face ``b`` was reconstructed from.
        descriptor: the face-recognition descriptor.
        background: "black" or "photo": what the rendering is drawn over.
        margin: the square crop around the face given to the descriptor (:func:`face_box`).
    """
    if background not in ("black", "photo"):
        raise ConfigError(f"Render over 'black' or 'photo', not {background!r}.")
    similarities = []
    for index, photo in enumerate(photos):
        photo = np.asarray(photo, dtype=np.float32)
        rendering = render_colour(reconstruction, index, photo if background == "photo" else None)
        box = face_box(reconstruction, index, margin)
        similarities.append(cosine_similarity(descriptor(crop_square(rendering, box)), descriptor(crop_square(photo, box))))
    return np.asarray(similarities, dtype=np.float64)


def pair_similarities(descriptors: np.ndarray, identities: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of every unordered pair of (N, D) descriptors: (same identity (P,), different (Q,))."""
    descriptors = np.asarray(descriptors, dtype=np.float64)
    same, different = [], []
    for first in range(len(descriptors)):
        for second in range(first + 1, len(descriptors)):
            value = float(cosine_similarity(descriptors[first], descriptors[second]))
            (same if identities[first] == identities[second] else different).append(value)
    return np.asarray(same), np.asarray(different)


def identity_distances(rendering: np.ndarray, same: np.ndarray, different: np.ndarray) -> dict[str, float]:
    """Earth mover's distance of the rendering similarities to the same- and the different-identity pairs.

    Returns:
        {"to_same": W1(rendering, same), "to_different": W1(rendering, different)}; NaN where a set is empty.
    """
    from scipy.stats import wasserstein_distance

    def distance(values: np.ndarray) -> float:
        return float(wasserstein_distance(rendering, values)) if len(rendering) and len(values) else float("nan")

    return {"to_same": distance(np.asarray(same)), "to_different": distance(np.asarray(different))}


def identity_from_name(path: str | os.PathLike) -> str:
    """The person in a photo named after them: the file stem without trailing digits, dashes and
    underscores, lower case ("obama2.jpg" and "Obama_3.png" -> "obama")."""
    return Path(path).stem.rstrip("0123456789-_ ").lower() or Path(path).stem.lower()


def evaluate_identity(reconstructor, photos: Sequence[str | os.PathLike | np.ndarray], descriptor: Descriptor,
                      identities: Sequence | None = None, boxes: Sequence | None = None, background: str = "black",
                      margin: float = 1.3) -> dict[str, float]:
    """Identity measures of a reconstructor on photos of known people.

    Every photo is reconstructed (in one batch; ``boxes``: optional face boxes (x, y, width, height)),
    its rendering compared with it (:func:`rendering_similarity`), and every pair of photos compared
    (:func:`pair_similarities`, each photo cropped to its reconstructed face as for the renderings).

    Args:
        reconstructor: a :class:`lsqface.reconstruct.Reconstructor`.
        photos: image files or (H, W, 3) float arrays in [0, 1].
        descriptor: the face-recognition descriptor.
        identities: who is in each photo (default: :func:`identity_from_name` of each file).
        boxes: face boxes, one per photo (None entries for whole photos), or None.
        background: "black" or "photo", under the rendering.
        margin: crop size around the face (:func:`face_box`).

    Returns:
        Mean cosine similarity of renderings to their photos, of same- and of different-identity
        photo pairs, and the earth mover's distances of the rendering similarities to both pair sets.
    """
    from lsqface.data.images import read_image

    if identities is None:
        identities = [identity_from_name(photo) for photo in photos]
    images = [read_image(photo) for photo in photos]
    result = reconstructor(images, boxes)
    rendering = rendering_similarity(result, images, descriptor, background, margin)
    descriptors = np.stack([descriptor(crop_square(image, face_box(result, index, margin))) for index, image in enumerate(images)])
    same, different = pair_similarities(descriptors, list(identities))
    distances = identity_distances(rendering, same, different)

    def mean(values: np.ndarray) -> float:
        return float(np.mean(values)) if len(values) else float("nan")

    return {
        f"rendering over {background} vs its photo, mean cosine ({len(rendering)} photos)": mean(rendering),
        f"same-identity photo pairs, mean cosine ({len(same)} pairs)": mean(same),
        f"different-identity photo pairs, mean cosine ({len(different)} pairs)": mean(different),
        "earth mover's distance of renderings to same-identity pairs": distances["to_same"],
        "earth mover's distance of renderings to different-identity pairs": distances["to_different"],
    }
