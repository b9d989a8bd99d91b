"""Function-preserving equivalence transforms: per-input-channel scales folded into the model.

Each transform computes a scale s from calibration statistics (a pure function) and `fold_scale`
applies X' = X / s to the source (a norm, or a preceding linear) and W' = W * s to the linears it
feeds. They are separate from quantization. Registered in `TRANSFORMS`, one signature each:
scale(stats, weights, scheme) -> s (in_features,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from fptq.registry import Registry
from fptq.transforms.awq import awq_scale
from fptq.transforms.fold import fold_scale
from fptq.transforms.lae import lae_scale
from fptq.transforms.smoothquant import smoothquant_scale

if TYPE_CHECKING:
    from fptq.calibration import ChannelStats
    from fptq.scheme import QuantScheme

ScaleFn = Callable[["ChannelStats", Sequence[torch.Tensor], "QuantScheme"], torch.Tensor]


@dataclass(frozen=True)
class Transform:
    scale: ScaleFn
    linear_fed: bool = False  # may also fold into a preceding linear, not only into a norm
    # searches with quantized weights: needs quant.weight, applied after activation equalization
    weight_aware: bool = False


def _lae(stats: ChannelStats, weights: Sequence[torch.Tensor], scheme: QuantScheme) -> torch.Tensor:
    return lae_scale(stats.absmax)


def _smoothquant(stats: ChannelStats, weights: Sequence[torch.Tensor], scheme: QuantScheme) -> torch.Tensor:
    return smoothquant_scale(stats.absmax, weights, scheme.smoothquant_alpha)


def _awq(stats: ChannelStats, weights: Sequence[torch.Tensor], scheme: QuantScheme) -> torch.Tensor:
    w = scheme.weight
    layout = w.layout(weights[0].shape[1])
    return awq_scale(stats.sample_tensor(), weights, w.grid, layout, scheme.awq_grid)


TRANSFORMS: Registry = Registry("transform")
TRANSFORMS.register("lae")(Transform(_lae))
TRANSFORMS.register("smoothquant")(Transform(_smoothquant))
TRANSFORMS.register("awq")(Transform(_awq, linear_fed=True, weight_aware=True))

__all__ = ["TRANSFORMS", "Transform", "awq_scale", "fold_scale", "lae_scale", "smoothquant_scale"]
