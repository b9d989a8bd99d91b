"""Logarithmic Activation Equalization (FPTQ, arXiv 2308.15987, Sec. 3.2).

s_j = max|X_j| / log2(2 + max|X_j|), X' = X diag(s)^-1, W' = diag(s) W. The paper's scale uses
the per-channel absolute maximum (not the max-min range that llm-compressor's
`log_equalization` uses), has no weight term and no alpha. After LAE a channel of max m has max
log2(2 + m): 150 -> 7.25 (its weights grow 20.7x), which is why LAE is capped at v1.
"""

from dataclasses import dataclass

import torch

from fptq.quant.methods import TRANSFORMS, Needs, Transform

MIN_ABSMAX = 1e-5


def lae_scale(x_absmax: torch.Tensor) -> torch.Tensor:
    """x_absmax: (in_features,) max|X_j| over calibration tokens -> s: (in_features,)."""
    m = x_absmax.float().clamp(min=MIN_ABSMAX)
    return m / torch.log2(2.0 + m)


@dataclass(frozen=True)
class LAESettings:
    """LAE has no knob: no weight term, no alpha (the paper's definition)."""


@TRANSFORMS.register
class LAE(Transform):
    name = "lae"
    kind = "scale"
    Settings = LAESettings
    NEEDS = Needs(ranges=True)

    def scale(self, stats, weights, settings, scheme) -> torch.Tensor:
        return lae_scale(stats.absmax)
