"""Lambert shading, compositing and a one-call mesh renderer.

Spherical-harmonics shading is :func:`lsqface.lighting.sh.sh_shading`, beside the basis it uses.

All functions are differentiable plain torch; none holds state.
"""

from __future__ import annotations

import torch

from lsqface.render.interpolate import interpolate
from lsqface.render.rasterize import RenderError, rasterize

__all__ = ["lambert", "composite", "render_mesh"]


def lambert(normals: torch.Tensor, light_direction: torch.Tensor) -> torch.Tensor:
    """Lambert shading max(0, n . l) for a distant light.

    Args:
        normals: (B, ..., 3) unit normals.
        light_direction: (B, 3) direction towards the light (normalised here).

    Returns:
        (B, ..., 1) shading in [0, 1].
    """
    if light_direction.dim() != 2 or light_direction.shape[-1] != 3 or normals.shape[0] != light_direction.shape[0]:
        raise RenderError(
            f"light_direction must have shape (B, 3) matching normals (B, ..., 3), got "
            f"{tuple(light_direction.shape)} and {tuple(normals.shape)}; give one light per image."
        )
    direction = torch.nn.functional.normalize(light_direction, dim=-1, eps=1e-12)
    direction = direction.reshape((normals.shape[0],) + (1,) * (normals.dim() - 2) + (3,))
    return (normals * direction).sum(dim=-1, keepdim=True).clamp_min(0.0)


def composite(
    image: torch.Tensor, rendered: torch.Tensor, mask: torch.Tensor, alpha: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Overlay a rendering on an image: image (1 - alpha m) + rendered alpha m.

    Args:
        image: (B, 3, H, W) background picture.
        rendered: (B, 3, H, W) rendering, same value range as ``image``.
        mask: (B, 1, H, W) coverage in [0, 1] (1 where the mesh is drawn).
        alpha: opacity of the rendering in [0, 1], a float or a tensor
            broadcastable to (B, 1, H, W).

    Returns:
        (B, 3, H, W) blended picture.
    """
    if image.shape != rendered.shape or mask.shape != (image.shape[0], 1) + tuple(image.shape[2:]):
        raise RenderError(
            f"composite needs image and rendered (B, 3, H, W) and mask (B, 1, H, W) of one size, got "
            f"{tuple(image.shape)}, {tuple(rendered.shape)}, {tuple(mask.shape)}; render at the image's size."
        )
    weight = mask.to(image.dtype) * alpha
    return image * (1.0 - weight) + rendered * weight


def render_mesh(
    vertices_image: torch.Tensor,
    triangles: torch.Tensor,
    vertex_colours: torch.Tensor,
    height: int,
    width: int,
    background: torch.Tensor | None = None,
    cull_backfaces: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterise a mesh and interpolate its vertex colours: the one call used for pictures.

    Differentiable in ``vertex_colours`` and (inside triangles) in the vertex
    positions; see :mod:`lsqface.render.rasterize` for the image-space
    conventions.

    Args:
        vertices_image: (B, V, 3) image-space vertices: x, y in pixels (pixel
            centres at integer + 0.5, y down), z depth (smaller is nearer).
        triangles: (F, 3) int64 vertex indices.
        vertex_colours: (B, V, 3) colours (any range, usually [0, 1]).
        height: H in pixels.
        width: W in pixels.
        background: None for black, or a tensor broadcastable to (B, 3, H, W)
            (e.g. the photo, or a (3, 1, 1) colour) shown where no triangle is.
        cull_backfaces: skip triangles facing away (clockwise on screen).

    Returns:
        image (B, 3, H, W) and mask (B, 1, H, W) with 1.0 on covered pixels.
    """
    fragments = rasterize(vertices_image, triangles, height, width, cull_backfaces=cull_backfaces)
    colours = interpolate(vertex_colours, fragments, vertices_image, triangles)  # (B, H, W, 3)
    image = colours.permute(0, 3, 1, 2)
    mask = fragments.mask[:, None].to(image.dtype)
    if background is not None:
        background = torch.as_tensor(background, dtype=image.dtype, device=image.device)
        image = image * mask + background.expand_as(image) * (1.0 - mask)
    return image, mask
