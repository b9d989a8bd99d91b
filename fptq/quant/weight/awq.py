"""AWQ's clipping search (Lin et al. 2023, arXiv 2306.00978, Sec. 3.3), written from the paper.

Per (output channel, group), shrink the weight range by a ratio in [min_ratio, 1] to minimise
that group's partial output error on calibration rows, then round to nearest. AWQ's per-channel
scale search is a transform (`fptq.quant.transforms.awq`); this is its weight step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from fptq.quant.granularity import GroupLayout
from fptq.quant.methods import WEIGHT_METHODS, Needs, WeightMethod
from fptq.quant.primitives import Grid, fake_quant_weight
from fptq.quant.weight.rtn import Codes, rtn_quantize

if TYPE_CHECKING:
    from fptq.quant.calibration import ChannelStats
    from fptq.quant.scheme import WeightSpec


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


@dataclass(frozen=True)
class AWQClipSettings:
    clip: bool = True  # false: plain RTN after AWQ's scale search (the `awq` transform)


@WEIGHT_METHODS.register
class AWQClip(WeightMethod):
    """The `awq` weight quantizer: clipping search on calibration rows (`awq_clip`), then RTN."""

    name = "awq"
    Settings = AWQClipSettings

    def needs(self, s: AWQClipSettings) -> Needs:
        return Needs(ranges=True, sample_rows=s.clip)

    def quantize(
        self, W: torch.Tensor, layout: GroupLayout, spec: WeightSpec, stats: Optional[ChannelStats], name: str
    ) -> Codes:
        clip = None
        if spec.settings.clip:
            if stats is None or not stats.sample:
                raise ValueError(f"{name}: AWQ clipping needs calibration rows")
            clip = awq_clip(stats.sample_tensor(), W, spec.grid, layout)
        return rtn_quantize(W, spec.grid, layout, clip)
