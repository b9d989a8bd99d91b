"""Activation strategies: decide, per linear, how its input is quantized.

A strategy maps (v = max|X| of the layer input, whether an equalization scale can be folded into
what feeds it (a norm; a linear with act.lae_linear), the ActSpec) to one of
the per-layer modes in `LayerMode`. `fptq` is the paper's layerwise picker
(arXiv 2308.15987, Sec. 3.3). Strategies are registered in `ACT_STRATEGIES`; `fptq.scheme`
validates `act.strategy` against it.
"""

from __future__ import annotations

import fnmatch
from enum import Enum
from typing import TYPE_CHECKING, Optional

from fptq.registry import Registry

if TYPE_CHECKING:
    from fptq.scheme import ActSpec


class ActQuant(str, Enum):
    """Runtime input quantization of one QuantLinear."""

    NONE = "none"
    STATIC = "static"  # per-tensor, scale fixed at calibration
    DYNAMIC = "dynamic"  # per-token, scale computed per row at run time

    def __str__(self) -> str:
        return self.value


class LayerMode(str, Enum):
    """What the activation strategy decided for one layer (what the report and store count)."""

    STATIC = "per_tensor_static"
    DYNAMIC = "per_token_dynamic"
    LAE = "lae_static"  # logarithmic activation equalization folded into the norm, then static
    NONE = "none"  # float input (weight-only schemes)

    def __str__(self) -> str:
        return self.value

    @property
    def runtime(self) -> ActQuant:
        return {
            LayerMode.STATIC: ActQuant.STATIC,
            LayerMode.LAE: ActQuant.STATIC,
            LayerMode.DYNAMIC: ActQuant.DYNAMIC,
            LayerMode.NONE: ActQuant.NONE,
        }[self]


ACT_STRATEGIES: Registry = Registry("activation strategy")


@ACT_STRATEGIES.register("per_tensor_static")
def _static(v: float, foldable: bool, spec: ActSpec) -> LayerMode:
    return LayerMode.STATIC


@ACT_STRATEGIES.register("per_token_dynamic")
def _dynamic(v: float, foldable: bool, spec: ActSpec) -> LayerMode:
    return LayerMode.DYNAMIC


@ACT_STRATEGIES.register("lae_static")
def _lae_static(v: float, foldable: bool, spec: ActSpec) -> LayerMode:
    """LAE wherever a norm can absorb it, per-tensor static everywhere."""
    return LayerMode.LAE if foldable else LayerMode.STATIC


@ACT_STRATEGIES.register("fptq")
def _fptq(v: float, foldable: bool, spec: ActSpec) -> LayerMode:
    """v < v0: static; v0 <= v <= v1: LAE + static (norm-fed) or `middle_band`; v > v1: dynamic."""
    if v < spec.v0:
        return LayerMode.STATIC
    if v <= spec.v1:
        if foldable:
            return LayerMode.LAE
        return LayerMode.STATIC if spec.middle_band == "static" else LayerMode.DYNAMIC
    return LayerMode.DYNAMIC


@ACT_STRATEGIES.register("auto")
def _auto(v: float, foldable: bool, spec: ActSpec) -> LayerMode:
    """Measured per layer on calibration rows by the pipeline (fptq.autopolicy); v alone: dynamic."""
    return LayerMode.DYNAMIC


def choose_mode(name: str, v: float, foldable: bool, spec: ActSpec) -> LayerMode:
    """The per-layer mode for module `name`: strategy, then overrides, then LAE availability."""
    mode = ACT_STRATEGIES.get(spec.strategy)(v, foldable, spec)
    override = match_override(name, spec)
    if override is not None:
        mode = override
    if mode == LayerMode.LAE and not (foldable and spec.lae):
        mode = LayerMode.STATIC  # LAE needs a source to absorb 1/s; `lae: false` ablates it
    return mode


def match_override(name: str, spec: ActSpec) -> Optional[LayerMode]:
    for pattern, mode in spec.overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            return LayerMode(mode)
    return None
