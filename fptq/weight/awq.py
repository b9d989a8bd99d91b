"""AWQ's clipping search (Lin et al. 2023, arXiv 2306.00978, Sec. 3.3), written from the paper.

Per (output channel, group), shrink the weight range by a ratio in [min_ratio, 1] to minimise
that group's partial output error on calibration rows, then round to nearest. AWQ's per-channel
scale search is a transform (`fptq.transforms.awq`); this is its weight step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from fptq.granularity import GroupLayout
from fptq.primitives import Grid, fake_quant_weight
from fptq.weight.rtn import Codes, rtn_quantize

if TYPE_CHECKING:
    from fptq.calibration import ChannelStats
    from fptq.scheme import WeightSpec


@torch.no_grad()
def awq_clip(
    X: torch.Tensor,
    W: torch.Tensor,
    grid: Grid,
    layout: GroupLayout,
    steps: int = 20,
    min_ratio: float = 0.5,
) -> torch.Tensor:
    """Best clipping ratio per (output channel, group): (out, n_groups), 1.0 = no clipping.

    X: (tokens, in) calibration rows, W: (out, in).
    """
    X, W = X.float(), W.float()
    bounds = layout.bounds()
    best_err = torch.full((W.shape[0], len(bounds)), float("inf"), device=W.device)
    best = torch.ones_like(best_err)
    for k in range(steps):
        ratio = 1.0 - (1.0 - min_ratio) * k / max(steps - 1, 1)
        clip = torch.full_like(best, ratio)
        D = W - fake_quant_weight(W, grid, layout, clip)
        for g, (a, b) in enumerate(bounds):
            err = (X[:, a:b] @ D[:, a:b].T).pow(2).mean(0)  # (out,)
            better = err < best_err[:, g]
            best_err[better, g] = err[better]
            best[better, g] = ratio
    return best


def quantize_awq(
    W: torch.Tensor, layout: GroupLayout, spec: WeightSpec, stats: Optional[ChannelStats], name: str
) -> Codes:
    """The `awq` weight quantizer: clipping search on calibration rows (`awq_clip`), then RTN."""
    clip = None
    if spec.awq_clip:
        if stats is None or not stats.sample:
            raise ValueError(f"{name}: AWQ clipping needs calibration rows")
        clip = awq_clip(stats.sample_tensor(), W, spec.grid, layout)
    return rtn_quantize(W, spec.grid, layout, clip)
