"""Quantization scheme: frozen, validated at construction (torchao style).

A scheme is data. The pipeline reads it; baselines (SmoothQuant W8A8, GPTQ/AWQ W4A16) and FPTQ
are all just different `QuantScheme` values through the same code path. Names (weight
algorithms, activation strategies, per-layer modes, transforms) are validated against the
registries that implement them, so there is one list of each.
"""

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from fptq.act import ACT_STRATEGIES, LayerMode
from fptq.granularity import GRANULARITIES, GroupLayout, resolve
from fptq.kv import KV_POSITIONS
from fptq.primitives import SCALE_RULES, ZERO_POINTS, Grid
from fptq.transforms import TRANSFORMS
from fptq.weight import WEIGHT_QUANTIZERS

MIDDLE_BAND = ("static", "dynamic")
UNKNOWN_ARCH = ("error", "dynamic")
KV_GRANULARITIES = ("per_head_token",)
SCALE_DTYPES = ("model", "float32")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _one_of(value, known, what: str) -> None:
    _check(value in known, f"{what} must be one of {tuple(known)}, got {value!r}")


@dataclass(frozen=True)
class WeightSpec:
    """Weight quantization: `bits`-bit integers, per output channel or per group of inputs."""

    bits: int = 4
    granularity: str = "group"  # channel | group
    group_size: int = 128  # used when granularity == "group"; a ragged last group is allowed
    symmetric: bool = True
    # symmetric grids: scale = absmax / (2^(b-1) - 1) (`max`) or absmax / ((2^b - 1) / 2) with the
    # top value clamped (`half_range`, a finer grid); see fptq.primitives
    scale_rule: str = "max"
    # asymmetric grids: an integer zero point (the range includes 0) or a float one ([min, max]
    # exactly, value = scale * q + offset; GGML Q4_1's grid)
    zero_point: str = "int"
    # shrink each group's range to the one minimising |W - Q(W)|^2.4 (GPTQ reference's `mse`)
    mse: bool = False
    # stored scales (and float zero points): the model's dtype, or float32 (more exact, 2x the bytes)
    scale_dtype: str = "model"
    algo: str = "rtn"  # a key of fptq.weight.WEIGHT_QUANTIZERS: rtn | gptq | awq (clipping search)
    # GPTQ (Frantar et al. 2022, arXiv 2210.17323)
    damp: float = 0.01  # fraction of mean(diag(H)) added to the diagonal
    block_size: int = 128  # lazy-batch block of columns
    act_order: bool = False  # quantize columns by decreasing diag(H); groups stay static
    # calibrate each sub-layer group of a block (q/k/v, o, gate/up, down) on the outputs of the
    # groups before it already quantized (GPTQ's --true-sequential), not on the float block
    true_sequential: bool = False
    # AWQ (Lin et al. 2023, arXiv 2306.00978): search a per-group clipping ratio (algo=awq)
    awq_clip: bool = True

    def __post_init__(self):
        _check(2 <= self.bits <= 8, f"weight.bits must be in [2, 8], got {self.bits}")
        _one_of(self.granularity, GRANULARITIES, "weight.granularity")
        if self.granularity == "group":
            _check(self.group_size >= 1, f"weight.group_size must be >= 1, got {self.group_size}")
        _one_of(self.algo, WEIGHT_QUANTIZERS.names(), "weight.algo")
        _one_of(self.scale_dtype, SCALE_DTYPES, "weight.scale_dtype")
        _check(0.0 < self.damp < 1.0, f"weight.damp must be in (0, 1), got {self.damp}")
        _check(self.block_size >= 1, f"weight.block_size must be >= 1, got {self.block_size}")
        _one_of(self.scale_rule, SCALE_RULES, "weight.scale_rule")
        _one_of(self.zero_point, ZERO_POINTS, "weight.zero_point")
        _check(
            self.symmetric or self.scale_rule == "max",
            "weight.scale_rule applies to symmetric grids; an asymmetric one spans [min, max]",
        )
        _check(
            not self.symmetric or self.zero_point == "int",
            "weight.zero_point=float needs weight.symmetric=false (a symmetric grid has no zero point)",
        )

    @property
    def grid(self) -> Grid:
        return Grid(self.bits, self.symmetric, self.scale_rule, self.zero_point)

    def layout(self, in_features: int, name: str = "") -> GroupLayout:
        """This spec's groups on a layer with `in_features` inputs (an error if a group is wider)."""
        return resolve(self.granularity, self.group_size, in_features, name)

    @property
    def group_size_or_none(self) -> Optional[int]:
        """The group size, or None for per-channel (for tables and the store)."""
        return self.group_size if self.granularity == "group" else None

    @property
    def label(self) -> str:
        """The weight axis as the `weight` config group names it, e.g. int4_g128, int8_channel_gptq."""
        g = f"g{self.group_size}" if self.granularity == "group" else "channel"
        sym = "" if self.symmetric else ("_asym_fzero" if self.zero_point == "float" else "_asym")
        rule = "_half" if self.scale_rule == "half_range" else ""
        mse = "_mse" if self.mse else ""
        algo = "" if self.algo == "rtn" else f"_{self.algo}"
        return f"int{self.bits}_{g}{sym}{rule}{mse}{algo}"


@dataclass(frozen=True)
class ActSpec:
    """Input-activation quantization of every quantized linear.

    `strategy` (a key of fptq.act.ACT_STRATEGIES) picks the per-layer mode. `fptq` is the paper's
    layerwise picker on the calibration range v = max|X|: v < v0 per-tensor static;
    v0 <= v <= v1 LAE + per-tensor static (norm-fed layers) or `middle_band` (others);
    v > v1 per-token dynamic.
    """

    bits: int = 8
    strategy: str = "fptq"
    v0: float = 15.0
    v1: float = 150.0
    middle_band: str = "static"  # static | dynamic, for middle-band layers with no foldable norm
    # fnmatch pattern on the module name -> per-layer mode, applied after the strategy (ablations)
    overrides: Dict[str, str] = field(default_factory=dict)
    # LAE off: middle-band norm-fed layers go static without equalization (ablation)
    lae: bool = True
    # the middle band's equalizer: FPTQ's LAE, or SmoothQuant's scale (alpha = quant.smoothquant_alpha)
    # in its place (the reviewers' control inside the same layerwise picker)
    equalizer: str = "lae"
    # the symmetric scale rule of every activation quantizer (static and per-token): max | half_range
    scale_rule: str = "max"
    # LAE also where a linear feeds the layer: down_proj through up_proj's output rows, o_proj
    # through v_proj's (one scale per kv-head channel); beyond the paper, which folds into norms only
    lae_linear: bool = False
    # strategy=auto: a layer goes static (or LAE + static) if its output SQNR on calibration rows
    # is within this many dB of per-token dynamic's (fptq.autopolicy)
    auto_budget_db: float = 1.0

    def __post_init__(self):
        _check(2 <= self.bits <= 8, f"act.bits must be in [2, 8], got {self.bits}")
        _one_of(self.scale_rule, SCALE_RULES, "act.scale_rule")
        _check(self.auto_budget_db >= 0, f"act.auto_budget_db must be >= 0, got {self.auto_budget_db}")
        _one_of(self.strategy, ACT_STRATEGIES.names(), "act.strategy")
        _check(0 <= self.v0 <= self.v1, f"act thresholds need 0 <= v0 <= v1, got v0={self.v0}, v1={self.v1}")
        _one_of(self.middle_band, MIDDLE_BAND, "act.middle_band")
        equalizers = [n for n in TRANSFORMS.names() if not TRANSFORMS.get(n).weight_aware]
        _one_of(self.equalizer, equalizers, "act.equalizer")
        modes = [m.value for m in LayerMode]
        for pattern, mode in self.overrides.items():
            _one_of(mode, modes, f"act.overrides[{pattern!r}] (a per-layer mode)")

    @property
    def label(self) -> str:
        """The activation axis as the `act` config group names it, e.g. fptq, per_token_dynamic."""
        label = self.strategy if self.bits == 8 else f"{self.strategy}_a{self.bits}"
        label += "_half" if self.scale_rule == "half_range" else ""
        return label + ("_linear" if self.lae_linear and self.strategy != "auto" else "")


@dataclass(frozen=True)
class KVSpec:
    """KV-cache fake quantization (off when bits == 0): symmetric, per head and per token."""

    bits: int = 0
    granularity: str = "per_head_token"
    # pre_rope: the k/v projections' outputs; post_rope: K after RoPE, as a serving engine caches it
    position: str = "pre_rope"

    def __post_init__(self):
        _check(self.bits in (0, 4, 8), f"kv.bits must be 0 (off), 4 or 8, got {self.bits}")
        _one_of(self.position, KV_POSITIONS, "kv.position")
        _one_of(self.granularity, KV_GRANULARITIES, "kv.granularity")


@dataclass(frozen=True)
class QuantScheme:
    name: str = "fp"
    weight: Optional[WeightSpec] = None  # None: keep float weights
    act: Optional[ActSpec] = None  # None: weight-only (e.g. W4A16)
    # keys of fptq.transforms.TRANSFORMS applied before quantization, e.g. ("smoothquant",)
    transforms: Tuple[str, ...] = ()
    smoothquant_alpha: float = 0.5  # SmoothQuant migration strength (Xiao et al. 2022)
    awq_grid: int = 20  # AWQ scale search: grid points for the exponent in [0, 1)
    kv: KVSpec = field(default_factory=KVSpec)
    ignore: Tuple[str, ...] = ("lm_head",)  # fnmatch patterns on module names left in float
    # a model class with no ArchSpec: fail, or quantize every linear with RTN weights and
    # per-token dynamic activations (no equalization, no calibration), with a warning
    on_unknown_arch: str = "error"

    def __post_init__(self):
        _check(bool(self.name), "quant.name must be a non-empty string")
        object.__setattr__(self, "transforms", tuple(self.transforms))
        object.__setattr__(self, "ignore", tuple(self.ignore))
        for t in self.transforms:
            _one_of(t, TRANSFORMS.names(), "each of quant.transforms")
            _check(
                self.weight is not None or not TRANSFORMS.get(t).weight_aware,
                f"transform {t!r} searches with quantized weights; it needs quant.weight",
            )
        _check(
            0.0 <= self.smoothquant_alpha <= 1.0,
            f"quant.smoothquant_alpha must be in [0, 1], got {self.smoothquant_alpha}",
        )
        _check(self.awq_grid >= 2, f"quant.awq_grid must be >= 2, got {self.awq_grid}")
        if "awq" in self.transforms and "smoothquant" in self.transforms:
            raise ValueError("AWQ already searches per-channel scales; do not combine it with smoothquant")
        _one_of(self.on_unknown_arch, UNKNOWN_ARCH, "quant.on_unknown_arch")

    @property
    def data_free(self) -> bool:
        """Needs no calibration: RTN weights (MSE range search included), no transforms, and no
        activation mode that reads a calibration range (none, or per-token dynamic everywhere)."""
        w, a = self.weight, self.act
        return (
            not self.transforms
            and (w is None or w.algo == "rtn")
            and (a is None or (a.strategy == "per_token_dynamic" and not a.overrides))
        )

    @property
    def is_float(self) -> bool:
        return self.weight is None and self.act is None and self.kv.bits == 0 and not self.transforms
