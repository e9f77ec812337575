"""Pictures of a face model and its UV-3DMM for a person to check (``lsqface model show``).

Written with matplotlib's Agg backend (no display needed), every figure closed
after saving, every file written to a temporary name and renamed. The meshes
are drawn with a depth-sorted ``PolyCollection`` (painter's algorithm) and
Lambert shading from a light at the camera; that is enough to judge the shape
and the landmarks and needs no renderer.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from lsqface.files import atomic_path  # noqa: E402
from lsqface.morphable.flatten import flatten  # noqa: E402
from lsqface.morphable.uv_model import UVMorphableModel  # noqa: E402

# Views of the mean shape: name and rotation about the vertical axis in degrees. A negative
# angle turns the subject's left cheek (model +x) towards the camera.
VIEWS = (("front", 0.0), ("left", -60.0), ("right", 60.0))
FIVE_LANDMARK_NAMES = ("left eye", "right eye", "nose tip", "left mouth", "right mouth")


def _save(figure: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=figure.dpi)
    plt.close(figure)
    return path


def _rotate_yaw(points: np.ndarray, degrees: float) -> np.ndarray:
    """Points (..., 3) rotated by ``degrees`` about the model's vertical (+y) axis."""
    angle = np.radians(degrees)
    cos, sin = np.cos(angle), np.sin(angle)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.stack([x * cos + z * sin, y, -x * sin + z * cos], axis=-1)


def draw_mesh(axes: plt.Axes, vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray | None = None) -> None:
    """Draw a mesh seen from +z (orthographic, x right, y up), Lambert-shaded, back faces culled.

    Args:
        axes: where to draw.
        vertices: (V, 3) positions in the camera frame (any unit).
        triangles: (F, 3) vertex indices, counter-clockwise seen from the front.
        colours: (V, 3) albedo in [0, 1], or None for a light grey.
    """
    corners = vertices[triangles]  # (F, 3, 3)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    facing = normals[:, 2] > 0
    shading = 0.15 + 0.85 * np.clip(normals[:, 2], 0.0, 1.0)
    albedo = np.full((len(triangles), 3), 0.8) if colours is None else colours[triangles].mean(axis=1)
    face_colours = np.clip(albedo * shading[:, None], 0.0, 1.0)
    order = np.argsort(corners[:, :, 2].mean(axis=1))  # far to near
    order = order[facing[order]]
    collection = PolyCollection(corners[order][:, :, :2], facecolors=face_colours[order], edgecolors="none", antialiased=False)
    axes.add_collection(collection)
    low, high = vertices[:, :2].min(axis=0), vertices[:, :2].max(axis=0)
    margin = 0.03 * (high - low).max()
    axes.set_xlim(low[0] - margin, high[0] + margin)
    axes.set_ylim(low[1] - margin, high[1] + margin)
    axes.set_aspect("equal")
    axes.axis("off")


def _visible(vertices: np.ndarray, normals: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return normals[indices, 2] > 0.05


def write_flattening_picture(uv_model: UVMorphableModel, path: Path) -> Path:
    """The flattened mesh over the unit square; the holes' fan triangles in orange."""
    flattening = flatten(uv_model.model)
    uv = flattening.uv
    face = flattening.triangles[: flattening.filled.n_face_triangles]
    fans = flattening.triangles[flattening.filled.n_face_triangles :]
    figure, axes = plt.subplots(figsize=(8, 8), dpi=100)
    axes.triplot(uv[:, 0], uv[:, 1], face, color="#1f4e79", linewidth=0.15)
    if len(fans):
        axes.triplot(uv[:, 0], uv[:, 1], fans, color="#e07b00", linewidth=0.4)
        axes.plot(flattening.auxiliary_uv[:, 0], flattening.auxiliary_uv[:, 1], "o", color="#e07b00", markersize=3)
    axes.plot([0, 1, 1, 0, 0], [0, 0, 1, 1, 0], color="black", linewidth=0.8)
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(1.02, -0.02)  # v grows downwards, like an image
    axes.set_aspect("equal")
    axes.set_xlabel("u")
    axes.set_ylabel("v")
    axes.set_title(f"Tutte flattening of {uv_model.model.name}: face (blue), filled holes (orange)")
    return _save(figure, path)


def write_landmark_picture(uv_model: UVMorphableModel, path: Path) -> Path:
    """The mean shape from the front, left and right with the 68 landmarks numbered and the 5 marked."""
    model = uv_model.model
    from lsqface.morphable.uv_build import vertex_normals

    figure, axes_row = plt.subplots(1, len(VIEWS), figsize=(6 * len(VIEWS), 7.5), dpi=100)
    for axes, (name, yaw) in zip(axes_row, VIEWS):
        vertices = _rotate_yaw(model.shape_mean, yaw)
        draw_mesh(axes, vertices, model.triangles)
        normals = vertex_normals(vertices, model.triangles)
        if model.landmarks_68.size:
            shown = np.flatnonzero(_visible(vertices, normals, model.landmarks_68))
            points = vertices[model.landmarks_68[shown]]
            axes.plot(points[:, 0], points[:, 1], "o", color="#d62728", markersize=2.5)
            for number, point in zip(shown, points):
                axes.annotate(str(number + 1), point[:2], xytext=(2, 2), textcoords="offset points", fontsize=5, color="#8b0000")
        if model.landmarks_5.size:
            five = _rotate_yaw(model.shape_mean[model.landmarks_5].mean(axis=1), yaw)
            axes.plot(five[:, 0], five[:, 1], "+", color="#17becf", markersize=12, markeredgewidth=2)
        axes.set_title(f"{name}: 68 landmarks (red, numbered 1-68), 5 landmarks (cyan +)", fontsize=9)
    figure.suptitle(f"Mean shape of {model.name}")
    figure.tight_layout()
    return _save(figure, path)


def _image_panel(
    axes: plt.Axes, image: np.ndarray, title: str, colour_bar: bool = False, limits: tuple[float, float] | None = None
) -> None:
    low, high = limits if limits is not None else (None, None)
    shown = axes.imshow(image, cmap=None if image.ndim == 3 else "viridis", interpolation="nearest", vmin=low, vmax=high)
    axes.set_title(title, fontsize=9)
    axes.axis("off")
    if colour_bar:
        plt.colorbar(shown, ax=axes, fraction=0.046, pad=0.02)


def _normalise_per_channel(image: np.ndarray) -> np.ndarray:
    """(S, S, C) -> [0, 1] per channel, for showing coordinates as colour."""
    low = image.min(axis=(0, 1), keepdims=True)
    high = image.max(axis=(0, 1), keepdims=True)
    return (image - low) / np.maximum(high - low, 1e-12)


def write_uv_shape_picture(uv_model: UVMorphableModel, path: Path, modes: int = 4) -> Path:
    """UV images of the shape mean (xyz as RGB), the mask, and the magnitude of the first identity and expression modes."""
    model = uv_model.model
    images = uv_model.shape_images.detach().float().cpu().numpy()
    mean = np.moveaxis(images[:3], 0, -1)
    panels = [(_normalise_per_channel(mean), "shape mean: x, y, z as R, G, B", False, None)]
    panels.append((uv_model.mask_image[0].float().cpu().numpy(), "mask (1 yellow, 0 purple)", False, (0.0, 1.0)))
    normal = np.moveaxis(uv_model.normal_image.detach().float().cpu().numpy(), 0, -1)
    panels.append((np.clip(normal * 0.5 + 0.5, 0, 1), "mean normal (xyz / 2 + 1/2)", False, None))
    for label, first, count in (("identity", 0, model.n_identity), ("expression", model.n_identity, model.n_expression)):
        for mode in range(min(modes, count)):
            channels = images[3 + 3 * (first + mode) : 6 + 3 * (first + mode)]
            panels.append((np.linalg.norm(channels, axis=0), f"{label} mode {mode + 1}: |displacement| (mm)", True, None))
    columns = 4
    rows = -(-len(panels) // columns)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), dpi=80)
    for axes, (image, title, bar, limits) in zip(axes_grid.ravel(), panels):
        _image_panel(axes, image, title, bar, limits)
    for axes in axes_grid.ravel()[len(panels) :]:
        axes.axis("off")
    figure.suptitle(f"UV-3DMM shape images of {model.name} ({uv_model.size}x{uv_model.size})")
    figure.tight_layout()
    return _save(figure, path)


def write_uv_albedo_picture(uv_model: UVMorphableModel, path: Path, modes: int = 5) -> Path:
    """UV images of the albedo mean and the first albedo modes (RGB; a mode shown as 1/2 + mode / (2 max |mode|))."""
    model = uv_model.model
    images = uv_model.albedo_images.detach().float().cpu().numpy()
    panels = [(np.clip(np.moveaxis(images[:3], 0, -1), 0, 1), "albedo mean")]
    for mode in range(min(modes, model.n_albedo)):
        channels = np.moveaxis(images[3 + 3 * mode : 6 + 3 * mode], 0, -1)
        scale = max(float(np.abs(channels).max()), 1e-12)
        panels.append((0.5 + channels / (2 * scale), f"albedo mode {mode + 1} (grey = 0)"))
    figure, axes_row = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), dpi=80)
    for axes, (image, title) in zip(np.atleast_1d(axes_row), panels):
        _image_panel(axes, image, title)
    figure.suptitle(f"UV-3DMM albedo images of {model.name}")
    figure.tight_layout()
    return _save(figure, path)


def write_albedo_samples_picture(uv_model: UVMorphableModel, path: Path, count: int = 6, seed: int = 0) -> Path:
    """``count`` random albedos (coefficients drawn from N(0, 1)) on the mean face, from the front."""
    model = uv_model.model
    generator = np.random.default_rng(seed)
    figure, axes_row = plt.subplots(1, count, figsize=(3 * count, 3.8), dpi=80)
    for axes in np.atleast_1d(axes_row):
        coefficients = generator.standard_normal(model.n_albedo)
        draw_mesh(axes, model.shape_mean, model.triangles, np.clip(model.albedo(coefficients), 0.0, 1.0))
    figure.suptitle(f"Random albedos of {model.name} on the mean shape (coefficients ~ N(0, 1), seed {seed})")
    figure.tight_layout()
    return _save(figure, path)


def write_model_pictures(uv_model: UVMorphableModel, folder: str | os.PathLike) -> list[Path]:
    """Write PNG pictures of ``uv_model`` into ``folder`` (created if missing) and return their paths.

    Pictures: the flattening over the unit square, the mean shape from three
    views with its landmarks, the UV shape images, the UV albedo images and
    random albedos rendered on the mean face.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_flattening_picture(uv_model, folder / "flattening.png"),
        write_landmark_picture(uv_model, folder / "mean_shape_landmarks.png"),
        write_uv_shape_picture(uv_model, folder / "uv_shape.png"),
        write_uv_albedo_picture(uv_model, folder / "uv_albedo.png"),
        write_albedo_samples_picture(uv_model, folder / "albedo_samples.png"),
    ]
