"""Meshes around and in front of the head: shoulders and clothing, long hair, glasses, hats, masks, hands.

Each accessory is a fixed mesh topology whose vertices are placed per face in the
neutral head's frame (millimetres, ICT axes: x to the subject's left, y up, z
towards the viewer), so they are posed with the head by the same camera. An
accessory a face does not wear gets non-finite vertices, which the rasteriser
skips: every face of a batch has the same vertex and triangle counts.

Whatever an accessory covers is not the fitted face in the true maps: the
rasteriser's z-buffer decides, so glasses, hands and masks cut holes in the
face mask exactly where they are in front of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lsqface.synthetic.head import FITTED_VERTEX_COUNT, SKIN, HeadModel


def grid_triangles(rows: int, columns: int, wrap: bool = False) -> np.ndarray:
    """Triangles (2 (rows - 1) (columns - 1 or columns), 3) of a rows x columns vertex grid, row-major."""
    triangles = []
    last = columns if wrap else columns - 1
    for i in range(rows - 1):
        for j in range(last):
            a, b = i * columns + j, i * columns + (j + 1) % columns
            c, d = a + columns, b + columns
            triangles += [(a, c, b), (b, c, d)]
    return np.asarray(triangles, dtype=np.int64)


def ellipsoid(rows: int = 8, columns: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A unit sphere as a (rows x columns) latitude-longitude grid: vertices (V, 3), triangles (F, 3)."""
    latitude = np.linspace(0.02, math.pi - 0.02, rows)
    longitude = np.linspace(0.0, 2 * math.pi, columns, endpoint=False)
    lat, lon = np.meshgrid(latitude, longitude, indexing="ij")
    vertices = np.stack([np.sin(lat) * np.cos(lon), np.cos(lat), np.sin(lat) * np.sin(lon)], axis=-1).reshape(-1, 3)
    return vertices, grid_triangles(rows, columns, wrap=True)


@dataclass(frozen=True)
class AccessoryLayout:
    """The fixed topology of all accessories of one face, and where each one's vertices lie.

    Attributes:
        triangles: (F_acc, 3) indices into the accessory vertices (offset by the head's count when joined).
        slices: accessory name -> (start, end) vertex range.
        mask_source: (N_mask,) head vertices the face mask shell is offset from.
        hat_source: (N_hat,) head vertices the hat shell is offset from.
    """

    triangles: np.ndarray
    slices: dict[str, tuple[int, int]]
    mask_source: np.ndarray
    hat_source: np.ndarray

    @property
    def n_vertices(self) -> int:
        return max(end for _, end in self.slices.values())


TORSO_GRID = (12, 24)
CURTAIN_GRID = (10, 16)
RING_SEGMENTS = 20
BLOB_GRID = (7, 10)
BLOB_COUNT = 2


def _shell(head: HeadModel, vertices: np.ndarray) -> np.ndarray:
    """Triangles (F, 3) of the head whose corners are all in ``vertices``, renumbered into that list."""
    lookup = -np.ones(head.n_vertices, dtype=np.int64)
    lookup[vertices] = np.arange(len(vertices))
    triangles = lookup[head.triangles]
    return triangles[(triangles >= 0).all(axis=1)]


def accessory_layout(head: HeadModel, landmarks_68: np.ndarray) -> AccessoryLayout:
    """The accessories' topology for a head (compute once)."""
    position = head.shape_mean
    marks = position[np.asarray(landmarks_68)]
    nose_y = marks[29, 1]
    fitted = np.arange(FITTED_VERTEX_COUNT)
    skin = np.nonzero(head.part == SKIN)[0]
    mask_source = np.concatenate([fitted[position[fitted, 1] < nose_y], skin[(position[skin, 1] < nose_y) & (position[skin, 1] > -75)
                                                                            & (position[skin, 2] > 10)]])
    hat_source = np.nonzero(((head.part == SKIN) | (np.arange(head.n_vertices) < 9409)) & (position[:, 1] > 88))[0]
    parts: list[tuple[str, np.ndarray, int]] = []
    parts.append(("torso", grid_triangles(*TORSO_GRID, wrap=True), TORSO_GRID[0] * TORSO_GRID[1]))
    parts.append(("curtain", grid_triangles(*CURTAIN_GRID), CURTAIN_GRID[0] * CURTAIN_GRID[1]))
    ring = grid_triangles(2, RING_SEGMENTS, wrap=True)
    disc = np.asarray([(RING_SEGMENTS, j, (j + 1) % RING_SEGMENTS) for j in range(RING_SEGMENTS)], dtype=np.int64)
    parts += [("ring_left", ring, 2 * RING_SEGMENTS), ("ring_right", ring, 2 * RING_SEGMENTS)]
    parts += [("lens_left", disc, RING_SEGMENTS + 1), ("lens_right", disc, RING_SEGMENTS + 1)]
    bar = np.asarray([(0, 1, 2), (1, 3, 2)], dtype=np.int64)
    parts += [("bridge", bar, 4), ("temple_left", bar, 4), ("temple_right", bar, 4)]
    _, blob = ellipsoid(*BLOB_GRID)
    parts += [(f"blob{k}", blob, BLOB_GRID[0] * BLOB_GRID[1]) for k in range(BLOB_COUNT)]
    parts.append(("mask", _shell(head, mask_source), len(mask_source)))
    parts.append(("hat", _shell(head, hat_source), len(hat_source)))
    slices, triangles, start = {}, [], 0
    for name, part_triangles, count in parts:
        slices[name] = (start, start + count)
        triangles.append(part_triangles + start)
        start += count
    return AccessoryLayout(np.concatenate(triangles), slices, mask_source, hat_source)


@dataclass
class Accessories:
    """One face's accessories: vertices (V_acc, 3) in the neutral frame (NaN where absent), per-vertex albedo
    (V_acc, 3), gloss (V_acc,) and cloth (V_acc,) (1 where a fabric texture is laid over the colour)."""

    vertices: torch.Tensor
    colour: torch.Tensor
    gloss: torch.Tensor
    cloth: torch.Tensor


def _random_colour(generator: torch.Generator, dark: bool = False) -> torch.Tensor:
    colour = torch.rand(3, generator=generator)
    if float(torch.rand((), generator=generator)) < 0.5:  # muted: most clothing is greys, blues and browns
        colour = colour.mean() + 0.3 * (colour - colour.mean())
    return colour * (0.3 if dark else 1.0)


def place_accessories(layout: AccessoryLayout, head: HeadModel, shape: torch.Tensor, hair_colour: torch.Tensor,
                      skin_colour: torch.Tensor, generator: torch.Generator, landmarks_68: np.ndarray,
                      occluder_rate: float = 1.0, long_hair: bool = False) -> Accessories:
    """Draw and place one face's accessories.

    Args:
        layout: from :func:`accessory_layout`; head: the opaque head.
        shape: (V, 3) this face's head vertices (identity and expression applied, not posed).
        hair_colour, skin_colour: (3,) this face's hair and skin albedo (long hair, hands).
        generator: this face's random stream.
        landmarks_68: (68,) the Multi-PIE landmark vertices the accessories are placed on (the generator
            passes ICT's own, :data:`lsqface.morphable.ict.ICT_LANDMARKS_68`).
        occluder_rate: scales the probability of glasses, hands, objects, masks and hats (0: none).
        long_hair: whether this face's hair falls to the shoulders (the hair curtain).
    """
    def rand() -> float:
        return float(torch.rand((), generator=generator))

    count = layout.n_vertices
    vertices = torch.full((count, 3), float("nan"))
    colour = torch.zeros(count, 3)
    gloss = torch.zeros(count)
    cloth = torch.zeros(count)
    marks = shape[torch.as_tensor(np.asarray(landmarks_68))]
    neck_bottom = float(shape[9409:11248, 1].min())

    def put(name: str, points: torch.Tensor, albedo: torch.Tensor, shine: float = 0.0, fabric: float = 0.0) -> None:
        start, end = layout.slices[name]
        vertices[start:end] = points
        colour[start:end] = albedo
        gloss[start:end] = shine
        cloth[start:end] = fabric

    # Shoulders: an elliptic cylinder that narrows to the neck at its top.
    rows, columns = TORSO_GRID
    height = torch.linspace(0.0, 1.0, rows)[:, None]
    angle = torch.linspace(0.0, 2 * math.pi, columns + 1)[:-1][None]
    half_width = 150.0 + 60.0 * rand()
    depth = 90.0 + 30.0 * rand()
    neck = 55.0
    spread = (neck + (1.0 - neck / half_width) * half_width * (height / 0.25).clamp(max=1.0) ** 0.5)
    top = neck_bottom + 40.0 + 20.0 * rand()
    torso = torch.stack([spread * torch.cos(angle), (top - 400.0 * height).expand(rows, columns),
                         -25.0 + spread * depth / half_width * torch.sin(angle)], dim=-1).reshape(-1, 3)
    put("torso", torso, _random_colour(generator), fabric=1.0)

    if long_hair:
        rows, columns = CURTAIN_GRID
        radius = 95.0 + 20.0 * rand()
        bottom = -100.0 - 180.0 * rand()
        reach = math.radians(95.0 + 25.0 * rand())
        angle = torch.linspace(-reach, reach, columns)[None]
        level = torch.linspace(120.0, bottom, rows)[:, None]
        flare = radius + 0.25 * (120.0 - level).clamp_min(0.0)
        curtain = torch.stack([flare * torch.sin(angle), level.expand(rows, columns), -15.0 - flare * torch.cos(angle)],
                              dim=-1).reshape(-1, 3)
        put("curtain", curtain, hair_colour.expand(rows * columns, 3), shine=0.3)

    eye_centres = torch.stack([marks[36:42].mean(dim=0), marks[42:48].mean(dim=0)])
    if rand() < 0.2 * occluder_rate:  # glasses or sunglasses
        sunglasses = rand() < 0.35
        radius = 19.0 + 6.0 * rand()
        rim = 1.5 + 3.0 * rand()
        frame = _random_colour(generator, dark=rand() < 0.6)
        front = float(marks[36:48, 2].max()) + 10.0 + 6.0 * rand()
        angle = torch.linspace(0.0, 2 * math.pi, RING_SEGMENTS + 1)[:-1]
        circle = torch.stack([torch.cos(angle), 0.8 * torch.sin(angle), torch.zeros_like(angle)], dim=-1)
        for side, centre in zip(("left", "right"), eye_centres):
            centre = torch.tensor([float(centre[0]), float(centre[1]), front])
            put(f"ring_{side}", torch.cat([centre + radius * circle, centre + (radius + rim) * circle]), frame, shine=0.8)
            if sunglasses:
                lens = torch.cat([centre + radius * circle, centre[None]])
                put(f"lens_{side}", lens, torch.tensor([0.03, 0.03, 0.04]) * (1 + rand()), shine=1.0)
        left, right = eye_centres[:, 0].min(), eye_centres[:, 0].max()
        y = float(eye_centres[:, 1].mean())
        bridge = torch.tensor([[float(left) + radius, y + 2, front], [float(right) - radius, y + 2, front],
                               [float(left) + radius, y + 2 + rim, front], [float(right) - radius, y + 2 + rim, front]])
        put("bridge", bridge, frame)
        for side, sign in (("left", -1.0), ("right", 1.0)):
            x0 = float(left if sign < 0 else right) + sign * (radius + rim)
            temple = torch.tensor([[x0, y + 4, front], [sign * 75.0, y + 8, -10.0], [x0, y + 4 + rim, front],
                                   [sign * 75.0, y + 8 + rim, -10.0]])
            put(f"temple_{side}", temple, frame)

    for k in range(BLOB_COUNT):  # hands, microphones, cups, phones: ellipsoids in front of the face
        if rand() < 0.12 * occluder_rate:
            unit, _ = ellipsoid(*BLOB_GRID)
            unit = torch.as_tensor(unit, dtype=torch.float32)
            radii = torch.tensor([12.0 + 38.0 * rand(), 12.0 + 45.0 * rand(), 10.0 + 20.0 * rand()])
            target = shape[int(torch.randint(0, FITTED_VERTEX_COUNT, (), generator=generator))]
            turn = 2 * math.pi * rand()
            rotation = torch.tensor([[math.cos(turn), -math.sin(turn), 0.0], [math.sin(turn), math.cos(turn), 0.0], [0, 0, 1.0]])
            centre = target + torch.tensor([0.0, 0.0, float(radii[2]) + 5.0 + 40.0 * rand()])
            hand = rand() < 0.5
            albedo = skin_colour * (0.9 + 0.2 * rand()) if hand else _random_colour(generator, dark=rand() < 0.3)
            put(f"blob{k}", (unit * radii) @ rotation.T + centre, albedo, shine=0.2 if hand else 0.6 * rand())

    normals = torch.as_tensor(head.normals)
    if rand() < 0.06 * occluder_rate:  # a face mask over nose, mouth and chin
        source = torch.as_tensor(layout.mask_source)
        shell = shape[source] + (3.0 + 4.0 * rand()) * normals[source]
        tint = torch.tensor([0.55, 0.75, 0.85]) if rand() < 0.5 else _random_colour(generator)
        put("mask", shell, tint, fabric=0.5)
    if rand() < 0.1 * occluder_rate:  # a hat or beanie over the scalp
        source = torch.as_tensor(layout.hat_source)
        shell = shape[source] + (8.0 + 10.0 * rand()) * normals[source]
        put("hat", shell, _random_colour(generator), fabric=1.0)
    return Accessories(vertices=vertices, colour=colour, gloss=gloss, cloth=cloth)
