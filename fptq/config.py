"""The Hydra bridge: DictConfig <-> the library's frozen specs, and nothing else.

The schema (generated from `fptq.spec.RunSpec` and registered in Hydra's ConfigStore as
`run_schema`) makes a typo or a wrongly typed value fail at compose time; `to_run_spec` then
builds the frozen dataclasses, whose `__post_init__` checks the values (bits, thresholds, group
sizes...) before any work starts. Only this module and `fptq.cli` know about Hydra.
"""

import dataclasses
import typing
from dataclasses import field
from typing import Any, Dict, List, Optional, Tuple, Union

from omegaconf import DictConfig, OmegaConf

from fptq.spec import RunSpec

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
        schema = dataclasses.make_dataclass(cls.__name__ + "Conf", fields)
        # importable as fptq.config.<Name>Conf, so configs holding it pickle (submitit launchers
        # send the composed config to each job's process)
        if schema.__name__ in globals():
            raise TypeError(f"two spec classes named {cls.__name__}: schema names must be unique")
        schema.__module__ = __name__
        globals()[schema.__name__] = schema
        _SCHEMAS[cls] = schema
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


RUN_SCHEMA = schema_of(RunSpec)  # built at import: a job process unpickling a config finds it


def register_configs() -> None:
    """The schema, and the `fptq.uid` resolver of the run folders (a random id drawn once per
    config and cached, so a sweep's launcher and its jobs agree on the folder)."""
    import uuid

    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RUN_SCHEMA)
    if not OmegaConf.has_resolver("fptq.uid"):
        OmegaConf.register_new_resolver("fptq.uid", lambda: uuid.uuid4().hex[:6], use_cache=True)


__all__ = ["register_configs", "schema_of", "to_run_spec"]
