"""Cast shadows of a directional light, by a shadow map.

The scene (head, hair, hands, hats, glasses, shoulders) is rasterised once more,
orthographically, as seen from the light: the map keeps, per texel, the depth
along the light of the surface nearest to it. A point is lit when it is no
deeper along the light than that surface plus a small bias (the bias keeps a
surface from shadowing itself at the map's resolution; it grows with the surface's slant
to the light, whose depth changes across a texel). The comparison is made
at the 3 x 3 texels around the point and averaged (percentage-closer filtering),
so shadow edges are a texel or two soft, as a real light of some size gives.

Directions are the light's direction of travel in camera space (from the light
towards the scene), the convention of the directional lights in
:mod:`lsqface.synthetic.photoreal` (a surface faces it where ``-n . d > 0``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lsqface.render.rasterize import rasterize


def light_frame(direction: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations whose rows are two axes across the light and the light's direction.

    Args:
        direction: (B, 3) unit directions of travel.
    """
    direction = F.normalize(direction, dim=-1)
    # Any axis not parallel to the direction gives the first row; choose the least aligned one.
    axis = torch.zeros_like(direction)
    axis.scatter_(1, direction.abs().argmin(dim=1, keepdim=True), 1.0)
    first = F.normalize(torch.cross(direction, axis, dim=-1), dim=-1)
    second = torch.cross(direction, first, dim=-1)
    return torch.stack([first, second, direction], dim=1)


def light_visibility(vertices: torch.Tensor, triangles: torch.Tensor, direction: torch.Tensor, points: torch.Tensor,
                     normals: torch.Tensor | None = None, resolution: int = 128, bias: float = 1.0,
                     slope_bias: float = 1.5, max_bias: float = 12.0) -> torch.Tensor:
    """The fraction of each point that the directional light reaches, in [0, 1].

    Args:
        vertices: (B, V, 3) the scene's vertices in camera space, any unit (e.g. mm); a vertex that is
            not finite (an absent part) is left out with its triangles.
        triangles: (F, 3) its triangles.
        direction: (B, 3) the light's direction of travel, camera space.
        points: (B, N, 3) the points to test, camera space (points on the scene's surface).
        normals: (B, N, 3) their unit normals, or None for surfaces facing the light.
        resolution: side of the shadow map in texels; the map spans the scene's extent across the light.
        bias, slope_bias, max_bias: how much deeper than the nearest surface a point may lie and still be
            lit, in texels (converted to the vertices' unit by the map's texel size): ``bias + slope_bias
            * tan(angle between the normal and the light)``, at most ``max_bias``. A surface slanted to the
            light changes depth by tan(angle) texels per texel, and the filter reads texels up to 1.5
            texels away, so a constant bias would let slanted surfaces shadow themselves.

    Returns:
        (B, N) visibility: 1 lit, 0 in shadow, between on shadow edges.
    """
    frame = light_frame(direction.to(vertices.dtype))
    seen = vertices @ frame.transpose(1, 2)  # (B, V, 3): across, across, along the light
    finite = torch.isfinite(seen).all(dim=-1, keepdim=True)
    lower = torch.where(finite, seen, torch.inf)[..., :2].amin(dim=1)
    upper = torch.where(finite, seen, -torch.inf)[..., :2].amax(dim=1)
    extent = (upper - lower).amax(dim=1).clamp_min(1e-9)  # (B,)
    texel = extent / (resolution - 2)  # one texel of margin on each side
    def to_map(coordinates: torch.Tensor) -> torch.Tensor:
        return (coordinates - lower[:, None]) / texel[:, None, None] + 1.0
    map_vertices = torch.cat([to_map(seen[..., :2]), seen[..., 2:]], dim=-1)
    depth = rasterize(map_vertices, triangles, resolution, resolution).depth  # (B, R, R), inf where empty
    depth = torch.nan_to_num(depth, posinf=torch.finfo(depth.dtype).max / 4)

    located = points.to(vertices.dtype) @ frame.transpose(1, 2)
    texels = to_map(located[..., :2])  # (B, N, 2), pixel centres at integer + 0.5
    allowed = torch.full(points.shape[:2], float(bias), dtype=vertices.dtype, device=vertices.device)
    if normals is not None:
        facing = -(normals.to(vertices.dtype) * frame[:, None, 2]).sum(dim=-1)
        cosine = facing.clamp(0.05, 1.0)
        allowed = (bias + slope_bias * (1.0 - cosine ** 2).sqrt() / cosine).clamp(max=max_bias)
    limit = located[..., 2] - allowed * texel[:, None]  # lit where the map's depth >= this
    lit = torch.zeros(points.shape[:2], dtype=vertices.dtype, device=vertices.device)
    for dy in (-1.0, 0.0, 1.0):
        for dx in (-1.0, 0.0, 1.0):
            shifted = texels + torch.tensor([dx, dy], dtype=texels.dtype, device=texels.device)
            grid = (shifted / resolution * 2.0 - 1.0)[:, :, None, :]  # (B, N, 1, 2) for grid_sample
            nearest = F.grid_sample(depth[:, None], grid, mode="nearest", padding_mode="border",
                                    align_corners=False)[:, 0, :, 0]
            lit = lit + (nearest >= limit).to(lit.dtype)
    return lit / 9.0
