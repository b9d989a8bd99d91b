"""Quantization scheme: frozen, validated at construction (torchao style).

A scheme is data. The pipeline reads it; baselines (SmoothQuant W8A8, GPTQ/AWQ W4A16) and FPTQ
are all different `QuantScheme` values through the same code path. A scheme holds the common grid
settings and, for each method it names (a weight quantizer, an activation strategy, transforms),
that method's own settings object (`fptq.quant.methods`): GPTQ's damp lives with GPTQ, FPTQ's
thresholds with FPTQ. Method names are checked against the registries; this module imports no
implementation.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from fptq.quant.granularity import GroupLayout, check_group_size, is_per_channel, resolve
from fptq.quant.kv import KV_POSITIONS, KVQuant
from fptq.quant.methods import (
    ACT_STRATEGIES,
    TRANSFORMS,
    WEIGHT_METHODS,
    Needs,
    check,
    method_settings_field,
    one_of,
)
from fptq.quant.modes import LayerMode
from fptq.quant.primitives import SCALE_RULES, STATIC_RANGES, ZERO_POINTS, Grid, search_static_scale

UNKNOWN_ARCH = ("error", "dynamic")
KV_GRANULARITIES = ("per_head_token",)
SCALE_DTYPES = ("model", "float32")


@dataclass(frozen=True)
class WeightSpec:
    """Weight quantization: `bits`-bit integers per output channel or per group of inputs, by the
    weight quantizer `algo` (a registered `fptq.quant.methods.WeightMethod`) with its `settings`."""

    bits: int = 4
    group_size: int = 128  # 0: per output channel; n: groups of n input columns (a ragged last one allowed)
    symmetric: bool = True
    # symmetric grids: scale = absmax / (2^(b-1) - 1) (`max`) or absmax / ((2^b - 1) / 2) with the
    # top value clamped (`half_range`, a finer grid); see fptq.quant.primitives
    scale_rule: str = "max"
    # asymmetric grids: an integer zero point (the range includes 0) or a float one ([min, max]
    # exactly, value = scale * q + offset; GGML Q4_1's grid)
    zero_point: str = "int"
    # shrink each group's range to the one minimising |W - Q(W)|^2.4 (GPTQ reference's `mse`)
    mse: bool = False
    # stored scales (and float zero points): the model's dtype, or float32 (more exact, 2x the bytes)
    scale_dtype: str = "model"
    algo: str = "rtn"  # a registered weight quantizer: rtn | gptq | awq | a plug-in's
    # the quantizer's own settings (its Settings dataclass; config: quant.weight.<algo>.<field>)
    settings: Any = method_settings_field("weight", lambda d: d.get("algo", "rtn"), inline=True)

    def __post_init__(self):
        check(2 <= self.bits <= 8, f"weight.bits must be in [2, 8], got {self.bits}")
        check_group_size(self.group_size)
        one_of(self.algo, WEIGHT_METHODS.names(), "weight.algo")
        object.__setattr__(self, "settings", self.method.settings(self.settings))
        one_of(self.scale_dtype, SCALE_DTYPES, "weight.scale_dtype")
        self.method.check_spec(self)
        one_of(self.scale_rule, SCALE_RULES, "weight.scale_rule")
        one_of(self.zero_point, ZERO_POINTS, "weight.zero_point")
        check(
            self.symmetric or self.scale_rule == "max",
            "weight.scale_rule applies to symmetric grids; an asymmetric one spans [min, max]",
        )
        check(
            not self.symmetric or self.zero_point == "int",
            "weight.zero_point=float needs weight.symmetric=false (a symmetric grid has no zero point)",
        )

    @property
    def method(self):
        return WEIGHT_METHODS.get(self.algo)

    @property
    def needs(self) -> Needs:
        return self.method.needs(self.settings)

    @property
    def grid(self) -> Grid:
        return Grid(self.bits, self.symmetric, self.scale_rule, self.zero_point)

    @property
    def per_channel(self) -> bool:
        return is_per_channel(self.group_size)

    def layout(self, in_features: int, name: str = "") -> GroupLayout:
        """This spec's groups on a layer with `in_features` inputs (an error if a group is wider)."""
        return resolve(self.group_size, in_features, name)

    @property
    def label(self) -> str:
        """The weight axis as the `weight` config group names it, e.g. int4_g128, int8_channel_gptq."""
        g = "channel" if self.per_channel else f"g{self.group_size}"
        sym = "" if self.symmetric else ("_asym_fzero" if self.zero_point == "float" else "_asym")
        rule = "_half" if self.scale_rule == "half_range" else ""
        mse = "_mse" if self.mse else ""
        algo = f"_{self.algo}" if self.method.in_label else ""
        return f"int{self.bits}_{g}{sym}{rule}{mse}{algo}"


@dataclass(frozen=True)
class ActSpec:
    """Input-activation quantization of every quantized linear.

    `strategy` (a registered `fptq.quant.methods.ActStrategy`) picks each layer's mode
    (`fptq.quant.modes.LayerMode`) with its own `settings`: `fptq` is the paper's layerwise picker
    on the calibration range v = max|X| (its thresholds v0/v1 are `quant.act.fptq.v0/v1`).
    """

    bits: int = 8
    strategy: str = "fptq"
    # the strategy's own settings (config: quant.act.<strategy>.<field>)
    settings: Any = method_settings_field("act", lambda d: d.get("strategy", "fptq"), inline=True)
    # the symmetric scale rule of every activation quantizer (static and per-token): max | half_range
    scale_rule: str = "max"
    # how each per-tensor static scale is calibrated: the raw max|X| (the paper), a clip ratio
    # searched for the least squared error on the calibration rows (mse), or a percentile of |X|
    static_range: str = "max"
    static_percentile: float = 99.99
    # fnmatch pattern on the module name -> per-layer mode, applied after the strategy (ablations)
    overrides: Dict[str, str] = field(default_factory=dict)
    # the transform that realises the LAE mode where a strategy picks it: FPTQ's `lae`, or
    # `smoothquant` in its place (the reviewers' control inside the same layerwise picker)
    equalizer: str = "lae"
    # the LAE mode also where a linear feeds the layer: down_proj through up_proj's output rows,
    # o_proj through v_proj's (one scale per kv-head channel); beyond the paper (norms only)
    lae_linear: bool = False

    def __post_init__(self):
        check(2 <= self.bits <= 8, f"act.bits must be in [2, 8], got {self.bits}")
        one_of(self.scale_rule, SCALE_RULES, "act.scale_rule")
        one_of(self.static_range, STATIC_RANGES, "act.static_range")
        check(
            0 < self.static_percentile <= 100,
            f"act.static_percentile must be in (0, 100], got {self.static_percentile}",
        )
        one_of(self.strategy, ACT_STRATEGIES.names(), "act.strategy")
        object.__setattr__(self, "settings", self.method.settings(self.settings))
        equalizers = [n for n, t in TRANSFORMS.items() if t.kind == "scale" and not t.NEEDS.quantized_weights]
        one_of(self.equalizer, equalizers, "act.equalizer")
        modes = [m.value for m in LayerMode]
        for pattern, mode in self.overrides.items():
            one_of(mode, modes, f"act.overrides[{pattern!r}] (a per-layer mode)")

    @property
    def method(self):
        return ACT_STRATEGIES.get(self.strategy)

    @property
    def needs(self) -> Needs:
        """The strategy's needs; an override to a static mode needs the ranges too."""
        n = self.method.needs(self.settings)
        if any(LayerMode(m).runtime.value == "static" for m in self.overrides.values()):
            n = n | Needs(ranges=True)
        if self.static_range != "max" and n.ranges:  # the search reads calibration rows
            n = n | Needs(sample_rows=True)
        return n

    def static_scale(self, absmax, X=None):
        """The per-tensor static scale of one layer (`act.static_range`), from its range and rows."""
        return search_static_scale(
            absmax, X, self.bits, self.scale_rule, self.static_range, self.static_percentile
        )

    @property
    def label(self) -> str:
        """The activation axis as the `act` config group names it, e.g. fptq, per_token_dynamic."""
        label = self.strategy if self.bits == 8 else f"{self.strategy}_a{self.bits}"
        label += "_half" if self.scale_rule == "half_range" else ""
        label += {"max": "", "mse": "_mse", "percentile": f"_p{self.static_percentile:g}"}[self.static_range]
        return label + ("_linear" if self.lae_linear and self.strategy != "auto" else "")


@dataclass(frozen=True)
class KVSpec:
    """KV-cache fake quantization (off when bits == 0): per head and per token, symmetric or not;
    the first `keep_first` positions at `keep_bits` (prompt-KV precision; `fptq.quant.kv`)."""

    bits: int = 0
    granularity: str = "per_head_token"
    # pre_rope: the k/v projections' outputs; post_rope: K after RoPE, as a serving engine caches it
    position: str = "pre_rope"
    symmetric: bool = True  # false: min/max per (token, head) with a zero point (QServe's KV4)
    keep_first: int = 0  # leading positions of every sequence kept at keep_bits (BiSup's prompt KV)
    keep_bits: int = 16  # 16: float; 8

    def __post_init__(self):
        check(self.bits in (0, 4, 8), f"kv.bits must be 0 (off), 4 or 8, got {self.bits}")
        one_of(self.position, KV_POSITIONS, "kv.position")
        one_of(self.granularity, KV_GRANULARITIES, "kv.granularity")
        check(self.keep_first >= 0, f"kv.keep_first must be >= 0, got {self.keep_first}")
        check(self.keep_bits in (8, 16), f"kv.keep_bits must be 8 or 16 (float), got {self.keep_bits}")
        check(
            self.keep_first == 0 or self.bits > 0,
            "kv.keep_first keeps leading positions above kv.bits; it needs kv.bits=4 or 8",
        )
        check(
            self.keep_first == 0 or self.keep_bits > self.bits,
            f"kv.keep_bits={self.keep_bits} must be above kv.bits={self.bits} (the kept positions are the precise ones)",
        )

    @property
    def quant(self) -> KVQuant:
        return KVQuant(self.bits, self.position, self.symmetric, self.keep_first, self.keep_bits)


def _used(d) -> Tuple[str, ...]:
    """The transforms a scheme's config data uses: its list, then the LAE equalizer."""
    act = d.get("act")
    eq = (act.get("equalizer", "lae"),) if act is not None else ()
    names = tuple(d.get("transforms") or ())
    return names + tuple(e for e in eq if e not in names)


@dataclass(frozen=True)
class QuantScheme:
    name: str = "fp"
    weight: Optional[WeightSpec] = None  # None: keep float weights
    act: Optional[ActSpec] = None  # None: weight-only (e.g. W4A16)
    # registered transforms applied before quantization, in this order, e.g. ("smoothquant",)
    transforms: Tuple[str, ...] = ()
    # each transform's own settings, for the transforms used (the list, and act.equalizer);
    # config: quant.transform_args.<transform>.<field>
    transform_args: Dict[str, Any] = method_settings_field("transform", lambda d: _used(d), inline=False)
    kv: KVSpec = field(default_factory=KVSpec)
    ignore: Tuple[str, ...] = ("lm_head",)  # fnmatch patterns on module names left in float
    # a model class with no ArchSpec: fail, or quantize every linear with RTN weights and
    # per-token dynamic activations (no equalization, no calibration), with a warning
    on_unknown_arch: str = "error"

    def __post_init__(self):
        check(bool(self.name), "quant.name must be a non-empty string")
        object.__setattr__(self, "transforms", tuple(self.transforms))
        object.__setattr__(self, "ignore", tuple(self.ignore))
        for t in self.transforms:
            one_of(t, TRANSFORMS.names(), "each of quant.transforms")
            check(
                self.weight is not None or not TRANSFORMS.get(t).NEEDS.quantized_weights,
                f"transform {t!r} searches with quantized weights; it needs quant.weight",
            )
        check(
            len(set(self.transforms)) == len(self.transforms),
            f"quant.transforms repeats a name: {self.transforms}",
        )
        given = dict(self.transform_args or {})
        used = self.used_transforms
        extra = sorted(set(given) - set(used))
        check(
            not extra,
            f"quant.transform_args has settings for {extra}, which the scheme does not use ({used})",
        )
        object.__setattr__(
            self, "transform_args", {n: TRANSFORMS.get(n).settings(given.get(n)) for n in used}
        )
        for n in used:
            TRANSFORMS.get(n).check_scheme(self.transform_args[n], self)
        if "awq" in self.transforms and "smoothquant" in self.transforms:
            raise ValueError("AWQ already searches per-channel scales; do not combine it with smoothquant")
        one_of(self.on_unknown_arch, UNKNOWN_ARCH, "quant.on_unknown_arch")

    @property
    def used_transforms(self) -> Tuple[str, ...]:
        """The transforms whose settings the scheme carries: its list, then the LAE equalizer."""
        return _used(
            {
                "transforms": self.transforms,
                "act": None if self.act is None else {"equalizer": self.act.equalizer},
            }
        )

    def transform_settings(self, name: str) -> Any:
        return self.transform_args[name]

    @property
    def needs(self) -> Needs:
        """The union of what the scheme's methods need."""
        n = Needs()
        if self.weight is not None:
            n = n | self.weight.needs
        if self.act is not None:
            n = n | self.act.needs
        for t in self.transforms:
            n = n | TRANSFORMS.get(t).needs(self.transform_args[t]) | Needs(ranges=True)
        return n

    @property
    def data_free(self) -> bool:
        """Needs no calibration: a weight quantizer and an activation strategy that read no
        statistics (RTN, MSE range search included; none or per-token dynamic everywhere) and no
        transform."""
        return not self.transforms and not self.needs.calibration

    @property
    def is_float(self) -> bool:
        return self.weight is None and self.act is None and self.kv.bits == 0 and not self.transforms
