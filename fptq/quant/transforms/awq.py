"""AWQ's per-channel scale search (Lin et al. 2023, arXiv 2306.00978, Sec. 3.2), from the paper.

s = mean|X_j|^a (normalised by sqrt(max * min)), a on a grid in [0, 1); keep the a that minimises
the output error of the group's linears with quantized W * s and inputs X / s. The clipping
search that follows is a weight step: `fptq.quant.weight.awq`.
"""

from dataclasses import dataclass
from typing import Sequence

import torch

from fptq.quant.granularity import GroupLayout
from fptq.quant.methods import TRANSFORMS, Needs, Transform, check
from fptq.quant.primitives import Grid, fake_quant_weight


def _output_error(
    X: torch.Tensor,
    weights: Sequence[torch.Tensor],
    refs: Sequence[torch.Tensor],
    s: torch.Tensor,
    grid: Grid,
    layout: GroupLayout,
) -> float:
    Xs = X / s
    err = 0.0
    for W, ref in zip(weights, refs, strict=True):
        Wq = fake_quant_weight(W * s, grid, layout)
        err += float((Xs @ Wq.T - ref).pow(2).mean())
    return err


@torch.no_grad()
def awq_scale(
    X: torch.Tensor,
    weights: Sequence[torch.Tensor],
    grid: Grid,
    layout: GroupLayout,
    points: int = 20,
) -> torch.Tensor:
    """X: (tokens, in) calibration sample; weights: each (out_i, in) -> s: (in,)."""
    X = X.float()
    weights = [w.float() for w in weights]
    refs = [X @ W.T for W in weights]  # float outputs, the same for every grid point
    x_mean = X.abs().mean(0).clamp(min=1e-6)
    best, best_s = float("inf"), torch.ones_like(x_mean)
    for k in range(points):
        a = k / points
        s = x_mean.pow(a).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        err = _output_error(X, weights, refs, s, grid, layout)
        if err < best:
            best, best_s = err, s
    return best_s


@dataclass(frozen=True)
class AWQSettings:
    grid: int = 20  # grid points for the exponent in [0, 1)

    def __post_init__(self):
        check(self.grid >= 2, f"awq grid must be >= 2, got {self.grid}")


@TRANSFORMS.register
class AWQ(Transform):
    """AWQ's scale search: folds into norms and preceding linears; searches with quantized weights,
    so it runs after the activation equalizers and needs quant.weight."""

    name = "awq"
    kind = "scale"
    linear_fed = True
    Settings = AWQSettings
    NEEDS = Needs(ranges=True, sample_rows=True, quantized_weights=True)

    def scale(self, stats, weights, settings: AWQSettings, scheme) -> torch.Tensor:
        w = scheme.weight
        layout = w.layout(weights[0].shape[1])
        return awq_scale(stats.sample_tensor(), weights, w.grid, layout, settings.grid)
