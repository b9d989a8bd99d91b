"""AWQ's per-channel scale search (Lin et al. 2023, arXiv 2306.00978, Sec. 3.2), from the paper.

s = mean|X_j|^a (normalised by sqrt(max * min)), a on a grid in [0, 1); keep the a that minimises
the output error of the group's linears with quantized W * s and inputs X / s. The clipping
search that follows is a weight step: `fptq.weight.awq`.
"""

from typing import Sequence

import torch

from fptq.granularity import GroupLayout
from fptq.primitives import Grid, fake_quant_weight


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
