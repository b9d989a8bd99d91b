"""Hydra structured configs, generated from the library's frozen spec dataclasses.

The schema (registered in Hydra's ConfigStore as `run_schema`) makes a typo or a wrongly typed
value fail at compose time; `to_run_spec` then builds the frozen dataclasses, whose
`__post_init__` checks the values (bits, thresholds, group sizes...) before any work starts.
Only this module and `fptq.cli` know about Hydra.
"""

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from omegaconf import DictConfig, OmegaConf

from fptq.data import EVAL_SETS, CalibSpec, DataSpec
from fptq.models import ModelSpec
from fptq.runlog import LoggerSpec
from fptq.scheme import ActSpec, KVSpec, QuantScheme, WeightSpec

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("reference", "triton")


@dataclass(frozen=True)
class EvalSpec:
    datasets: Tuple[str, ...] = ("wikitext2",)  # perplexity sets: wikitext2, ptb, c4
    seqlen: int = 2048
    max_windows: Optional[int] = 8  # None: the whole test set (WikiText-2: 148 windows of 2048)
    baseline: bool = True  # also report the unquantized model (cached per model and protocol)
    progress: bool = True
    # lm-eval tasks: lambada_openai, piqa, arc_easy, arc_challenge, hellaswag, winogrande, boolq,
    # openbookqa, mmlu (57 subjects, `mmlu_shots`-shot)
    tasks: Tuple[str, ...] = ()
    limit: Optional[int] = None  # documents per task (None: all)
    mmlu_limit: Optional[int] = None  # questions per MMLU subject (None: eval.limit)
    batch_size: int = 8
    mmlu_shots: int = 5
    task_source: str = "auto"  # auto (hub when reachable) | hub | local
    task_data: Optional[str] = None  # local task data folder (default: the shared data folder)

    def __post_init__(self):
        from fptq.eval.tasks import KNOWN_TASKS

        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        for t in self.tasks:
            if t not in KNOWN_TASKS:
                raise ValueError(f"unknown task {t!r}; known: {list(KNOWN_TASKS)}")
        if self.task_source not in ("auto", "hub", "local"):
            raise ValueError(f"eval.task_source must be auto, hub or local, got {self.task_source!r}")
        if self.mmlu_limit is not None and self.mmlu_limit < 1:
            raise ValueError(f"eval.mmlu_limit must be >= 1 or null, got {self.mmlu_limit}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"eval.limit must be >= 1 or null (all), got {self.limit}")
        if self.batch_size < 1 or self.mmlu_shots < 0:
            raise ValueError("eval.batch_size must be >= 1 and eval.mmlu_shots >= 0")
        for d in self.datasets:
            if d not in EVAL_SETS:
                raise ValueError(f"unknown evaluation set {d!r}; known: {EVAL_SETS}")
        if self.seqlen < 2:
            raise ValueError(f"eval.seqlen must be >= 2, got {self.seqlen}")
        if self.max_windows is not None and self.max_windows < 1:
            raise ValueError(f"eval.max_windows must be >= 1 or null (all), got {self.max_windows}")


@dataclass(frozen=True)
class PathsSpec:
    cache_dir: str = "~/.cache/fptq"  # converted models, fp baselines
    results_dir: str = "results"  # the results store (results.jsonl) that analysis/ reads


@dataclass(frozen=True)
class RunSpec:
    experiment_name: str = "adhoc"
    seed: int = 0
    device: str = "auto"
    backend: str = (
        "reference"  # quantized linears: reference (float simulation) | triton (packed W4A8/W8A8 kernels)
    )
    model: ModelSpec = field(default_factory=ModelSpec)
    quant: QuantScheme = field(default_factory=QuantScheme)
    calib: CalibSpec = field(default_factory=CalibSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    data: DataSpec = field(default_factory=DataSpec)
    logger: LoggerSpec = field(default_factory=LoggerSpec)
    paths: PathsSpec = field(default_factory=PathsSpec)

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")


# ---- schema generation: frozen dataclass -> mutable OmegaConf-friendly dataclass -------------

_SCHEMAS: Dict[type, type] = {}


def _schema_type(tp):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return schema_of(tp)
    if origin is Union:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        return Optional[_schema_type(inner[0])]
    if origin in (tuple, Tuple):
        return List[args[0]]
    if origin in (dict, Dict):
        return Dict[args[0], args[1]]
    return tp


def _schema_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        d = f.default
        if isinstance(d, tuple):
            return field(default_factory=lambda d=d: list(d))
        if d is not None and dataclasses.is_dataclass(d):
            return field(default_factory=lambda d=d: schema_of(type(d))(**_as_schema_kwargs(d)))
        return field(default=d)
    if f.default_factory is not dataclasses.MISSING:
        factory = f.default_factory
        if dataclasses.is_dataclass(factory):
            return field(default_factory=schema_of(factory))
        return field(default_factory=lambda fac=factory: _to_schema_value(fac()))
    return field(default=dataclasses.MISSING)


def _as_schema_kwargs(obj) -> dict:
    return {f.name: _to_schema_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _to_schema_value(v):
    if dataclasses.is_dataclass(v):
        return schema_of(type(v))(**_as_schema_kwargs(v))
    if isinstance(v, tuple):
        return list(v)
    return v


def schema_of(cls: type) -> type:
    """A non-frozen dataclass with cls's fields (tuples as lists), for Hydra's ConfigStore."""
    if cls not in _SCHEMAS:
        hints = typing.get_type_hints(cls)
        fields = [(f.name, _schema_type(hints[f.name]), _schema_default(f)) for f in dataclasses.fields(cls)]
        _SCHEMAS[cls] = dataclasses.make_dataclass(cls.__name__ + "Conf", fields)
    return _SCHEMAS[cls]


def _build(cls: type, data: Any):
    if data is None:
        return None
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        v = data[f.name]
        tp = hints[f.name]
        if typing.get_origin(tp) is Union:
            tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
        if dataclasses.is_dataclass(tp):
            v = _build(tp, v)
        elif typing.get_origin(tp) in (tuple, Tuple) and v is not None:
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def to_run_spec(cfg: DictConfig) -> RunSpec:
    """Validated frozen specs from a composed config (raises ValueError with a clear message)."""
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    data.pop("hydra", None)
    return _build(RunSpec, data)


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=schema_of(RunSpec))


__all__ = [
    "ActSpec",
    "CalibSpec",
    "DataSpec",
    "EvalSpec",
    "KVSpec",
    "LoggerSpec",
    "ModelSpec",
    "PathsSpec",
    "QuantScheme",
    "RunSpec",
    "WeightSpec",
    "register_configs",
    "schema_of",
    "to_run_spec",
]
