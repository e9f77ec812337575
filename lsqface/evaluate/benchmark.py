"""Synthetic benchmark with ground truth: error against in-plane rotation (seed J, Fig. 5 style).

Faces come from the project's generator (:mod:`lsqface.data.synthetic`) with
the in-plane rotation drawn uniformly from [-r, r] for each range r (0, 15,
45, 90, 180 degrees by default); the other settings are the generator's
defaults (yaw within 25 degrees, pitch within 15, procedural backgrounds).
Every range uses the same seeds, so the faces differ only in their roll (the
roll is the same uniform draw scaled by r): the rows of the table compare
like with like.

Seeds are reserved for evaluation: face k is seed ``EVALUATION_SEED_START +
k`` (2,100,000,000 and up, below 2**31). Training draws seed
``(run_seed * 1_000_003 + position) mod 2**31`` (lsqface.train.data), which
stays below 2.1e9 for run seeds under 2,000 and fewer than 100 million
training images, so evaluation never sees a training face.

Per face and range: the fitted and the direct 5-landmark error (percent of
the inter-ocular distance, :mod:`lsqface.evaluate.landmarks`), the vertex
error in millimetres after similarity alignment over the model's face region
(every vertex of the face model, which is the face region: ICT's narrow area
by default), and the camera rotation error in degrees. A face whose solve
fails counts with :data:`~lsqface.evaluate.landmarks.FAILED_ERROR` landmark
error and has no vertex or rotation error (NaN). Failure rate: percent of
faces with landmark error above 10 %.

Three looks (``look``): "mask", the fitted face region alone over procedural backgrounds
(:mod:`lsqface.data.synthetic`); "photo", the whole-head photographs the default model is
trained on (:mod:`lsqface.synthetic.photoreal`) over the packaged natural photos; and "other",
a second set never trained on: another shading (two hard lights), other hair (mostly long),
flat patch occluders instead of objects, a harsher camera and procedural backgrounds
(:func:`lsqface.synthetic.photoreal.other_look`). A model that only learned its own renderer
shows it as a gap between "photo" and "other".

The oracle (:data:`ORACLE`) gives the generator's true maps to
:func:`lsqface.reconstruct.reconstruct_from_maps`: it measures the pipeline
and the metrics themselves and must score near zero.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.errors import SolverError
from lsqface.evaluate.landmarks import FAILED_ERROR, direct_landmarks, landmark_uv, summarise
from lsqface.evaluate.metrics import landmark_error, rotation_error_degrees, vertex_error
from lsqface.morphable.uv_model import UVMorphableModel

#: First seed reserved for evaluation faces (see the module notes).
EVALUATION_SEED_START = 2_100_000_000

#: Where ``evaluate --validation`` faces start, counted from EVALUATION_SEED_START: far beyond any
#: benchmark's count, so settings chosen on them are never chosen on the benchmark's faces.
VALIDATION_OFFSET = 1_000_000
#: The in-plane rotation ranges of the benchmark, degrees.
DEFAULT_RANGES = (0.0, 15.0, 45.0, 90.0, 180.0)
#: Pass as the reconstructor to evaluate the true maps.
ORACLE = "oracle"
#: The synthetic looks (see the module notes).
LOOKS = ("mask", "photo", "other")


class _PhotoFaces:
    """Evaluation faces of the whole-head generator in one look; backgrounds drawn from each face's seed."""

    def __init__(self, uv_model: UVMorphableModel, look: str) -> None:
        from lsqface.data.backgrounds import BackgroundSampler, packaged_natural_images
        from lsqface.synthetic.head import load_head
        from lsqface.synthetic.photoreal import PhotoGenerator

        self.look = look
        self.generator = PhotoGenerator(uv_model, load_head(uv_model.model.notes.get("source"), uv_model.model.triangles))
        files = packaged_natural_images() if look == "photo" else []
        self.backgrounds = BackgroundSampler(files) if files else None

    def __call__(self, seeds: list[int], config: SyntheticConfig):
        from lsqface.data.backgrounds import procedural_background
        from lsqface.synthetic.photoreal import PhotoConfig, other_look

        photo = PhotoConfig(size=config.size, roll_range=config.roll_range, yaw_range=config.yaw_range,
                            pitch_range=config.pitch_range)
        if self.look == "other":
            photo = other_look(photo)
        generators = [torch.Generator().manual_seed(int(seed) + 7919) for seed in seeds]

        def draw(generator):
            if self.backgrounds is not None:
                return self.backgrounds.sample(1, config.size, config.size, generator)[0]
            return procedural_background(1, config.size, config.size, generator)[0]

        backgrounds = torch.stack([draw(g) for g in generators])
        textures = torch.stack([draw(g) for g in generators])
        return self.generator.generate(seeds, photo, backgrounds=backgrounds, textures=textures)


def evaluation_seeds(count: int, start: int = 0) -> list[int]:
    """The seeds of evaluation faces ``start`` .. ``start + count - 1``."""
    return [EVALUATION_SEED_START + start + k for k in range(count)]


@dataclass
class SyntheticResults:
    """Per-face results of one in-plane rotation range (N faces).

    Attributes:
        roll_range: r in degrees (roll drawn from [-r, r]).
        seeds: (N,) face seeds; roll: (N,) the true in-plane rotation, degrees.
        fitted_error, direct_error: (N,) landmark error, percent of the inter-ocular distance.
        vertex_error: (N,) mm after similarity alignment; rotation_error: (N,) degrees (NaN if failed).
        failed: (N,) bool, the solve failed.
        mean_face_vertex_error: (N,) mm, the model's mean shape against the same faces after the
            same alignment: what predicting no shape at all scores (None if not measured).
    """

    roll_range: float
    seeds: np.ndarray
    roll: np.ndarray
    fitted_error: np.ndarray
    direct_error: np.ndarray
    vertex_error: np.ndarray
    rotation_error: np.ndarray
    failed: np.ndarray
    mean_face_vertex_error: np.ndarray | None = None

    def summary(self) -> dict[str, float]:
        """Means, medians and failure rates of the range: the numbers of one table row."""
        fitted, direct = summarise(self.fitted_error), summarise(self.direct_error)
        return {
            "roll_range": self.roll_range, "count": fitted["count"],
            "fitted": fitted["mean"], "fitted_failure_rate": fitted["failure_rate"],
            "direct": direct["mean"], "direct_failure_rate": direct["failure_rate"],
            "fitted_median": fitted["median"],
            "vertex_mm": float(np.nanmean(self.vertex_error)) if np.isfinite(self.vertex_error).any() else float("nan"),
            "vertex_median_mm": float(np.nanmedian(self.vertex_error)) if np.isfinite(self.vertex_error).any() else float("nan"),
            "rotation_degrees": float(np.nanmean(self.rotation_error)) if np.isfinite(self.rotation_error).any() else float("nan"),
            "solve_failures": int(self.failed.sum()),
            "mean_face_vertex_median_mm": (float(np.median(self.mean_face_vertex_error))
                                           if self.mean_face_vertex_error is not None else float("nan")),
        }

    def records(self) -> list[dict]:
        """One JSON-able dict per face (seed, roll and every error)."""
        return [
            {"roll_range": self.roll_range, "seed": int(self.seeds[k]), "roll": float(self.roll[k]),
             "fitted_error": float(self.fitted_error[k]), "direct_error": float(self.direct_error[k]),
             "vertex_error_mm": None if not np.isfinite(self.vertex_error[k]) else float(self.vertex_error[k]),
             "rotation_error_degrees": None if not np.isfinite(self.rotation_error[k]) else float(self.rotation_error[k]),
             "failed": bool(self.failed[k]),
             **({} if self.mean_face_vertex_error is None
                else {"mean_face_vertex_error_mm": float(self.mean_face_vertex_error[k])})}
            for k in range(len(self.seeds))
        ]


def _reconstruct(reconstructor, uv_model: UVMorphableModel, faces, config):
    from lsqface.reconstruct import ReconstructConfig, reconstruct_from_maps

    if isinstance(reconstructor, str) and reconstructor == ORACLE:
        size = faces.image.shape[-1]
        return reconstruct_from_maps(uv_model, faces.image, faces.correspondence, faces.depth, faces.confidence,
                                     config=config if config is not None else ReconstructConfig(input_size=size))
    images = [image.permute(1, 2, 0).numpy() for image in faces.image]
    return reconstructor(images)


def _select(faces, index: int):
    """Face ``index`` of a SyntheticFaces batch, as a batch of one."""
    values = {}
    for item in dataclasses.fields(faces):
        value = getattr(faces, item.name)
        values[item.name] = value[index:index + 1]
    return type(faces)(**values)


def _measure(reconstructor, uv_model, faces, config, target_uv, threshold):
    """(fitted, direct, vertex, rotation, failed) tensors (B,) of one batch; a failed solve is retried face by face."""
    truth = faces.landmarks_5.to(torch.float64)
    number = truth.shape[0]
    try:
        result = _reconstruct(reconstructor, uv_model, faces, config)
    except SolverError:
        if number > 1:
            parts = [_measure(reconstructor, uv_model, _select(faces, k), config, target_uv, threshold) for k in range(number)]
            return tuple(torch.cat([part[i] for part in parts]) for i in range(5))
        nan = torch.full((1,), float("nan"), dtype=torch.float64)
        return nan, nan.clone(), nan.clone(), nan.clone(), torch.ones(1, dtype=torch.bool)
    fitted = landmark_error(result.landmarks_5.detach().cpu().to(torch.float64), truth)
    direct = landmark_error(direct_landmarks(result.correspondence, result.confidence, target_uv, result.to_network,
                                             threshold), truth)
    vertices = vertex_error(result.vertices.detach().cpu().to(torch.float64), faces.vertices.to(torch.float64))
    rotation = rotation_error_degrees(result.rotation.detach().cpu().to(torch.float64), faces.rotation)
    return fitted, direct, vertices, rotation, torch.zeros(number, dtype=torch.bool)


def evaluate_synthetic(reconstructor, uv_model: UVMorphableModel, ranges: Sequence[float] = DEFAULT_RANGES,
                       count: int = 100, size: int = 128, batch_size: int = 8, threshold: float = 0.5,
                       base: SyntheticConfig | None = None, oracle_config=None,
                       progress: Callable | None = None, first: int = 0, look: str = "mask") -> list[SyntheticResults]:
    """Reconstruct ``count`` evaluation faces at each in-plane rotation range and measure every error.

    Args:
        reconstructor: a :class:`lsqface.reconstruct.Reconstructor`, or :data:`ORACLE` for the true maps.
        uv_model: the UV-3DMM the faces are drawn from (the reconstructor's).
        ranges: in-plane rotation ranges r, degrees.
        count: faces per range.
        size: side of the rendered faces, pixels (the reconstructor frames them to its input).
        batch_size: faces per forward pass.
        threshold: confidence threshold of the direct landmarks.
        base: the generator's other settings (default: its defaults at ``size``).
        oracle_config: the oracle's ReconstructConfig (default: input size ``size``, default solver).
        progress: optional wrapper of the batch iterator (e.g. tqdm).
        first: the faces are evaluation faces ``first`` .. ``first + count - 1``
            (:data:`VALIDATION_OFFSET` for the validation faces settings are tuned on).
        look: "mask", "photo" or "other" (:data:`LOOKS`, the module notes).

    Returns:
        One :class:`SyntheticResults` per range, in the order of ``ranges``.
    """
    if look not in LOOKS:
        from lsqface.errors import ConfigError

        raise ConfigError(f"Unknown synthetic look {look!r}; use one of {', '.join(LOOKS)}.")
    base = SyntheticConfig(size=size) if base is None else dataclasses.replace(base, size=size)
    draw = (lambda seeds, config: generate_faces(uv_model, seeds, config)) if look == "mask" else _PhotoFaces(uv_model, look)
    target_uv = landmark_uv(uv_model)
    mean_shape = torch.as_tensor(uv_model.model.shape_mean, dtype=torch.float64)
    results = []
    for roll_range in ranges:
        config = dataclasses.replace(base, roll_range=float(roll_range))
        parts: dict[str, list] = {key: [] for key in ("seeds", "roll", "fitted", "direct", "vertex", "rotation", "failed",
                                                      "mean_face")}
        starts = range(0, count, batch_size)
        for start in (progress(starts) if progress is not None else starts):
            seeds = evaluation_seeds(min(batch_size, count - start), first + start)
            faces = draw(seeds, config)
            fitted, direct, vertices, rotation, failed = _measure(reconstructor, uv_model, faces, oracle_config,
                                                                  target_uv, threshold)
            parts["seeds"].append(np.asarray(seeds))
            parts["roll"].append(faces.pose[:, 2].numpy())
            parts["fitted"].append(fitted.numpy())
            parts["direct"].append(direct.numpy())
            parts["vertex"].append(vertices.numpy())
            parts["rotation"].append(rotation.numpy())
            parts["failed"].append(failed.numpy())
            truth = faces.vertices.to(torch.float64)
            parts["mean_face"].append(vertex_error(mean_shape.expand_as(truth), truth).numpy())
        joined = {key: np.concatenate(value) if value else np.zeros(0) for key, value in parts.items()}
        results.append(SyntheticResults(
            roll_range=float(roll_range), seeds=joined["seeds"].astype(np.int64), roll=joined["roll"],
            fitted_error=np.where(np.isfinite(joined["fitted"]), joined["fitted"], FAILED_ERROR),
            direct_error=np.where(np.isfinite(joined["direct"]), joined["direct"], FAILED_ERROR),
            vertex_error=joined["vertex"], rotation_error=joined["rotation"], failed=joined["failed"].astype(bool),
            mean_face_vertex_error=joined["mean_face"],
        ))
    return results
