"""Adaptive statistical regularisation (seed G, eq. 18; DESIGN.md "Training").

Each 3DMM coefficient i has a regularisation weight w_i that is adjusted every
iteration so that the exponential average of the coefficient's square stays
at 1 (the variance the 3DMM defines, its bases being scaled to unit standard
deviation). Our reading of the garbled eq. 18, for iteration j:

    E[a_i^2]_j = (1 - delta) E[a_i^2]_{j-1} + delta mean_batch(a_{i,j-1}^2)
    E[w_i]_j   = (1 - delta) E[w_i]_{j-1}   + delta w_{i,j-1}
    k_{i,j}    = clamp(E[a_i^2]_j, k_min, k_max)
    w_{i,j}    = clamp(k_{i,j} E[w_i]_j, w_min, w_max)

with delta = 0.05, k in [0.99, 1.01], w in [1e-4, 1e4] and E[a^2]_0 = E[w]_0 = 0.1.
The seed's text puts (1 - delta) on the newest value; we read delta as the
"update ratio" of the newest value (the usual exponential average), because
with 0.95 on the newest value the "exponential average" would be almost the
last value. Coefficients too large on average (E[a^2] > 1) raise their weight
by up to 1 % per step, too small ones lower it.

The weights of step j are used by the solve of step j; its coefficients then
feed :meth:`AdaptiveRegularisation.update`, which computes the weights of
step j + 1. Under DistributedDataParallel the batch sums of a^2 and the image
count are all-reduced before the update, so every rank holds the same state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AdaptiveConfig:
    """Settings of eq. 18 (seed G values as defaults).

    Attributes:
        enabled: False keeps every weight at its initial value.
        update_ratio: delta, the share of the newest value in each exponential average.
        initial_mean_square: E[a^2]_0.
        initial_mean_weight: E[w]_0.
        rate_range: (k_min, k_max), the clamp of the rate of change.
        weight_range: (w_min, w_max), the clamp of the weight.
    """

    enabled: bool = True
    update_ratio: float = 0.05
    initial_mean_square: float = 0.1
    initial_mean_weight: float = 0.1
    rate_range: tuple[float, float] = (0.99, 1.01)
    weight_range: tuple[float, float] = (1e-4, 1e4)


class AdaptiveRegularisation:
    """Per-coefficient adaptive weights for the shape (identity + expression) and albedo coefficients.

    Args:
        shape_count: N = N_id + N_exp.
        albedo_count: N_alb.
        config: eq. 18's constants.

    Attributes (float64 tensors, CPU):
        mean_square: (N + N_alb,) E[a^2], shape coefficients first.
        mean_weight: (N + N_alb,) E[w].
        weight: (N + N_alb,) the weights the next solve uses.
    """

    def __init__(self, shape_count: int, albedo_count: int, config: AdaptiveConfig = AdaptiveConfig()) -> None:
        self.shape_count = int(shape_count)
        self.albedo_count = int(albedo_count)
        self.config = config
        count = self.shape_count + self.albedo_count
        self.mean_square = torch.full((count,), float(config.initial_mean_square), dtype=torch.float64)
        self.mean_weight = torch.full((count,), float(config.initial_mean_weight), dtype=torch.float64)
        self.weight = self._weight_from(self.mean_square, self.mean_weight)

    def _weight_from(self, mean_square: torch.Tensor, mean_weight: torch.Tensor) -> torch.Tensor:
        rate = mean_square.clamp(*self.config.rate_range)
        return (rate * mean_weight).clamp(*self.config.weight_range)

    @property
    def shape_weights(self) -> torch.Tensor:
        """(N,) the weights of the shape coefficients m for the next solve."""
        return self.weight[: self.shape_count]

    @property
    def albedo_weights(self) -> torch.Tensor:
        """(N_alb,) the weights of the albedo coefficients h for the next solve."""
        return self.weight[self.shape_count:]

    @staticmethod
    def batch_statistics(shape_coefficients: torch.Tensor, albedo_coefficients: torch.Tensor) -> torch.Tensor:
        """(N + N_alb + 1,) float64: the batch sums of a^2 per coefficient, then the image count.

        Sums (not means) so that statistics of several micro-batches or ranks add up;
        detached, on the CPU.

        Args:
            shape_coefficients: (B, N); albedo_coefficients: (B, N_alb).
        """
        squares = torch.cat([shape_coefficients, albedo_coefficients], dim=1).detach().to(torch.float64).square()
        count = torch.tensor([float(squares.shape[0])], dtype=torch.float64, device=squares.device)
        return torch.cat([squares.sum(dim=0), count]).cpu()

    def update(self, statistics: torch.Tensor) -> None:
        """Advance one iteration from summed statistics (see :meth:`batch_statistics`), eq. 18."""
        if not self.config.enabled:
            return
        statistics = statistics.to(torch.float64).cpu()
        if statistics.shape != (self.mean_square.numel() + 1,):
            raise ValueError(f"statistics must have shape ({self.mean_square.numel() + 1},), got {tuple(statistics.shape)}")
        count = float(statistics[-1])
        if count <= 0:
            return
        delta = self.config.update_ratio
        batch_mean_square = statistics[:-1] / count
        self.mean_weight = (1.0 - delta) * self.mean_weight + delta * self.weight
        self.mean_square = (1.0 - delta) * self.mean_square + delta * batch_mean_square
        self.weight = self._weight_from(self.mean_square, self.mean_weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors for a checkpoint."""
        return {"mean_square": self.mean_square.clone(), "mean_weight": self.mean_weight.clone(), "weight": self.weight.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`; the coefficient counts must match."""
        for name in ("mean_square", "mean_weight", "weight"):
            value = torch.as_tensor(state[name], dtype=torch.float64).cpu()
            if value.shape != self.mean_square.shape:
                raise ValueError(f"adaptive state '{name}' has shape {tuple(value.shape)}, expected {tuple(self.mean_square.shape)}")
            setattr(self, name, value.clone())
