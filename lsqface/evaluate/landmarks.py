"""5-landmark error on photos with annotations (seed J, Table 2): "direct" and "fitted".

Two readings of the 5 landmarks (left eye centre, right eye centre, nose tip,
left and right mouth corner, CelebA's order) from one reconstruction:

- **fitted**: the fitted 3DMM's landmark vertices projected by the fitted
  camera (``Reconstruction.landmarks_5``);
- **direct**: read from the network's correspondence map alone. Landmark k
  is the mean of six model vertices (``model.landmarks_5`` rows), each with
  a flattened position (``uv_model.vertex_uv``). For each vertex, among the
  pixels the network is confident about (geometric confidence above a
  threshold), the one whose predicted (u, v) is nearest is found; the 3 x 3
  neighbourhood around it gives a local affine map pixel -> (u, v) by least
  squares, whose inverse puts the vertex at sub-pixel precision; the
  landmark is the mean of its vertices' image positions, and
  ``to_network^-1`` takes it back to the original image. The vertices are
  located one by one, not their mean (u, v), because an eye centre's six
  vertices ring the eye opening, a hole in the face mesh and in its
  flattening: the mean (u, v) lies on no pixel of the face, and the nearest
  pixel on the eyelid was 5 to 8 % of the inter-ocular distance off with the
  true maps of synthetic faces (under 0.5 % vertex by vertex).

The error of an image is the mean point distance over the inter-ocular
distance (distance between the true eye centres), in percent
(:func:`lsqface.evaluate.metrics.landmark_error`). A face the pipeline
cannot reconstruct (a solver failure, an unreadable image, no confident
pixel) counts with :data:`FAILED_ERROR` and is counted in ``failed``.

Landmark files for any image folder (:func:`read_landmark_file`): one image
per line, ``name x1 y1 x2 y2 x3 y3 x4 y4 x5 y5`` separated by spaces, tabs or
commas; ``#`` starts a comment; a first line whose second field is not a
number is a header and skipped. ``name`` is relative to the image folder.
Coordinates are continuous pixel positions in the package's convention: the
image's top-left corner is (0, 0) and the centre of the pixel in column j,
row i is (j + 0.5, i + 0.5) (add 0.5 to 0-based integer pixel indices).

Conventions: pixel centres at (j + 0.5, i + 0.5) everywhere.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lsqface.errors import DatasetError, ImageError, SolverError
from lsqface.evaluate.metrics import landmark_error
from lsqface.morphable.uv_model import UVMorphableModel

#: The error (percent of the inter-ocular distance) a face counts with when it cannot be reconstructed.
FAILED_ERROR = 100.0
#: An image whose error is above this (percent) is a failure in the failure rate.
FAILURE_THRESHOLD = 10.0
#: Pixels whose geometric confidence is above this are searched for direct landmarks.
CONFIDENCE_THRESHOLD = 0.5


def landmark_uv(uv_model: UVMorphableModel) -> torch.Tensor:
    """(5, 6, 2) float64 flattened (u, v) of the six vertices whose mean is each of the 5 landmarks."""
    vertex_uv = np.asarray(uv_model.vertex_uv, dtype=np.float64)
    rows = np.asarray(uv_model.model.landmarks_5)
    return torch.from_numpy(vertex_uv[rows])


def _refine(uv: torch.Tensor, mask: torch.Tensor, row: int, column: int, target: torch.Tensor) -> torch.Tensor:
    """Sub-pixel (x, y) where the local affine map pixel -> uv of the 3 x 3 block at (row, column) hits ``target``."""
    height, width = mask.shape
    centre = torch.tensor([column + 0.5, row + 0.5], dtype=torch.float64)
    rows = slice(max(row - 1, 0), min(row + 2, height))
    columns = slice(max(column - 1, 0), min(column + 2, width))
    block_mask = mask[rows, columns]
    if int(block_mask.sum()) < 3:
        return centre
    ys, xs = torch.meshgrid(torch.arange(rows.start, rows.stop, dtype=torch.float64) + 0.5,
                            torch.arange(columns.start, columns.stop, dtype=torch.float64) + 0.5, indexing="ij")
    # Fit around the centre pixel so the 3 x 3 system is well conditioned.
    design = torch.stack([xs[block_mask] - centre[0], ys[block_mask] - centre[1], torch.ones_like(xs[block_mask])], dim=1)
    values = uv[:, rows, columns].to(torch.float64).permute(1, 2, 0)[block_mask]  # (n, 2)
    solution = torch.linalg.lstsq(design, values).solution  # (3, 2): uv = [dx dy 1] @ solution
    jacobian = solution[:2].T  # d(u, v) / d(x, y)
    if not bool(torch.isfinite(jacobian).all()) or abs(float(torch.linalg.det(jacobian))) < 1e-12:
        return centre
    offset = torch.linalg.solve(jacobian, target - solution[2])
    # A landmark found in this block lies within it; a larger step means the affine model broke down.
    if not bool(torch.isfinite(offset).all()) or float(offset.abs().max()) > 1.5:
        return centre
    return centre + offset


def direct_landmarks(correspondence: torch.Tensor, confidence: torch.Tensor, target_uv: torch.Tensor,
                     to_network: torch.Tensor | None = None, threshold: float = CONFIDENCE_THRESHOLD) -> torch.Tensor:
    """Landmarks read from a correspondence map: the pixel whose predicted (u, v) is each landmark's.

    Args:
        correspondence: (B, 2, S, S) predicted (u, v) per pixel of the network frame.
        confidence: (B, C, S, S) confidence in (0, 1); channel 0 (geometric) is used.
        target_uv: (L, K, 2) the (u, v) of the K vertices averaged into each landmark
            (:func:`landmark_uv`), or (L, 2) for single points.
        to_network: (B, 3, 3) original-image pixels -> network pixels, or None for the network frame.
        threshold: only pixels with confidence above this are searched.

    Returns:
        (B, L, 2) float64 landmark (x, y) in original-image pixels; NaN for an image without a
        confident pixel.
    """
    batch = correspondence.shape[0]
    uv_maps = correspondence.detach().cpu().to(torch.float64)
    masks = confidence.detach().cpu()[:, 0] > threshold
    target_uv = torch.as_tensor(target_uv, dtype=torch.float64)
    if target_uv.dim() == 2:
        target_uv = target_uv[:, None]
    landmarks, per_landmark = target_uv.shape[:2]
    # Landmarks that repeat one vertex (nose, mouth corners) are located once.
    unique_uv, inverse = torch.unique(target_uv.reshape(-1, 2), dim=0, return_inverse=True)
    points = torch.full((batch, landmarks, 2), float("nan"), dtype=torch.float64)
    for b in range(batch):
        mask = masks[b]
        if not bool(mask.any()):
            continue
        confident = uv_maps[b].permute(1, 2, 0)[mask]  # (n, 2)
        indices = mask.nonzero()  # (n, 2) row, column
        nearest = torch.cdist(unique_uv, confident).argmin(dim=1)
        located = torch.stack([
            _refine(uv_maps[b], mask, int(indices[nearest[k], 0]), int(indices[nearest[k], 1]), unique_uv[k])
            for k in range(unique_uv.shape[0])
        ])
        points[b] = located[inverse].reshape(landmarks, per_landmark, 2).mean(dim=1)
    if to_network is not None:
        from_network = torch.linalg.inv(to_network.detach().cpu().to(torch.float64))
        homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1) @ from_network.transpose(1, 2)
        points = homogeneous[..., :2] / homogeneous[..., 2:3]
    return points


@dataclass
class LandmarkPredictions:
    """Per-image predictions of one landmark benchmark, in original-image pixels.

    Attributes:
        names: image names (relative to the dataset's image folder).
        truth: (N, 5, 2) annotated landmarks.
        fitted: (N, 5, 2) fitted landmarks; direct: (N, 5, 2) direct landmarks; sixty_eight: (N, 68, 2).
            NaN for a failed image.
        failures: {name: reason} of images that could not be reconstructed.
        reference: None when ``truth`` is annotated ground truth, else what it is (e.g.
            :data:`lsqface.evaluate.reference.DLIB_REFERENCE`): the errors are then an agreement.
        skipped: {name: reason} of images left out because they have no reference landmarks.
    """

    names: list[str]
    truth: np.ndarray
    fitted: np.ndarray
    direct: np.ndarray
    sixty_eight: np.ndarray
    failures: dict[str, str] = field(default_factory=dict)
    reference: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def errors(self, kind: str = "fitted") -> np.ndarray:
        """(N,) error per image in percent of the inter-ocular distance; :data:`FAILED_ERROR` where not finite."""
        predicted = {"fitted": self.fitted, "direct": self.direct}[kind]
        error = landmark_error(torch.from_numpy(predicted), torch.from_numpy(self.truth)).numpy()
        return np.where(np.isfinite(error), error, FAILED_ERROR)

    def records(self) -> list[dict]:
        """One JSON-able dict per image: image, five, five_direct, sixty_eight (None where failed), and error.

        With a ``reference`` (not ground truth), each record also holds its ``"reference"`` 5 points.
        """
        def points(array: np.ndarray):
            return None if not np.isfinite(array).all() else array.tolist()

        records = []
        for index, name in enumerate(self.names):
            record = {"image": name, "five": points(self.fitted[index]), "sixty_eight": points(self.sixty_eight[index]),
                      "five_direct": points(self.direct[index])}
            if self.reference is not None:
                record["reference"] = self.truth[index].tolist()
            if name in self.failures:
                record["error"] = self.failures[name]
            records.append(record)
        return records


def summarise(errors: np.ndarray) -> dict[str, float]:
    """Mean, median, failure rate (percent of images above :data:`FAILURE_THRESHOLD`) and count of ``errors`` (N,)."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "failure_rate": float("nan"), "count": 0}
    return {"mean": float(errors.mean()), "median": float(np.median(errors)),
            "failure_rate": float(100.0 * (errors > FAILURE_THRESHOLD).mean()), "count": int(errors.size)}


def run_in_batches(run: Callable[[list[int]], None], count: int, batch_size: int,
                   progress: Callable | None = None) -> dict[int, str]:
    """Call ``run`` on the indices 0 .. count - 1, ``batch_size`` at a time.

    A batch whose solve fails (:class:`~lsqface.errors.SolverError`) or holds an image that cannot
    be read (:class:`~lsqface.errors.ImageError`) is run again one index at a time, so one bad image
    does not cost its batch.

    Returns:
        {index: the reason} of every index that fails on its own.
    """
    failures: dict[int, str] = {}
    starts = range(0, count, batch_size)
    for start in (progress(starts) if progress is not None else starts):
        indices = list(range(start, min(start + batch_size, count)))
        try:
            run(indices)
        except (SolverError, ImageError):
            for index in indices:
                try:
                    run([index])
                except (SolverError, ImageError) as error:
                    failures[index] = str(error)
    return failures


def evaluate_landmarks(reconstructor, paths: Sequence[str | os.PathLike], truth: np.ndarray, names: Sequence[str] | None = None,
                       batch_size: int = 8, threshold: float = CONFIDENCE_THRESHOLD,
                       progress: Callable | None = None, boxes: Sequence[Sequence[float] | None] | None = None,
                       reference: str | None = None) -> LandmarkPredictions:
    """Reconstruct every image and read its fitted and direct landmarks.

    Args:
        reconstructor: a :class:`lsqface.reconstruct.Reconstructor` (or anything callable the same way).
        paths: N image files.
        truth: (N, 5, 2) annotated landmarks in each file's pixels.
        names: N names for the report (default: the file names).
        batch_size: images per forward pass.
        threshold: confidence threshold of the direct landmarks.
        progress: optional wrapper of the batch iterator (e.g. tqdm).
        boxes: N optional face boxes (x, y, width, height) in each file's pixels: the image is
            reconstructed in a square around its box (None: the whole image). Landmarks stay in
            the files' pixels either way.
        reference: what ``truth`` is when not annotated ground truth (see :class:`LandmarkPredictions`).

    Returns:
        The predictions; a batch whose solve fails is retried image by image, and an image that
        still fails (or cannot be read) is recorded in ``failures`` with NaN predictions.
    """
    paths = [Path(path) for path in paths]
    names = [path.name for path in paths] if names is None else list(names)
    count = len(paths)
    fitted = np.full((count, 5, 2), np.nan)
    direct = np.full((count, 5, 2), np.nan)
    sixty_eight = np.full((count, 68, 2), np.nan)
    target_uv = landmark_uv(reconstructor.uv_model)
    boxes = [None] * count if boxes is None else list(boxes)

    def run(indices: list[int]) -> None:
        result = reconstructor([paths[i] for i in indices], boxes=[boxes[i] for i in indices])
        fitted[indices] = result.landmarks_5.detach().cpu().numpy()
        sixty_eight[indices] = result.landmarks_68.detach().cpu().numpy()
        direct[indices] = direct_landmarks(result.correspondence, result.confidence, target_uv, result.to_network,
                                           threshold).numpy()

    failures = {names[index]: reason for index, reason in run_in_batches(run, count, batch_size, progress).items()}
    return LandmarkPredictions(names, np.asarray(truth, dtype=np.float64), fitted, direct, sixty_eight, failures,
                               reference=reference)


def read_landmark_file(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Parse a landmark file (module notes): names (N,) and landmarks (N, 5, 2) float64 pixels.

    Raises:
        DatasetError: a line is not a name and ten numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"Landmark file {path} does not exist; give a file of lines 'name x1 y1 ... x5 y5'.")
    names, values = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = [part for part in re.split(r"[\s,]+", line.split("#", 1)[0].strip()) if part]
        if not fields:
            continue
        try:
            numbers = [float(value) for value in fields[1:]]
        except ValueError:
            if not names and not values:
                continue  # a header line
            raise DatasetError(f"Line {number} of {path} has a coordinate that is not a number; write 'name x1 y1 ... x5 y5'.") from None
        if len(numbers) != 10:
            raise DatasetError(f"Line {number} of {path} has {len(numbers)} numbers instead of 10; write 'name x1 y1 ... x5 y5'.")
        names.append(fields[0])
        values.append(numbers)
    if not names:
        raise DatasetError(f"Landmark file {path} lists no images; write one line 'name x1 y1 ... x5 y5' per image.")
    return names, np.asarray(values, dtype=np.float64).reshape(-1, 5, 2)


def folder_benchmark(folder: str | os.PathLike, landmark_file: str | os.PathLike) -> tuple[list[Path], list[str], np.ndarray]:
    """Image paths, names and (N, 5, 2) landmarks of an image folder with a landmark file.

    Raises:
        DatasetError: the folder or an image listed in the file is missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"Image folder {folder} does not exist; pass the folder the landmark file's names are relative to.")
    names, landmarks = read_landmark_file(landmark_file)
    paths = [folder / name for name in names]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} images of {landmark_file} (e.g. {missing[0]}) are not in {folder}; check the names.")
    return paths, names, landmarks


def dataset_benchmark(dataset) -> tuple[list[Path], list[str], np.ndarray]:
    """Image paths, names and (N, 5, 2) landmarks in file pixels of a landmark dataset (MAFL, AFLW, MTFLTest).

    The dataset must be built with ``size=None`` and no crop box, so its landmarks are in the files' pixels.
    """
    if getattr(dataset, "size", None) is not None or getattr(dataset, "crop_box", None) is not None:
        raise DatasetError("Build the dataset with size=None and no crop box for evaluation; the reconstructor frames the images itself.")
    names = list(dataset.names)
    return [Path(dataset.images) / name for name in names], names, np.asarray(dataset.landmarks, dtype=np.float64)
