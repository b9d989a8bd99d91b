"""AWQ (Lin et al. 2023, arXiv 2306.00978, Sec. 3.2-3.3), written from the paper.

Scale search: s = mean|X_j|^a (normalised by sqrt(max * min)), a on a grid in [0, 1); keep the a
that minimises the output error of the group's linears with quantized W * s and inputs X / s.
Clipping search: per (output channel, group), shrink the weight range by a ratio in [0.5, 1]
to minimise that group's partial output error.
"""

from typing import Sequence

import torch

from fptq.primitives import fake_quant_weight, group_bounds
from fptq.scheme import WeightSpec


def _output_error(
    X: torch.Tensor,
    weights: Sequence[torch.Tensor],
    refs: Sequence[torch.Tensor],
    s: torch.Tensor,
    spec: WeightSpec,
) -> float:
    Xs = X / s
    err = 0.0
    for W, ref in zip(weights, refs, strict=True):
        Wq = fake_quant_weight(W * s, spec.bits, spec.group, spec.symmetric)
        err += float((Xs @ Wq.T - ref).pow(2).mean())
    return err


@torch.no_grad()
def awq_scale(X: torch.Tensor, weights: Sequence[torch.Tensor], spec: WeightSpec) -> torch.Tensor:
    """X: (tokens, in) calibration sample; weights: each (out_i, in) -> s: (in,)."""
    X = X.float()
    weights = [w.float() for w in weights]
    refs = [X @ W.T for W in weights]  # float outputs, the same for every grid point
    x_mean = X.abs().mean(0).clamp(min=1e-6)
    best, best_s = float("inf"), torch.ones_like(x_mean)
    for k in range(spec.awq_grid):
        a = k / spec.awq_grid
        s = x_mean.pow(a).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        err = _output_error(X, weights, refs, s, spec)
        if err < best:
            best, best_s = err, s
    return best_s


@torch.no_grad()
def awq_clip(
    X: torch.Tensor, W: torch.Tensor, spec: WeightSpec, steps: int = 20, min_ratio: float = 0.5
) -> torch.Tensor:
    """Best clipping ratio per (output channel, group): (out, n_groups), 1.0 = no clipping."""
    X, W = X.float(), W.float()
    bounds = group_bounds(W.shape[1], spec.group)
    best_err = torch.full((W.shape[0], len(bounds)), float("inf"), device=W.device)
    best = torch.ones_like(best_err)
    for k in range(steps):
        ratio = 1.0 - (1.0 - min_ratio) * k / max(steps - 1, 1)
        clip = torch.full_like(best, ratio)
        D = W - fake_quant_weight(W, spec.bits, spec.group, spec.symmetric, clip)
        for g, (a, b) in enumerate(bounds):
            err = (X[:, a:b] @ D[:, a:b].T).pow(2).mean(0)  # (out,)
            better = err < best_err[:, g]
            best_err[better, g] = err[better]
            best[better, g] = ratio
    return best
