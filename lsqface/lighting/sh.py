"""Real spherical harmonics of order 2 and the shading they give (seed D, R).

Convention (Ramamoorthi and Hanrahan, "An efficient representation for
irradiance environment maps", 2001): the nine real, orthonormal basis
functions over the unit sphere, without the Condon-Shortley phase, in the
order (l, m) = (0,0), (1,-1), (1,0), (1,1), (2,-2), (2,-1), (2,0), (2,1), (2,2):

    Y00  = 0.282095                      (1 / (2 sqrt(pi)))
    Y1-1 = 0.488603 y,  Y10 = 0.488603 z,  Y11 = 0.488603 x     (sqrt(3 / (4 pi)))
    Y2-2 = 1.092548 xy, Y2-1 = 1.092548 yz, Y21 = 1.092548 xz   (sqrt(15 / (4 pi)))
    Y20  = 0.315392 (3 z^2 - 1)                                 (sqrt(5 / (16 pi)))
    Y22  = 0.546274 (x^2 - y^2)                                 (sqrt(15 / (16 pi)))

Shading is the plain linear combination ``sum_i c_i Y_i(n)``: the
coefficients already hold the cosine-lobe convolution (they describe the
irradiance, not the radiance), which is what both the conventional and the
inverse lighting models of the seed fit directly. A constant shading ``s``
is therefore the coefficient vector ``(s / Y00, 0, ..., 0)``; see
:func:`constant_lighting`.
"""

from __future__ import annotations

import math

import torch

#: Normalisation constants of the nine basis functions, in the order above.
SH_CONSTANTS = (
    1.0 / (2.0 * math.sqrt(math.pi)),
    math.sqrt(3.0 / (4.0 * math.pi)),
    math.sqrt(3.0 / (4.0 * math.pi)),
    math.sqrt(3.0 / (4.0 * math.pi)),
    math.sqrt(15.0 / (4.0 * math.pi)),
    math.sqrt(15.0 / (4.0 * math.pi)),
    math.sqrt(5.0 / (16.0 * math.pi)),
    math.sqrt(15.0 / (4.0 * math.pi)),
    math.sqrt(15.0 / (16.0 * math.pi)),
)

#: Number of basis functions of order 2.
SH_COUNT = 9


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The nine real SH basis functions of order 2 at unit vectors.

    Args:
        normals: (..., 3) unit normals (x, y, z); not renormalised here.

    Returns:
        (..., 9) basis values in the order of the module docstring.
    """
    if normals.shape[-1] != 3:
        raise ValueError(f"normals must have shape (..., 3), got {tuple(normals.shape)}")
    x, y, z = normals.unbind(-1)
    c = SH_CONSTANTS
    return torch.stack(
        (
            torch.full_like(x, c[0]),
            c[1] * y,
            c[2] * z,
            c[3] * x,
            c[4] * x * y,
            c[5] * y * z,
            c[6] * (3.0 * z * z - 1.0),
            c[7] * x * z,
            c[8] * (x * x - y * y),
        ),
        dim=-1,
    )


def sh_shading(normals: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Shading ``F(n)^T c`` at unit normals, for one or three colour channels.

    Args:
        normals: (..., 3) unit normals.
        coefficients: (..., 9) for one channel, or (..., 3, 9) for one set of
            nine coefficients per colour channel; broadcast against ``normals``'
            leading dimensions. Coefficients are read per channel when their
            last two dimensions are (3, 9) and they have at least as many
            dimensions as ``normals`` (so a (3, 9) tensor is always RGB).

    Returns:
        (...) shading for (..., 9) coefficients, (..., 3) for (..., 3, 9).
    """
    basis = sh_basis(normals)
    if coefficients.shape[-1] != SH_COUNT:
        raise ValueError(f"coefficients must end in 9, got {tuple(coefficients.shape)}")
    if coefficients.ndim >= 2 and coefficients.shape[-2] == 3 and coefficients.ndim >= normals.ndim:
        return (coefficients * basis.unsqueeze(-2)).sum(-1)
    return (coefficients * basis).sum(-1)


def constant_lighting(intensity: float = 1.0, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The (9,) coefficients whose shading is ``intensity`` everywhere: (intensity / Y00, 0, ..., 0)."""
    coefficients = torch.zeros(SH_COUNT, dtype=dtype)
    coefficients[0] = intensity / SH_CONSTANTS[0]
    return coefficients
