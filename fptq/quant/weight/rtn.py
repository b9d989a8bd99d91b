"""Round-to-nearest weight quantization (per channel or per group, ragged last group allowed).

The `rtn` weight quantizer needs no calibration: a pass over the weights. `weight.mse` (a grid
setting) shrinks each group's range to the MSE-best one first, data-free too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import torch

from fptq.quant.granularity import GroupLayout
from fptq.quant.methods import WEIGHT_METHODS, Needs, WeightMethod
from fptq.quant.primitives import Grid, mse_clip, quantize_weight

if TYPE_CHECKING:
    from fptq.quant.calibration import ChannelStats
    from fptq.quant.scheme import WeightSpec

Codes = Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]  # q (out, in), scale, zero (out, n_groups)


def rtn_quantize(
    W: torch.Tensor, grid: Grid, layout: GroupLayout, clip: Optional[torch.Tensor] = None
) -> Codes:
    """W: (out, in) -> integer codes (out, in), scale (out, n_groups), zero (out, n_groups) | None."""
    return quantize_weight(W.float(), grid, layout, clip)


@WEIGHT_METHODS.register
class RTN(WeightMethod):
    name = "rtn"
    NEEDS = Needs()
    in_label = False  # the plain grid: int4_g128

    def quantize(
        self, W: torch.Tensor, layout: GroupLayout, spec: WeightSpec, stats: Optional[ChannelStats], name: str
    ) -> Codes:
        W = W.float()
        return rtn_quantize(W, spec.grid, layout, mse_clip(W, spec.grid, layout) if spec.mse else None)
