"""Does a fit describe a face? Measures of a least-squares fit and the status they give.

The layer always returns a mesh, even from maps that show no face (a grey wall, a
landscape, a face the network misreads). Then the mesh is not a face: part of it may lie
behind the camera, its triangles may be stretched a hundredfold, or it may be a normal
face far smaller than the picture. These measures tell such fits apart from faces, each
a plain function of the fit, the maps and the 3DMM (B faces, all (B,) float64):

* ``confident_fraction``: share of the network's input pixels with geometric confidence
  over one half: how much face the network sees.
* ``residual_mm``: the confidence-weighted median norm of the geometric residuals
  ``P d x + q - a - B m`` of the final solve, model millimetres: how well one face
  explains the maps.
* ``nearest_depth``: the nearest vertex's camera z in mean-face widths (negative: behind
  the camera).
* ``distance``: the distance from the camera to the front of the face,
  ``(z_centroid - d) / W``, in mean-face widths (W, d from ``MorphableModel.framing``).
* ``face_size``: the width of the mean face at the fitted distance, projected with the
  fitted focal length, over the network input's side: ``f W / ((z_centroid - d) S)``
  (the re-framing of :func:`lsqface.reconstruct.refine_boxes` aims at the checkpoint's ``refine_fraction``, 0.78 in the shipped file).
* ``centre_offset``: the projected centroid's distance from the input's centre, over S.
* ``identity_rms``, ``expression_rms``: root mean square of the identity and expression
  coefficients, in units of the prior's standard deviation (the prior draws 1).
* ``stretch``: the 99th percentile over the mesh's edges of ``|log(l / l_mean)|``, edge
  length l of the fitted shape against the mean face's (rigid motion leaves it 0).
* ``mirrored``: 1 where the camera mirrors the image (k1 < 0, :mod:`lsqface.solver.camera`).

:func:`fit_status` turns them into ``ok``, ``low_confidence`` (the network sees little
face; the fit is then rarely one) or ``implausible`` (the geometry is not a face), with
a reason naming each failed check. The thresholds (:class:`StatusThresholds`) were chosen
from the measures' distributions on validation faces and real photos (docs/solver.md,
"Fit status"; docs/scripts/fit_status.py measures them).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import torch

from lsqface.morphable.uv_model import UVMorphableModel, sample_mask
from lsqface.solver.fit import LeastSquaresFit, weighted_median
from lsqface.solver.sampling import gather_map

__all__ = ["STATUSES", "FitMeasures", "FitStatus", "StatusThresholds", "fit_measures", "fit_status", "mesh_edges"]

#: Every status a fit can have, from good to bad.
STATUSES = ("ok", "low_confidence", "implausible")


@dataclass(frozen=True)
class StatusThresholds:
    """Where a fit stops being ``ok``; each bound applies to the measure of the same name.

    Chosen from measurements with the shipped model and its stored solver settings (docs/solver.md,
    "Fit status"; docs/scripts/fit_status.py): the 1,778 pictures of the real-photo benchmark's
    validation split (1,466 good fits, landmark error under 10 %; 91 more than 20 % off), 200
    synthetic validation faces, 120 harder ones and 44 pictures without a face; each bound flags at
    least 90 % of the fits more than 20 % off in every set and at most 5 % of the good ones; the
    coefficient and stretch bounds lie outside what the 3DMM's own prior draws (true faces).

    Attributes:
        min_confident_fraction: under it the status is ``low_confidence``. Good fits: 0.21 and
            up; pictures without a face: median 0.10.
        max_residual_mm: the largest weighted median residual, model millimetres. It grows with
            the solver's prior (the fit then follows the maps less): with the shipped settings
            (1,000 samples, shape weight 400, re-framed at 0.78) good fits of real photos are 3.2
            to 5.5 (1st to 99th percentile), fits more than 20 % off 5.5 to 12.7 (median 8.3); a checkpoint
            with a weaker prior wants a lower bound (4.0 suits 2,000 samples and weight 100).
        min_nearest_depth: the nearest vertex's least distance in front of the camera, mean-face
            widths. Good fits: 1.37 and up.
        distance: (least, largest) camera distance to the front of the face, mean-face widths.
            Good fits: 1.27 to 3.3; true synthetic faces 1.8 to 8.4; a telephoto portrait about 20.
        face_size: (least, largest) projected mean-face width over the input's side. Good fits
            (re-framed at 0.78): 0.71 to 0.83 (1st to 99th percentile); training faces 0.45 to 0.75.
        max_centre_offset: the farthest the face's centre may lie from the input's centre, input
            sides. Good fits: at most 0.24.
        max_identity_rms, max_expression_rms: the largest coefficient RMS, prior standard
            deviations. Good fits: at most 0.7; the prior's own draws 0.8 to 1.2.
        max_stretch: the largest 99th-percentile |log| edge-length ratio to the mean face. Good
            fits: at most 0.92; true faces up to 2.0 (the expression prior at full strength).
        allow_mirrored: whether a mirrored camera is a face (no good fit is mirrored).
    """

    min_confident_fraction: float = 0.1
    max_residual_mm: float = 5.5
    min_nearest_depth: float = 0.5
    distance: tuple[float, float] = (1.0, 30.0)
    face_size: tuple[float, float] = (0.2, 1.3)
    max_centre_offset: float = 0.3
    max_identity_rms: float = 2.0
    max_expression_rms: float = 2.0
    max_stretch: float = 2.5
    allow_mirrored: bool = False


class FitStatus(NamedTuple):
    """One fit's verdict: ``status`` (one of :data:`STATUSES`), ``reason`` ("" when ``ok``), and
    ``face_like``: whether every geometric check passed (an ``ok`` fit, or a ``low_confidence`` one
    whose mesh is still shaped and placed like a face), so its mesh is worth drawing."""

    status: str
    reason: str
    face_like: bool


@dataclass(frozen=True)
class FitMeasures:
    """The plausibility measures of B fits (see the module docstring), each (B,) float64 on the CPU."""

    confident_fraction: torch.Tensor
    residual_mm: torch.Tensor
    nearest_depth: torch.Tensor
    distance: torch.Tensor
    face_size: torch.Tensor
    centre_offset: torch.Tensor
    identity_rms: torch.Tensor
    expression_rms: torch.Tensor
    stretch: torch.Tensor
    mirrored: torch.Tensor

    def __len__(self) -> int:
        return int(self.confident_fraction.shape[0])

    def record(self, index: int) -> dict[str, float]:
        """Face ``index``'s measures as a JSON-ready dict (name -> float; NaN and inf as None)."""
        values = {}
        for item in fields(self):
            value = float(getattr(self, item.name)[index])
            values[item.name] = value if np.isfinite(value) else None
        return values


_EDGES: dict = {}


def mesh_edges(triangles: torch.Tensor) -> torch.Tensor:
    """(E, 2) int64 unique edges (lower index first) of a (F, 3) triangle list (cached per mesh)."""
    key = (triangles.data_ptr(), tuple(triangles.shape), str(triangles.device))
    cached = _EDGES.get(key)
    if cached is not None:
        return cached
    pairs = torch.cat([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]).to(torch.int64)
    edges = torch.unique(torch.sort(pairs, dim=1).values, dim=0)
    if len(_EDGES) > 8:
        _EDGES.clear()
    _EDGES[key] = edges
    return edges


def upper_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q, dim=1)`` (linear interpolation) for q near 1, bit for bit: (B, n) -> (B,).

    Only the values above the quantile's lower neighbour are selected (``topk``), not the whole row
    sorted: 8x faster for the 99th percentile of a face's 20,000 edges.
    """
    count = values.shape[1]
    rank = q * (count - 1)
    below = int(rank // 1)
    top = torch.topk(values, count - below, dim=1).values  # descending: the last is the value at rank ``below``
    above = top[:, -2] if count - below > 1 else top[:, -1]
    return torch.lerp(top[:, -1], above, torch.tensor(rank - below, dtype=values.dtype, device=values.device))


@torch.no_grad()
def fit_measures(uv_model: UVMorphableModel, fit: LeastSquaresFit, confidence: torch.Tensor,
                 vertices: torch.Tensor) -> FitMeasures:
    """The plausibility measures of B fits.

    Args:
        uv_model: the UV-3DMM the fit used.
        fit: the least-squares layer's output, in the network's S x S pixel frame.
        confidence: (B, 2, S, S) or (B, 1, S, S) the confidence maps the fit used.
        vertices: (B, V, 3) the fitted mesh in camera space, millimetres (shape posed by R, t).

    Returns:
        FitMeasures of (B,) float64 CPU tensors; a non-finite fit gives NaN or inf measures,
        which every check of :func:`fit_status` fails.
    """
    dtype = torch.float64
    model = uv_model.model
    _, face_width, front_depth = model.framing()
    size = float(confidence.shape[-1])
    vertices = vertices.detach().cpu().to(dtype)
    triangles = torch.as_tensor(model.triangles, dtype=torch.int64)

    geometric = confidence[:, :1].detach()
    uv = fit.correspondence.detach().to(uv_model.shape_images.dtype)
    confidence_weights = (gather_map(geometric, fit.samples)[..., 0] * sample_mask(uv_model, uv)).cpu().to(dtype)
    norms = fit.geometric_residuals.detach().cpu().to(dtype).norm(dim=-1)
    residual = weighted_median(norms, confidence_weights)

    centroid = vertices.mean(dim=1)
    intrinsics = fit.intrinsics.detach().cpu().to(dtype)
    distance = (centroid[:, 2] - front_depth) / face_width
    focal = torch.linalg.det(intrinsics[:, :2, :2]).abs().sqrt()
    face_size = focal / (distance * size)
    projected = (centroid[:, None, :] @ intrinsics.transpose(1, 2))[:, 0]
    centre = projected[:, :2] / projected[:, 2:3]
    centre_offset = (centre - 0.5 * size).norm(dim=-1) / size

    identity = fit.identity_coefficients.detach().cpu().to(dtype)
    expression = fit.expression_coefficients.detach().cpu().to(dtype)
    edges = mesh_edges(triangles)
    mean = torch.as_tensor(model.shape_mean, dtype=dtype)
    mean_length = (mean[edges[:, 0]] - mean[edges[:, 1]]).norm(dim=-1).clamp_min(1e-9)
    length = (vertices[:, edges[:, 0]] - vertices[:, edges[:, 1]]).norm(dim=-1)
    log_ratio = (length.clamp_min(1e-9) / mean_length).log().abs()
    stretch = upper_quantile(log_ratio.nan_to_num(float("inf")), 0.99)

    return FitMeasures(
        confident_fraction=(confidence[:, 0] > 0.5).flatten(1).to(dtype).mean(dim=1).cpu(),
        residual_mm=residual,
        nearest_depth=vertices[..., 2].amin(dim=1) / face_width,
        distance=distance,
        face_size=face_size,
        centre_offset=centre_offset,
        identity_rms=identity.square().mean(dim=1).sqrt(),
        expression_rms=expression.square().mean(dim=1).sqrt(),
        stretch=stretch,
        mirrored=(intrinsics[:, 0, 0] < 0).to(dtype),
    )


def _outside(value: float, low: float, high: float) -> bool:
    # Written so that NaN fails: a non-finite measure is never inside a range.
    return not (low <= value <= high)


def fit_status(measures: FitMeasures, thresholds: StatusThresholds = StatusThresholds()) -> list[FitStatus]:
    """The FitStatus of each fit: ``ok`` with an empty reason, ``low_confidence`` or ``implausible``.

    ``low_confidence`` comes first (under ``min_confident_fraction`` the network sees little
    face, which is the more useful thing to tell); the reason then also names the failed
    geometric checks. ``implausible``: any geometric check fails. The reason is a short
    phrase per failed check, joined by "; ".
    """
    results = []
    for k in range(len(measures)):
        value = {item.name: float(getattr(measures, item.name)[k]) for item in fields(measures)}
        geometry = []
        if value["nearest_depth"] < thresholds.min_nearest_depth or not np.isfinite(value["nearest_depth"]):
            where = "behind" if value["nearest_depth"] <= 0 else "too near"
            geometry.append(f"part of the mesh is {where} the camera")
        if _outside(value["distance"], *thresholds.distance):
            geometry.append(f"camera distance {value['distance']:.2g} face widths")
        if _outside(value["face_size"], *thresholds.face_size):
            geometry.append(f"face {value['face_size']:.2g} times the input's size")
        if _outside(value["centre_offset"], 0.0, thresholds.max_centre_offset):
            geometry.append("face centre outside the input")
        if _outside(value["identity_rms"], 0.0, thresholds.max_identity_rms) or \
                _outside(value["expression_rms"], 0.0, thresholds.max_expression_rms):
            geometry.append(f"shape coefficients {max(value['identity_rms'], value['expression_rms']):.2g} "
                            "prior deviations")
        if _outside(value["stretch"], 0.0, thresholds.max_stretch):
            geometry.append(f"edges stretched {np.exp(min(value['stretch'], 50.0)):.2g} times the mean face's")
        if _outside(value["residual_mm"], 0.0, thresholds.max_residual_mm):
            geometry.append(f"residual {value['residual_mm']:.2g} mm")
        if value["mirrored"] > 0 and not thresholds.allow_mirrored:
            geometry.append("mirrored camera")
        if _outside(value["confident_fraction"], thresholds.min_confident_fraction, 1.0):
            phrase = f"the network is confident on {100 * value['confident_fraction']:.1f} % of its input"
            results.append(FitStatus("low_confidence", "; ".join([phrase] + geometry), not geometry))
        elif geometry:
            results.append(FitStatus("implausible", "; ".join(geometry), False))
        else:
            results.append(FitStatus("ok", "", True))
    return results
