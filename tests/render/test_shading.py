import numpy as np
import torch

from lsqface.render.shading import composite, lambert, render_mesh


def random_unit_vectors(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(*shape, 3, generator=generator, dtype=torch.float64)
    return vectors / vectors.norm(dim=-1, keepdim=True)


def test_lambert_is_clamped_cosine():
    normals = random_unit_vectors(2, 7)
    light = torch.tensor([[0.0, 0.0, 2.0], [1.0, -1.0, 0.0]], dtype=torch.float64)
    expected = np.clip(
        np.einsum("bnk,bk->bn", normals.numpy(), light.numpy() / np.linalg.norm(light.numpy(), axis=1, keepdims=True)),
        0,
        None,
    )
    np.testing.assert_allclose(lambert(normals, light)[..., 0].numpy(), expected)


def test_composite_blends_by_mask_and_alpha():
    generator = torch.Generator().manual_seed(1)
    image, rendered = torch.rand(2, 2, 3, 4, 5, generator=generator)
    mask = (torch.rand(2, 1, 4, 5, generator=generator) > 0.5).float()
    torch.testing.assert_close(composite(image, rendered, mask, 0.0), image)
    full = composite(image, rendered, mask, 1.0)
    torch.testing.assert_close(full, torch.where(mask.bool(), rendered, image))
    half = composite(image, rendered, mask, 0.25)
    torch.testing.assert_close(half, torch.where(mask.bool(), 0.75 * image + 0.25 * rendered, image))


def test_render_mesh_draws_colour_on_the_mask_over_the_background():
    vertices = torch.tensor([[[2.0, 3.0, 1.0], [6.0, 3.0, 1.0], [6.0, 5.0, 1.0], [2.0, 5.0, 1.0]]])
    triangles = torch.tensor([[0, 1, 2], [0, 2, 3]])
    colours = torch.tensor([0.2, 0.4, 0.6]).expand(1, 4, 3).clone().requires_grad_(True)
    background = torch.tensor([1.0, 0.0, 0.5])[:, None, None]
    image, mask = render_mesh(vertices, triangles, colours, 8, 9, background=background)
    assert image.shape == (1, 3, 8, 9) and mask.shape == (1, 1, 8, 9)
    expected_mask = torch.zeros(8, 9)
    expected_mask[3:5, 2:6] = 1
    torch.testing.assert_close(mask[0, 0], expected_mask)
    expected = torch.where(expected_mask.bool(), torch.tensor([0.2, 0.4, 0.6])[:, None, None], background)
    torch.testing.assert_close(image[0], expected)
    image.sum().backward()
    # Each covered pixel's barycentrics sum to 1, so the colour gradients add up to the pixel count per channel.
    torch.testing.assert_close(colours.grad.sum(dim=1)[0], torch.full((3,), 8.0))
