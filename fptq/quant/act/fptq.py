"""FPTQ's layerwise activation policy (Li et al. 2023, arXiv 2308.15987, Sec. 3.3).

On each linear's calibration range v = max|X| (taken before any transform):
v < v0: per-tensor static int8; v0 <= v <= v1: LAE then per-tensor static where a norm (or, with
act.lae_linear, a linear) can absorb the scale, else `middle_band`; v > v1: per-token dynamic.
The thresholds' defaults (15 / 150) are the paper's and live only here.
"""

from dataclasses import dataclass

from fptq.quant.methods import ACT_STRATEGIES, ActStrategy, Needs, check, one_of
from fptq.quant.modes import LayerMode

MIDDLE_BAND = ("static", "dynamic")


@dataclass(frozen=True)
class FPTQSettings:
    v0: float = 15.0
    v1: float = 150.0
    middle_band: str = "static"  # static | dynamic: middle-band layers with nothing to absorb LAE
    lae: bool = True  # false: middle-band layers go static without equalization (ablation)

    def __post_init__(self):
        check(
            0 <= self.v0 <= self.v1, f"act.fptq thresholds need 0 <= v0 <= v1, got v0={self.v0}, v1={self.v1}"
        )
        one_of(self.middle_band, MIDDLE_BAND, "act.fptq.middle_band")


@ACT_STRATEGIES.register
class FPTQ(ActStrategy):
    name = "fptq"
    Settings = FPTQSettings
    NEEDS = Needs(ranges=True)

    def choose(self, v: float, can_lae: bool, s: FPTQSettings) -> LayerMode:
        if v < s.v0:
            return LayerMode.STATIC
        if v <= s.v1:
            if can_lae and s.lae:
                return LayerMode.LAE
            if can_lae:  # LAE ablated: the norm-fed layer goes static unequalized
                return LayerMode.STATIC
            return LayerMode.STATIC if s.middle_band == "static" else LayerMode.DYNAMIC
        return LayerMode.DYNAMIC
