"""SmoothQuant (Xiao et al. 2022, arXiv 2211.10438, Eq. 4).

s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), where max|W_j| is taken over every output row of
every linear fed by the same input.
"""

from dataclasses import dataclass
from typing import Sequence

import torch

from fptq.quant.methods import TRANSFORMS, Needs, Transform, check

MIN_SCALE = 1e-5


def smoothquant_scale(
    x_absmax: torch.Tensor, weights: Sequence[torch.Tensor], alpha: float = 0.5
) -> torch.Tensor:
    """x_absmax: (in,); weights: each (out_i, in) -> s: (in,)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothquant alpha must be in [0, 1], got {alpha}")
    w_absmax = torch.cat([w.abs().float() for w in weights], 0).amax(0).clamp(min=MIN_SCALE)
    x = x_absmax.float().clamp(min=MIN_SCALE)
    return (x.pow(alpha) / w_absmax.pow(1.0 - alpha)).clamp(min=MIN_SCALE)


@dataclass(frozen=True)
class SmoothQuantSettings:
    alpha: float = 0.5  # migration strength

    def __post_init__(self):
        check(0.0 <= self.alpha <= 1.0, f"smoothquant alpha must be in [0, 1], got {self.alpha}")


@TRANSFORMS.register
class SmoothQuant(Transform):
    name = "smoothquant"
    kind = "scale"
    Settings = SmoothQuantSettings
    NEEDS = Needs(ranges=True)

    def scale(self, stats, weights, settings: SmoothQuantSettings, scheme) -> torch.Tensor:
        return smoothquant_scale(stats.absmax, weights, settings.alpha)
