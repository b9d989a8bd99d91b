"""The plug-in contract: a weight quantizer, an activation strategy or a transform is one module.

That module holds
- its own frozen settings dataclass (`Settings`), validated in `__post_init__`, whose fields are
  the method's knobs (GPTQ's damp, SmoothQuant's alpha, the auto policy's budget...);
- its function(s), pure over tensors where the algorithm allows;
- its declared needs (`Needs`): what the pipeline must collect or do for it;
and registers an instance of its class here, in the registry of its kind, at import:

    @WEIGHT_METHODS.register
    class GPTQ(WeightMethod):
        name = "gptq"
        Settings = GPTQSettings
        def needs(self, settings): return Needs(hessian=True, sequential=settings.true_sequential)
        def quantize(self, W, layout, spec, stats, name): ...

The specs (`fptq.quant.scheme`) name a method and carry its settings object; they look methods up
here and never import an implementation. The pipeline asks a method what it needs instead of
branching on names. The config (`fptq.study.config`) gives every registered method a node of its
own settings (`quant.weight.gptq.damp`, `quant.act.fptq.v0`, `quant.transform_args.smoothquant.
alpha`), so a typo fails at compose time and a new method needs no edit elsewhere.

Built-in methods are the modules of `fptq.quant.weight`, `fptq.quant.act` and
`fptq.quant.transforms` (a new file there is found, no list to edit); plug-ins are found, before
the first lookup, in the modules named by the environment variable `FPTQ_PLUGINS`
(comma-separated) and in the `fptq.plugins` entry-point group of installed packages.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping

if TYPE_CHECKING:
    import torch

    from fptq.quant.granularity import GroupLayout

PLUGINS_ENV = "FPTQ_PLUGINS"
ENTRY_POINT_GROUP = "fptq.plugins"
# every module of these packages is a built-in method file (imported before the first lookup)
BUILTIN_PACKAGES = ("fptq.quant.weight", "fptq.quant.act", "fptq.quant.transforms")


@dataclass(frozen=True)
class NoSettings:
    """The settings of a method that has none."""


@dataclass(frozen=True)
class Needs:
    """What a method needs from the pipeline (all false: a pass over the weights)."""

    ranges: bool = False  # per-channel max|X| of each linear's input (calibration)
    hessian: bool = False  # H = 2/n X^T X of each linear's input (GPTQ)
    sample_rows: bool = False  # calibration rows of each linear's input (AWQ's searches, the auto policy)
    # statistics re-collected per sub-layer group with the groups before it quantized
    sequential: bool = False
    quantized_weights: bool = False  # searches with quantized weights: needs quant.weight, runs last
    whole_model: bool = False  # acts on the whole model before the block loop (a residual rotation)
    online: bool = False  # installs an op in QuantLinear's input-transform slot (run at inference)

    def __or__(self, other: Needs) -> Needs:
        return Needs(
            **{f.name: getattr(self, f.name) or getattr(other, f.name) for f in dataclasses.fields(self)}
        )

    @property
    def calibration(self) -> bool:
        """Reads calibration data at all."""
        return self.ranges or self.hessian or self.sample_rows or self.sequential


class Method:
    """A registered method: a name, a settings class, declared needs."""

    name: str = ""
    Settings: type = NoSettings
    NEEDS: Needs = Needs()
    in_label: bool = True  # named in the axis label (`int4_g128_gptq`); the plain default is not

    def needs(self, settings: Any) -> Needs:
        return self.NEEDS

    def settings(self, value: Any = None) -> Any:
        """`value` (None, a mapping, or a Settings instance) as this method's validated Settings."""
        return coerce_settings(self.Settings, value, self.name)


class WeightMethod(Method):
    """quantize(W (out, in), layout, WeightSpec, stats or None, layer name) -> (codes, scale, zero),
    or, for a method whose `format` is "qoq", (codes, integer group scales, zero, channel scale).
    `check_spec(spec)` refuses, at compose time, grid settings the method cannot express."""

    format: str = "int"  # the packed format its codes are stored in (fptq.kernels.reference)

    def quantize(self, W: torch.Tensor, layout: GroupLayout, spec: Any, stats: Any, name: str):
        raise NotImplementedError

    def check_spec(self, spec: Any) -> None:
        """Raise ValueError if the weight spec's grid cannot be expressed by this method."""


class ActStrategy(Method):
    """Picks each linear's activation mode (a `fptq.quant.modes.LayerMode`) in one block.

    `plan(block)` gets a `fptq.quant.pipeline.BlockPlan` (the block's linears, their ranges v taken
    before any transform, the groups that can absorb an equalization scale, the calibration
    statistics, the scheme) and returns {linear name: LayerMode}. A strategy that decides from v
    alone implements `choose(v, can_lae, settings)`. Overrides (`act.overrides`) and the rule that
    LAE needs a group to absorb it are applied by the pipeline, once, after the plan.
    """

    def choose(self, v: float, can_lae: bool, settings: Any):
        raise NotImplementedError

    def plan(self, block: Any) -> Dict[str, Any]:
        s = block.scheme.act.settings
        return {n: self.choose(block.v[n], n in block.can_lae, s) for n in block.linears}


class Transform(Method):
    """A transform, separate from quantization. `kind`:
    - `scale`: a per-input-channel scale s folded into a FoldGroup (X / s into the source, W * s
      into the linears). `scale(stats, weights, settings, scheme)` -> s. `linear_fed`: may fold into
      a preceding linear too, not only into a norm.
    - `online`: for each linear it targets, an op R applied to the input at run time, with W' = W R^-T
      fused offline (`online_op(linear_name, in_features, settings, seed, arch)` -> a
      `fptq.quant.online.OnlineOp` or None). The op lives in QuantLinear's input-transform slot.
    - `model`: a whole-model rewrite before the block loop (`apply_model(model, arch, settings,
      ctx)` -> a dict of what it did, kept in the run's row), e.g. a rotation of the residual stream
      fused into the weights. A model transform may also install online ops (`online_op`, when its
      `needs(settings).online`), e.g. QuaRot's R4.

    Checks that need more than the settings: `check_scheme(settings, scheme)` at compose time (the
    rest of the scheme), `check_model(config, arch, settings)` before any work (the architecture and
    its sizes; preflight and the pipeline call it).
    """

    kind: str = "scale"
    linear_fed: bool = False

    def scale(self, stats: Any, weights: Any, settings: Any, scheme: Any):
        raise NotImplementedError

    def online_op(self, name: str, in_features: int, settings: Any, seed: int, arch: Any = None):
        raise NotImplementedError

    def apply_model(self, model: Any, arch: Any, settings: Any, ctx: ModelContext) -> Dict[str, Any]:
        raise NotImplementedError

    def check_scheme(self, settings: Any, scheme: Any) -> None:
        """Raise ValueError if the rest of the scheme contradicts this transform."""

    def check_model(self, config: Any, arch: Any, settings: Any) -> None:
        """Raise (NotImplementedError, ValueError) if this model cannot take the transform."""


@dataclass
class ModelContext:
    """What a model transform gets beyond its settings: the calibration ids (n, seqlen) or None,
    the whole scheme, the run's seed, whether to show progress."""

    calib_ids: Any = None
    scheme: Any = None
    seed: int = 0
    progress: bool = True


TRANSFORM_KINDS = ("scale", "online", "model")


class MethodRegistry:
    """Methods of one kind by name. Lookups load the built-in and plug-in modules first."""

    def __init__(self, kind: str, base: type):
        self.kind, self.base = kind, base
        self._items: Dict[str, Method] = {}

    def register(self, cls_or_obj):
        obj = cls_or_obj() if isinstance(cls_or_obj, type) else cls_or_obj
        if not isinstance(obj, self.base):
            raise TypeError(f"a {self.kind} must subclass {self.base.__name__}, got {type(obj).__name__}")
        if not obj.name:
            raise ValueError(f"{type(obj).__name__}: a {self.kind} needs a `name`")
        if not (dataclasses.is_dataclass(obj.Settings) and obj.Settings.__dataclass_params__.frozen):
            raise TypeError(f"{self.kind} {obj.name!r}: Settings must be a frozen dataclass")
        if isinstance(obj, Transform) and obj.kind not in TRANSFORM_KINDS:
            raise ValueError(
                f"transform {obj.name!r}: kind must be one of {TRANSFORM_KINDS}, got {obj.kind!r}"
            )
        old = self._items.get(obj.name)
        if old is not None and type(old).__qualname__ != type(obj).__qualname__:
            raise KeyError(f"{self.kind} {obj.name!r} is already registered (by {type(old).__module__})")
        self._items[obj.name] = obj
        return cls_or_obj

    def get(self, name: str) -> Method:
        load_methods()
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {self.names()}")
        return self._items[name]

    def names(self) -> List[str]:
        load_methods()
        return sorted(self._items)

    def items(self):
        load_methods()
        return sorted(self._items.items())


WEIGHT_METHODS = MethodRegistry("weight quantizer", WeightMethod)
ACT_STRATEGIES = MethodRegistry("activation strategy", ActStrategy)
TRANSFORMS = MethodRegistry("transform", Transform)
REGISTRIES = {"weight": WEIGHT_METHODS, "act": ACT_STRATEGIES, "transform": TRANSFORMS}

_loaded: List[str] = []


_entry_point_modules: List[str] = []


def plugin_modules() -> List[str]:
    """The plug-in modules to import: $FPTQ_PLUGINS, then the `fptq.plugins` entry points (read
    once per process)."""
    names = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    if not _entry_point_modules:
        found = ["-"]
        try:
            from importlib.metadata import entry_points

            found += [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]
        except Exception:  # a broken distribution's metadata must not stop fptq
            pass
        _entry_point_modules[:] = found
    return names + _entry_point_modules[1:]


def builtin_modules() -> List[str]:
    import pkgutil

    out = []
    for pkg in BUILTIN_PACKAGES:
        path = importlib.import_module(pkg).__path__
        out += [f"{pkg}.{m.name}" for m in sorted(pkgutil.iter_modules(path), key=lambda m: m.name)]
    return out


def load_methods() -> None:
    """Import the built-in method modules and the plug-ins (once; again for new $FPTQ_PLUGINS)."""
    plugins = plugin_modules()
    if _loaded and _loaded[1:] == plugins:
        return
    builtin = builtin_modules()
    for module in [*builtin, *plugins]:
        try:
            importlib.import_module(module)
        except ImportError as e:
            if module in builtin:
                raise
            raise ImportError(
                f"fptq plug-in {module!r} (from ${PLUGINS_ENV} or the {ENTRY_POINT_GROUP!r} entry points) "
                f"cannot be imported: {e}"
            ) from e
    _loaded[:] = ["-", *plugins]


def coerce_settings(cls: type, value: Any, owner: str) -> Any:
    """A frozen Settings instance from None (defaults), a mapping, or an instance; an unknown field
    is an error that names the known ones."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        raise ValueError(f"{owner}: settings must be {cls.__name__}, got {type(value).__name__}")
    if not isinstance(value, Mapping):
        raise ValueError(f"{owner}: settings must be a mapping of {cls.__name__}'s fields, got {value!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"{owner} has no setting {unknown[0]!r}; its settings are {known or 'none'}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            v = value[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


def settings_dict(settings: Any) -> Dict[str, Any]:
    return dataclasses.asdict(settings) if settings is not None else {}


def method_settings_field(kind: str, select, inline: bool):
    """A spec field that holds the settings object(s) of the method(s) the spec names, of registry
    `kind`. `select(data)` names them from the spec's other fields (a mapping). The config schema
    expands the field into one node per registered method: beside the spec's own fields when
    `inline` (quant.weight.gptq.damp), else under the field's name (quant.transform_args.awq.grid)."""
    return dataclasses.field(default=None, metadata={"per_method": kind, "select": select, "inline": inline})


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def one_of(value, known, what: str) -> None:
    check(value in known, f"{what} must be one of {tuple(known)}, got {value!r}")
