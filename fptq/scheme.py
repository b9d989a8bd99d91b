"""Quantization scheme: frozen, validated at construction (torchao style).

A scheme is data. The pipeline reads it; baselines (SmoothQuant W8A8, GPTQ/AWQ W4A16) and FPTQ
are all just different `QuantScheme` values through the same code path.
"""

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

WEIGHT_ALGOS = ("rtn", "gptq", "awq")
GRANULARITIES = ("channel", "group")
ACT_STRATEGIES = ("per_tensor_static", "per_token_dynamic", "lae_static", "fptq")
MIDDLE_BAND = ("static", "dynamic")
EQUALIZERS = ("lae", "smoothquant")
UNKNOWN_ARCH = ("error", "dynamic")
TRANSFORMS = ("smoothquant",)
KV_GRANULARITIES = ("per_head_token",)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class WeightSpec:
    """Weight quantization: `bits`-bit integers, per output channel or per group of inputs."""

    bits: int = 4
    granularity: str = "group"  # channel | group
    group_size: int = 128  # used when granularity == "group"; a ragged last group is allowed
    symmetric: bool = True
    algo: str = "rtn"  # rtn | gptq | awq
    # GPTQ (Frantar et al. 2022, arXiv 2210.17323)
    damp: float = 0.01  # fraction of mean(diag(H)) added to the diagonal
    block_size: int = 128  # lazy-batch block of columns
    act_order: bool = False  # quantize columns by decreasing diag(H); groups stay static
    # AWQ (Lin et al. 2023, arXiv 2306.00978)
    awq_grid: int = 20  # grid points for the scale exponent in [0, 1)
    awq_clip: bool = True  # search a per-group clipping ratio after scaling

    def __post_init__(self):
        _check(2 <= self.bits <= 8, f"weight.bits must be in [2, 8], got {self.bits}")
        _check(
            self.granularity in GRANULARITIES,
            f"weight.granularity must be one of {GRANULARITIES}, got {self.granularity!r}",
        )
        if self.granularity == "group":
            _check(self.group_size >= 1, f"weight.group_size must be >= 1, got {self.group_size}")
        _check(self.algo in WEIGHT_ALGOS, f"weight.algo must be one of {WEIGHT_ALGOS}, got {self.algo!r}")
        _check(0.0 < self.damp < 1.0, f"weight.damp must be in (0, 1), got {self.damp}")
        _check(self.block_size >= 1, f"weight.block_size must be >= 1, got {self.block_size}")
        _check(self.awq_grid >= 2, f"weight.awq_grid must be >= 2, got {self.awq_grid}")

    @property
    def group(self) -> int:
        """Group size along the input dimension; -1 means one group per output channel."""
        return self.group_size if self.granularity == "group" else -1


@dataclass(frozen=True)
class ActSpec:
    """Input-activation quantization of every quantized linear.

    `strategy` picks the per-layer mode. `fptq` is the paper's layerwise picker on the calibration
    range v = max|X|: v < v0 per-tensor static; v0 <= v <= v1 LAE + per-tensor static (norm-fed
    layers) or `middle_band` (others); v > v1 per-token dynamic.
    """

    bits: int = 8
    strategy: str = "fptq"
    v0: float = 15.0
    v1: float = 150.0
    middle_band: str = "static"  # static | dynamic, for middle-band layers with no foldable norm
    # fnmatch pattern on the module name -> strategy, applied after the picker (ablations)
    overrides: Dict[str, str] = field(default_factory=dict)
    # LAE off: middle-band norm-fed layers go static without equalization (ablation)
    lae: bool = True
    # the middle band's equalizer: FPTQ's LAE, or SmoothQuant's scale (alpha = quant.smoothquant_alpha)
    # in its place (the reviewers' control inside the same layerwise picker)
    equalizer: str = "lae"

    def __post_init__(self):
        _check(2 <= self.bits <= 8, f"act.bits must be in [2, 8], got {self.bits}")
        _check(
            self.strategy in ACT_STRATEGIES,
            f"act.strategy must be one of {ACT_STRATEGIES}, got {self.strategy!r}",
        )
        _check(0 <= self.v0 <= self.v1, f"act thresholds need 0 <= v0 <= v1, got v0={self.v0}, v1={self.v1}")
        _check(
            self.middle_band in MIDDLE_BAND,
            f"act.middle_band must be one of {MIDDLE_BAND}, got {self.middle_band!r}",
        )
        _check(
            self.equalizer in EQUALIZERS, f"act.equalizer must be one of {EQUALIZERS}, got {self.equalizer!r}"
        )
        for pattern, strategy in self.overrides.items():
            _check(
                strategy in ("per_tensor_static", "per_token_dynamic", "lae_static", "none"),
                f"act.overrides[{pattern!r}] = {strategy!r} is not a per-layer strategy "
                "(per_tensor_static, per_token_dynamic, lae_static, none)",
            )


@dataclass(frozen=True)
class KVSpec:
    """KV-cache fake quantization (off when bits == 0): symmetric, per head and per token."""

    bits: int = 0
    granularity: str = "per_head_token"

    def __post_init__(self):
        _check(self.bits in (0, 4, 8), f"kv.bits must be 0 (off), 4 or 8, got {self.bits}")
        _check(
            self.granularity in KV_GRANULARITIES,
            f"kv.granularity must be one of {KV_GRANULARITIES}, got {self.granularity!r}",
        )


@dataclass(frozen=True)
class QuantScheme:
    name: str = "fp"
    weight: Optional[WeightSpec] = None  # None: keep float weights
    act: Optional[ActSpec] = None  # None: weight-only (e.g. W4A16)
    transforms: Tuple[str, ...] = ()  # applied in order before quantization, e.g. ("smoothquant",)
    smoothquant_alpha: float = 0.5  # SmoothQuant migration strength (Xiao et al. 2022)
    kv: KVSpec = field(default_factory=KVSpec)
    ignore: Tuple[str, ...] = ("lm_head",)  # fnmatch patterns on module names left in float
    # a model class with no ArchSpec: fail, or quantize every linear with RTN weights and
    # per-token dynamic activations (no equalization, no calibration), with a warning
    on_unknown_arch: str = "error"

    def __post_init__(self):
        _check(bool(self.name), "quant.name must be a non-empty string")
        for t in self.transforms:
            _check(t in TRANSFORMS, f"unknown transform {t!r}; known: {TRANSFORMS}")
        _check(
            0.0 <= self.smoothquant_alpha <= 1.0,
            f"quant.smoothquant_alpha must be in [0, 1], got {self.smoothquant_alpha}",
        )
        if self.weight is not None and self.weight.algo == "awq" and "smoothquant" in self.transforms:
            raise ValueError("AWQ already searches per-channel scales; do not combine it with smoothquant")
        _check(
            self.on_unknown_arch in UNKNOWN_ARCH,
            f"quant.on_unknown_arch must be one of {UNKNOWN_ARCH}, got {self.on_unknown_arch!r}",
        )
        object.__setattr__(self, "transforms", tuple(self.transforms))
        object.__setattr__(self, "ignore", tuple(self.ignore))

    @property
    def is_float(self) -> bool:
        return self.weight is None and self.act is None and self.kv.bits == 0 and not self.transforms

    def describe(self) -> str:
        w = "W16" if self.weight is None else f"W{self.weight.bits}"
        a = "A16" if self.act is None else f"A{self.act.bits}"
        return f"{self.name} ({w}{a})"
