"""Round-to-nearest weight quantization (per channel or per group, ragged last group allowed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import torch

from fptq.granularity import GroupLayout
from fptq.primitives import Grid, mse_clip, quantize_weight

if TYPE_CHECKING:
    from fptq.calibration import ChannelStats
    from fptq.scheme import WeightSpec

Codes = Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]  # q (out, in), scale, zero (out, n_groups)


def rtn_quantize(
    W: torch.Tensor, grid: Grid, layout: GroupLayout, clip: Optional[torch.Tensor] = None
) -> Codes:
    """W: (out, in) -> integer codes (out, in), scale (out, n_groups), zero (out, n_groups) | None."""
    return quantize_weight(W.float(), grid, layout, clip)


def quantize_rtn(
    W: torch.Tensor, layout: GroupLayout, spec: WeightSpec, stats: Optional[ChannelStats], name: str
) -> Codes:
    """The `rtn` weight quantizer (needs no calibration statistics); `weight.mse` shrinks each
    group's range to the MSE-best one first (data-free too)."""
    W = W.float()
    return rtn_quantize(W, spec.grid, layout, mse_clip(W, spec.grid, layout) if spec.mse else None)
