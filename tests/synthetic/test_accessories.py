"""Accessories: one fixed topology for every face; absent ones are not drawn."""

import numpy as np
import torch

from lsqface.morphable.ict import ICT_LANDMARKS_68
from lsqface.synthetic.accessories import accessory_layout, place_accessories


def _place(head, rate, seed=0, long_hair=False):
    layout = accessory_layout(head, ICT_LANDMARKS_68)
    shape = torch.as_tensor(head.shape_mean)
    accessories = place_accessories(layout, head, shape, torch.tensor([0.1, 0.1, 0.1]), torch.tensor([0.6, 0.4, 0.3]),
                                    torch.Generator().manual_seed(seed), ICT_LANDMARKS_68, occluder_rate=rate,
                                    long_hair=long_hair)
    return layout, accessories


def test_layout_indexes_its_own_vertices(head):
    layout, accessories = _place(head, 1.0)
    assert layout.triangles.min() == 0 and layout.triangles.max() < layout.n_vertices
    assert accessories.vertices.shape == (layout.n_vertices, 3)


def test_without_occluders_only_the_shoulders_are_drawn(head):
    layout, accessories = _place(head, 0.0)
    finite = torch.isfinite(accessories.vertices).all(dim=1)
    start, end = layout.slices["torso"]
    assert finite[start:end].all() and finite.sum() == end - start
    layout, accessories = _place(head, 0.0, long_hair=True)
    start, end = layout.slices["curtain"]
    assert torch.isfinite(accessories.vertices[start:end]).all()


def test_occluders_lie_in_front_of_the_face(head):
    # A rate this high draws every occluder; each sits in front of (larger z than) the eyes it covers.
    layout, accessories = _place(head, 1000.0)
    finite = torch.isfinite(accessories.vertices).all(dim=1)
    for name in ("ring_left", "ring_right", "blob0", "mask", "hat"):
        start, end = layout.slices[name]
        assert finite[start:end].all(), name
    eyes_z = float(np.asarray(head.shape_mean)[np.asarray(ICT_LANDMARKS_68)[36:48], 2].max())
    start, end = layout.slices["ring_left"]
    assert (accessories.vertices[start:end, 2] > eyes_z).all()
