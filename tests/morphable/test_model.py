"""basis_products: the one linear combination of basis vectors, against the two other ways to write it.

``torch.einsum("vcn,bn->bvc", basis, coefficients)`` and the matrix product on the flattened basis
are the same sum; whether they give the same bits depends on the order the kernel adds in. On the
pinned torch build:

- against einsum: bit-for-bit, float32 and float64, one face or many, on the ICT-FaceKit bases. So
  the reconstruction, the losses and MoFA's decoder give the numbers they gave when each wrote its
  own einsum (the shipped model's reconstruction of held-out faces: every output tensor equal);
- against ``(basis @ coefficients.T).T``, the other order of the same product: a few units in the
  last place apart (at most 2.3e-13 mm on the generator's float64 vertices; its images, maps and
  landmarks, cast to float32 before rasterising, are bit-identical on 32 faces);
- against one matrix-vector product per face (numpy): equal within the rounding of a 153-term sum,
  a relative 1e-13 in float64 and 1e-5 in float32 of the largest offset.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lsqface.morphable.model import basis_products


def _coefficients(batch: int, count: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(batch, count, generator=torch.Generator().manual_seed(batch), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch", [1, 2, 5, 8, 32])
def test_basis_products_is_bit_for_bit_einsum_on_the_real_bases(ict_model, dtype, batch):
    for basis in (ict_model.shape_basis, ict_model.albedo_basis, ict_model.shape_basis[ict_model.landmarks_68]):
        basis = torch.as_tensor(basis, dtype=dtype)
        coefficients = _coefficients(batch, basis.shape[-1], dtype)
        assert torch.equal(basis_products(basis, coefficients), torch.einsum("vcn,bn->bvc", basis, coefficients))


@pytest.mark.parametrize("dtype, relative", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
def test_basis_products_matches_one_product_per_face_within_rounding(dtype, relative):
    basis = torch.randn(500, 3, 153, generator=torch.Generator().manual_seed(0), dtype=dtype)
    coefficients = _coefficients(6, 153, dtype)
    expected = np.stack([basis.double().numpy() @ row for row in coefficients.double().numpy()])
    result = basis_products(basis, coefficients).double().numpy()
    assert result.shape == (6, 500, 3)
    assert np.abs(result - expected).max() <= relative * np.abs(expected).max()


def test_basis_products_takes_a_subset_of_vertices_and_passes_gradients():
    basis = torch.randn(5, 3, 4, dtype=torch.float64)  # e.g. the five landmark means
    coefficients = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda c: basis_products(basis, c), (coefficients,))
    non_contiguous = torch.randn(4, 3, 5, dtype=torch.float64).permute(2, 1, 0)  # (5, 3, 4), strided
    assert torch.equal(basis_products(non_contiguous, coefficients.detach()),
                       basis_products(non_contiguous.contiguous(), coefficients.detach()))
