"""Painting the head: the skin carries on past the fitted region without a seam; tones span human skin."""

import numpy as np
import torch

from lsqface.morphable.ict import ICT_LANDMARKS_68
from lsqface.synthetic.head import FITTED_VERTEX_COUNT
from lsqface.synthetic.materials import SKIN_TONES, head_regions, paint_head


def _regions(head):
    return head_regions(head, ICT_LANDMARKS_68)


def test_extension_weights_are_an_average_of_edge_colours(head):
    regions = _regions(head)
    weights = regions.extension
    assert (weights >= -1e-6).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(weights)), atol=1e-5, rtol=0)
    assert (regions.edge_index < FITTED_VERTEX_COUNT).all() and (regions.skin_index >= FITTED_VERTEX_COUNT).all()


def test_no_seam_at_the_fitted_region_s_edge(head):
    """A smooth colour over the fitted face continues smoothly: neighbours across the edge agree."""
    regions = _regions(head)
    position = torch.as_tensor(head.shape_mean[:FITTED_VERTEX_COUNT], dtype=torch.float32)
    smooth = (position[:, 1:2] - position[:, 1].min()) / np.ptp(head.shape_mean[:FITTED_VERTEX_COUNT, 1])
    colour = torch.zeros(head.n_vertices, 1)
    colour[:FITTED_VERTEX_COUNT] = smooth
    colour[regions.skin_index] = regions.extension @ smooth[regions.edge_index]
    triangles = torch.as_tensor(head.triangles)
    skin = torch.zeros(head.n_vertices, dtype=torch.bool)
    skin[:FITTED_VERTEX_COUNT] = True
    skin[regions.skin_index] = True
    crossing = triangles[((triangles < FITTED_VERTEX_COUNT).any(1)) & ((triangles >= FITTED_VERTEX_COUNT).any(1))
                         & skin[triangles].all(1)]
    values = colour[crossing, 0]
    assert len(crossing) > 100
    # Across an edge the colour changes no more than across the fitted face's own triangles.
    inside = triangles[: head.face_triangle_count]
    inside_spread = (colour[inside, 0].max(1).values - colour[inside, 0].min(1).values).quantile(0.99)
    assert (values.max(1).values - values.min(1).values).median() < 2 * inside_spread


def test_painting_is_deterministic_and_realism_zero_is_bare(head):
    regions = _regions(head)
    albedo = torch.full((FITTED_VERTEX_COUNT, 3), 0.5)
    first = paint_head(head, regions, albedo, torch.Generator().manual_seed(3))
    again = paint_head(head, regions, albedo, torch.Generator().manual_seed(3))
    torch.testing.assert_close(first.vertex_colour, again.vertex_colour)
    bare = paint_head(head, regions, albedo, torch.Generator().manual_seed(3), realism=0.0)
    assert bare.hair_weight.abs().max() == 0 and bare.hair_volume == 0
    # Bare skin of a uniform albedo is the face's tone everywhere on the fitted face.
    torch.testing.assert_close(bare.vertex_colour[:FITTED_VERTEX_COUNT], bare.skin_colour.expand(FITTED_VERTEX_COUNT, 3),
                               atol=1e-5, rtol=0)


def test_skin_tones_span_dark_to_light_skin():
    luminance = SKIN_TONES @ torch.tensor([0.2126, 0.7152, 0.0722])
    assert (luminance.diff() > 0).all() and luminance[-1] / luminance[0] > 5
