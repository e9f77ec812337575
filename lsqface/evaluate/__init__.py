"""Evaluation: landmark error, synthetic ground truth, identity, reports.

- :mod:`lsqface.evaluate.metrics`: the error measures (landmark, vertex, rotation).
- :mod:`lsqface.evaluate.landmarks`: direct and fitted 5 landmarks on annotated photos.
- :mod:`lsqface.evaluate.reference`: dlib's 68-point predictor as reference landmarks for photos without annotations.
- :mod:`lsqface.evaluate.real`: the real-photo benchmark (every face of fixed public photos at four rolls and random
  similarities, validation and test splits), scored beside the peers of :mod:`lsqface.evaluate.peers` (dlib, MediaPipe).
- :mod:`lsqface.evaluate.benchmark`: synthetic faces at chosen in-plane rotation ranges; the oracle.
- :mod:`lsqface.evaluate.identity`: face-recognition similarity of renderings and photos.
- :mod:`lsqface.evaluate.report`: the Markdown report, plots and JSON lines of ``lsqface evaluate``.
"""

from lsqface.evaluate.benchmark import DEFAULT_RANGES, EVALUATION_SEED_START, ORACLE, SyntheticResults, evaluate_synthetic
from lsqface.evaluate.identity import (
    cosine_similarity, dlib_descriptor, identity_distances, onnx_descriptor, pair_similarities, render_colour,
    rendering_similarity,
)
from lsqface.evaluate.landmarks import (
    LandmarkPredictions, direct_landmarks, evaluate_landmarks, landmark_uv, read_landmark_file, summarise,
)
from lsqface.evaluate.metrics import inter_ocular_distance, landmark_error, rotation_error_degrees, vertex_error
from lsqface.evaluate.reference import dlib_reference, five_from_sixty_eight
from lsqface.evaluate.report import run_evaluation, write_report

__all__ = [
    "DEFAULT_RANGES", "EVALUATION_SEED_START", "ORACLE", "SyntheticResults", "evaluate_synthetic",
    "cosine_similarity", "dlib_descriptor", "identity_distances", "onnx_descriptor", "pair_similarities",
    "render_colour", "rendering_similarity", "LandmarkPredictions", "direct_landmarks", "evaluate_landmarks",
    "landmark_uv", "read_landmark_file", "summarise", "inter_ocular_distance", "landmark_error",
    "rotation_error_degrees", "vertex_error", "run_evaluation", "write_report", "dlib_reference", "five_from_sixty_eight",
]
