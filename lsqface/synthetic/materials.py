"""What each vertex of the head is made of, per face: skin tone, lips, brows, stubble, hair, eyes, mouth.

Colours are albedos in [0, 1]. Everything random is drawn from one
``torch.Generator`` per face, so a face is a deterministic function of its seed.

- Skin: the fitted model's albedo on the fitted region, scaled to a skin tone
  drawn across the range of human skin (:data:`SKIN_TONES`, from very dark to very
  light), and carried smoothly over the rest of the head by a harmonic extension
  of the fitted region's edge colours (no seam where the fitted region ends: a
  seam would tell the network where to stop).
- Lips, eyebrows, stubble and beards, make-up: per-vertex weights on the neutral
  head (:class:`HeadRegions`), blended with colours drawn per face.
- Hair: every scalp vertex above a random hairline (receding, high, low), in a
  hair colour drawn from black to blond, red and grey, pushed outwards by a
  random volume along the normals.
- Eyes: sclera, an iris of random colour and radius, a pupil. Mouth socket, gums,
  tongue and teeth their own colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from lsqface.synthetic.head import EYEBALL, EYE_SOCKET, EYELASH, FACE, FITTED_VERTEX_COUNT, GUMS, MOUTH, SKIN, TEETH, HeadModel

#: Skin albedos (linear RGB) from very dark to very light, after measured skin reflectance ranges
#: (Fitzpatrick I-VI); a face's tone is a random blend of two neighbours, jittered.
SKIN_TONES = torch.tensor([
    [0.10, 0.06, 0.04], [0.18, 0.10, 0.06], [0.30, 0.17, 0.10], [0.42, 0.26, 0.17],
    [0.55, 0.36, 0.25], [0.66, 0.46, 0.35], [0.75, 0.56, 0.45], [0.82, 0.64, 0.55],
])
#: Hair albedos: black, dark brown, brown, auburn, red, dark blond, blond, grey, white.
HAIR_COLOURS = torch.tensor([
    [0.02, 0.02, 0.02], [0.06, 0.04, 0.03], [0.14, 0.08, 0.05], [0.22, 0.09, 0.04], [0.38, 0.13, 0.05],
    [0.35, 0.25, 0.14], [0.60, 0.48, 0.30], [0.45, 0.45, 0.45], [0.80, 0.80, 0.78],
])
IRIS_COLOURS = torch.tensor([
    [0.10, 0.05, 0.02], [0.20, 0.11, 0.04], [0.25, 0.30, 0.15], [0.20, 0.35, 0.50], [0.35, 0.38, 0.40],
])


def _smooth_step(value: torch.Tensor, width: float) -> torch.Tensor:
    return torch.sigmoid(value / max(width, 1e-6))


@dataclass(frozen=True)
class HeadRegions:
    """Fixed per-vertex geometry of the neutral head that materials are painted by.

    Attributes:
        extension: (V_skin, N_edge) weights carrying the fitted region's edge colours over the
            rest of the skin (harmonic extension); rows sum to 1.
        skin_index: (V_skin,) head vertex indices of that skin; edge_index: (N_edge,) fitted vertices.
        lips: (V,) in [0, 1], 1 inside the outer lip contour.
        brows: (V,) in [0, 1], 1 on the eyebrows.
        beard: (V,) in [0, 1], 1 on the chin, jaw and upper lip where a beard grows.
        cheeks: (V,) in [0, 1], on the cheekbones (blush).
        eyelids: (V,) in [0, 1], just above the eyes (eye shadow).
        iris_cosine: (V,) cosine between an eyeball vertex's direction from its centre and forward (+z).
        position: (V, 3) the neutral head.
    """

    extension: torch.Tensor
    skin_index: torch.Tensor
    edge_index: torch.Tensor
    lips: torch.Tensor
    brows: torch.Tensor
    beard: torch.Tensor
    cheeks: torch.Tensor
    eyelids: torch.Tensor
    iris_cosine: torch.Tensor
    position: torch.Tensor


def _polyline_distance(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """Distance (P,) of 2D points (P, 2) to a 2D polyline (K, 2)."""
    best = np.full(len(points), np.inf)
    for start, end in zip(polyline[:-1], polyline[1:]):
        direction = end - start
        t = np.clip(((points - start) @ direction) / max(direction @ direction, 1e-12), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - (start + t[:, None] * direction), axis=1))
    return best


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path as PolygonPath

    return PolygonPath(polygon).contains_points(points)


def _harmonic_extension(head: HeadModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights that carry colours from the fitted region's edge over the rest of the skin.

    Solves the graph Laplace equation on the skin (the face area and the head and neck,
    coincident vertices merged) with the fitted vertices fixed: each unknown colour is the
    mean of its neighbours', so the result is smooth and meets the fitted region without a seam.
    """
    skin = np.nonzero((head.part == FACE) | (head.part == SKIN))[0]
    position = head.shape_mean[skin].astype(np.float64)
    # Merge coincident vertices (the head and neck meets the face area at duplicated vertices).
    _, representative = np.unique(np.round(position * 100).astype(np.int64), axis=0, return_inverse=True)
    representative = representative.reshape(-1)
    local = -np.ones(head.n_vertices, dtype=np.int64)
    local[skin] = representative
    triangles = head.triangles[(local[head.triangles] >= 0).all(axis=1)]
    edges = np.concatenate([local[triangles[:, [a, b]]] for a, b in ((0, 1), (1, 2), (2, 0))])
    count = int(representative.max()) + 1
    adjacency = scipy.sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(count, count)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64)
    laplacian = scipy.sparse.diags(np.asarray(adjacency.sum(axis=1)).ravel()) - adjacency
    fixed = np.zeros(count, dtype=bool)
    fixed[representative[skin < FITTED_VERTEX_COUNT]] = True
    free = np.nonzero(~fixed)[0]
    known = np.nonzero(fixed)[0]
    coupling = laplacian[free][:, known]
    edge = np.nonzero(np.asarray(abs(coupling).sum(axis=0)).ravel() > 0)[0]
    system = laplacian[free][:, free] + 1e-6 * scipy.sparse.identity(len(free))
    weights = scipy.sparse.linalg.splu(system.tocsc()).solve(-coupling[:, edge].toarray())
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    # Back from merged to head vertices: each free skin vertex takes its representative's row.
    row_of = -np.ones(count, dtype=np.int64)
    row_of[free] = np.arange(len(free))
    outside = skin[skin >= FITTED_VERTEX_COUNT]
    rows = row_of[representative[skin >= FITTED_VERTEX_COUNT]]
    # A vertex merged with a fitted one takes that fitted vertex's colour directly.
    merged_fixed = rows < 0
    edge_vertices = np.full(count, -1, dtype=np.int64)
    edge_vertices[representative[skin < FITTED_VERTEX_COUNT]] = skin[skin < FITTED_VERTEX_COUNT]
    edge_index = edge_vertices[known[edge]]
    result = np.zeros((len(outside), len(edge)))
    result[~merged_fixed] = weights[rows[~merged_fixed]]
    if merged_fixed.any():
        column = {int(v): k for k, v in enumerate(edge_index)}
        for i in np.nonzero(merged_fixed)[0]:
            vertex = edge_vertices[representative[outside[i]]]
            if int(vertex) in column:
                result[i, column[int(vertex)]] = 1.0
            else:
                result[i] = 1.0 / len(edge)
    return result, outside, edge_index


def head_regions(head: HeadModel, landmarks_68: np.ndarray) -> HeadRegions:
    """The fixed painting regions of a head (about a second; compute once and reuse).

    Args:
        head: the opaque head.
        landmarks_68: (68,) the Multi-PIE landmark vertices the regions are drawn from (the generator
            passes ICT's own, :data:`lsqface.morphable.ict.ICT_LANDMARKS_68`).
    """
    position = head.shape_mean.astype(np.float64)
    xy = position[:, :2]
    marks = position[np.asarray(landmarks_68)]
    front = head.normals[:, 2] > -0.2
    on_face = (head.part == FACE) | (head.part == SKIN)

    lips = np.where(on_face & front & _inside(xy, marks[48:60, :2]), 1.0, 0.0)
    lip_edge = _polyline_distance(xy, np.vstack([marks[48:60, :2], marks[48:49, :2]]))
    lips = np.maximum(lips, np.exp(-(lip_edge / 1.2) ** 2) * (on_face & front))
    brow_distance = np.minimum(_polyline_distance(xy, marks[17:22, :2] + [0, 2.0]),
                               _polyline_distance(xy, marks[22:27, :2] + [0, 2.0]))
    brows = np.exp(-(brow_distance / 4.5) ** 4) * (on_face & front & (position[:, 2] > marks[17:27, 2].min() - 15))
    mouth_y = marks[48:68, 1].mean()
    nose_bottom = marks[33, 1]
    jaw = on_face & (position[:, 1] < mouth_y + 4) & (position[:, 2] > -10)
    moustache = on_face & front & (position[:, 1] < nose_bottom - 2) & (position[:, 1] > marks[51, 1]) \
        & (np.abs(position[:, 0]) < abs(marks[54, 0] - marks[48, 0]) * 0.7)
    beard = np.where((jaw | moustache) & (lips < 0.5), 1.0, 0.0)
    cheek_centres = np.stack([marks[[1, 31], :2].mean(axis=0), marks[[15, 35], :2].mean(axis=0)])
    cheek_distance = np.min(np.linalg.norm(xy[:, None] - cheek_centres[None], axis=2), axis=1)
    cheeks = np.exp(-(cheek_distance / 14.0) ** 2) * (on_face & front)
    lid_distance = np.minimum(_polyline_distance(xy, marks[36:40, :2] + [0, 4.0]),
                              _polyline_distance(xy, marks[42:46, :2] + [0, 4.0]))
    eyelids = np.exp(-(lid_distance / 4.0) ** 2) * (on_face & front)

    iris_cosine = np.zeros(head.n_vertices)
    for k, (start, end) in enumerate(((21451, 23021), (23021, 24591))):
        direction = position[start:end] - head.eyeball_centre[k]
        iris_cosine[start:end] = direction[:, 2] / np.maximum(np.linalg.norm(direction, axis=1), 1e-9)

    extension, skin_index, edge_index = _harmonic_extension(head)
    as_tensor = lambda array, dtype=torch.float32: torch.as_tensor(np.asarray(array), dtype=dtype)  # noqa: E731
    return HeadRegions(
        extension=as_tensor(extension), skin_index=as_tensor(skin_index, torch.int64), edge_index=as_tensor(edge_index, torch.int64),
        lips=as_tensor(lips), brows=as_tensor(brows), beard=as_tensor(beard), cheeks=as_tensor(cheeks),
        eyelids=as_tensor(eyelids), iris_cosine=as_tensor(iris_cosine), position=as_tensor(position),
    )


def _pick(table: torch.Tensor, generator: torch.Generator, jitter: float) -> torch.Tensor:
    """A random blend of two neighbouring rows of a colour table, jittered per channel."""
    position = float(torch.rand((), generator=generator)) * (len(table) - 1)
    low = int(position)
    high = min(low + 1, len(table) - 1)
    colour = table[low] + (position - low) * (table[high] - table[low])
    return (colour * (1.0 + jitter * torch.randn(3, generator=generator))).clamp(0.0, 1.0)


@dataclass(frozen=True)
class FaceLook:
    """What one face's head is painted with (all colours albedo RGB).

    Attributes:
        vertex_colour: (V, 3) albedo of every head vertex.
        hair_weight: (V,) 1 where the scalp carries hair (for the volume and the strand texture).
        hair_colour: (3,); skin_colour: (3,).
        hair_volume: how far hair stands off the scalp, mm.
    """

    vertex_colour: torch.Tensor
    hair_weight: torch.Tensor
    hair_colour: torch.Tensor
    skin_colour: torch.Tensor
    hair_volume: float


def paint_head(head: HeadModel, regions: HeadRegions, fitted_albedo: torch.Tensor, generator: torch.Generator,
               realism: float = 1.0) -> FaceLook:
    """Per-vertex colours of one face.

    Args:
        head: the opaque head; regions: its painting regions.
        fitted_albedo: (V_fit, 3) the fitted model's albedo of this face (its albedo coefficients).
        generator: this face's random stream.
        realism: probability scale of the photographic details (hair, brows, lips, beards, make-up); 0 paints
            bare skin everywhere.
    """
    def chance(p: float) -> bool:
        return float(torch.rand((), generator=generator)) < p * realism

    part = torch.as_tensor(head.part)
    position = regions.position.float()
    skin_colour = _pick(SKIN_TONES, generator, 0.08)
    # Scale the model's albedo so its mean is this skin tone: the model's variations stay, its tone is replaced.
    # The model's per-channel variations are strong (it spans mixed skin colours): keep half its brightness
    # variation and a tenth of its colour variation around this face's tone.
    deviation = fitted_albedo / fitted_albedo.mean(dim=0).clamp_min(1e-3) - 1.0
    brightness = deviation.mean(dim=1, keepdim=True)
    fitted = (skin_colour * (1.0 + 0.5 * brightness + 0.1 * (deviation - brightness))).clamp(0.0, 1.0)
    colour = torch.zeros(head.n_vertices, 3)
    colour[:FITTED_VERTEX_COUNT] = fitted
    colour[regions.skin_index] = regions.extension @ fitted[regions.edge_index]

    hair_colour = _pick(HAIR_COLOURS, generator, 0.15)
    brow_colour = hair_colour if chance(0.7) else _pick(HAIR_COLOURS[:4], generator, 0.1)
    if chance(0.9):
        strength = 0.6 + 0.4 * float(torch.rand((), generator=generator))
        weight = (regions.brows * strength)[:, None]
        colour = colour * (1 - weight) + brow_colour * weight
    lip_tint = torch.tensor([0.75, 0.45, 0.45]) * (1.0 + 0.1 * torch.randn(3, generator=generator))
    if chance(0.3):  # lipstick
        lip_tint = torch.tensor([0.9, 0.2, 0.25]) * (0.5 + 0.6 * torch.rand(3, generator=generator))
        colour = colour * (1 - regions.lips[:, None] * 0.8) + lip_tint * skin_colour.max() * regions.lips[:, None] * 0.8
    elif realism > 0:  # natural lips, redder than the skin
        colour = colour * (1 - regions.lips[:, None] * (1 - lip_tint))
    if chance(0.25):  # blush and eye shadow
        colour = colour * (1 - 0.25 * regions.cheeks[:, None] * torch.tensor([0.0, 0.6, 0.5]))
        shadow = torch.rand(3, generator=generator) * 0.5
        colour = colour * (1 - 0.6 * regions.eyelids[:, None]) + shadow * 0.6 * regions.eyelids[:, None]
    if chance(0.25):  # stubble or a beard: darker, hair-coloured
        density = 0.3 + 0.7 * float(torch.rand((), generator=generator))
        weight = regions.beard[:, None] * density
        colour = colour * (1 - weight) + hair_colour * weight

    # Scalp hair above a hairline that runs from the forehead down to the nape behind the ears.
    hair_weight = torch.zeros(head.n_vertices)
    volume = 0.0
    if chance(0.92):
        front = 92.0 + 26.0 * float(torch.rand((), generator=generator))
        if chance(0.15):  # receding or bald crown
            front += 15.0 + 30.0 * float(torch.rand((), generator=generator))
        slope = 0.8 + 0.8 * float(torch.rand((), generator=generator))
        behind = (20.0 - position[:, 2]).clamp_min(0.0)
        hairline = front - slope * behind
        ears = (position[:, 0].abs() > 62.0) & (position[:, 1] < 70.0) & (position[:, 2] > -40.0)
        ragged = 3.0 * torch.sin(position[:, 0] * 0.3 + 6.0 * float(torch.rand((), generator=generator)))
        hair_weight = _smooth_step(position[:, 1] - hairline + ragged, 2.0) * ((part == SKIN) & ~ears).float()
        hair_weight = hair_weight * (position[:, 1] > -60).float()
        colour = colour * (1 - hair_weight[:, None]) + hair_colour * hair_weight[:, None]
        volume = 25.0 * float(torch.rand((), generator=generator)) ** 1.5

    sclera = torch.tensor([0.80, 0.76, 0.72]) * (0.85 + 0.15 * float(torch.rand((), generator=generator)))
    iris = _pick(IRIS_COLOURS, generator, 0.1)
    iris_edge = 0.88 + 0.04 * float(torch.rand((), generator=generator))
    cosine = regions.iris_cosine
    eye = torch.where((cosine > iris_edge)[:, None], iris, sclera)
    eye = torch.where((cosine > 0.975)[:, None], torch.tensor([0.01, 0.01, 0.01]), eye)
    colour = torch.where((part == EYEBALL)[:, None], eye, colour)
    fixed = {
        MOUTH: torch.tensor([0.20, 0.05, 0.05]), EYE_SOCKET: skin_colour * torch.tensor([0.9, 0.6, 0.6]),
        GUMS: torch.tensor([0.55, 0.20, 0.22]), TEETH: torch.tensor([0.80, 0.76, 0.66]),
        EYELASH: hair_colour * 0.4,
    }
    for code, value in fixed.items():
        scaled = (value * (1.0 + 0.1 * torch.randn(3, generator=generator))).clamp(0.0, 1.0)
        colour = torch.where((part == code)[:, None], scaled, colour)
    return FaceLook(vertex_colour=colour.clamp(0.0, 1.0), hair_weight=hair_weight, hair_colour=hair_colour,
                    skin_colour=skin_colour, hair_volume=volume)
