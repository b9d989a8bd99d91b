"""Activation strategies: decide, per linear, how its input is quantized.

Every strategy maps (v = max|X| of the layer input, whether a norm feeds it, ActSpec) to one of
the per-layer modes below. `fptq` is the paper's layerwise picker (arXiv 2308.15987, Sec. 3.3).
"""

import fnmatch
from typing import Optional

from fptq.registry import Registry
from fptq.scheme import ActSpec

STATIC, DYNAMIC, LAE, NONE = "per_tensor_static", "per_token_dynamic", "lae_static", "none"

ACT_STRATEGIES: Registry = Registry("activation strategy")


@ACT_STRATEGIES.register("per_tensor_static")
def _static(v: float, norm_fed: bool, spec: ActSpec) -> str:
    return STATIC


@ACT_STRATEGIES.register("per_token_dynamic")
def _dynamic(v: float, norm_fed: bool, spec: ActSpec) -> str:
    return DYNAMIC


@ACT_STRATEGIES.register("lae_static")
def _lae_static(v: float, norm_fed: bool, spec: ActSpec) -> str:
    """LAE wherever a norm can absorb it, per-tensor static everywhere."""
    return LAE if norm_fed else STATIC


@ACT_STRATEGIES.register("fptq")
def _fptq(v: float, norm_fed: bool, spec: ActSpec) -> str:
    """v < v0: static; v0 <= v <= v1: LAE + static (norm-fed) or `middle_band`; v > v1: dynamic."""
    if v < spec.v0:
        return STATIC
    if v <= spec.v1:
        if norm_fed:
            return LAE
        return STATIC if spec.middle_band == "static" else DYNAMIC
    return DYNAMIC


def choose_mode(name: str, v: float, norm_fed: bool, spec: ActSpec) -> str:
    """The per-layer mode for module `name`: strategy, then overrides, then LAE availability."""
    mode = ACT_STRATEGIES.get(spec.strategy)(v, norm_fed, spec)
    override = match_override(name, spec)
    if override is not None:
        mode = override
    if mode == LAE and not (norm_fed and spec.lae):
        mode = STATIC  # LAE needs a norm to absorb 1/s; `lae: false` ablates it
    return mode


def match_override(name: str, spec: ActSpec) -> Optional[str]:
    for pattern, mode in spec.overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            return mode
    return None


def quant_mode(mode: str) -> str:
    """Runtime input quantization of a layer: 'static', 'dynamic' or 'none'."""
    return {STATIC: "static", LAE: "static", DYNAMIC: "dynamic", NONE: "none"}[mode]
