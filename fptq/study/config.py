"""The Hydra bridge: DictConfig <-> the library's frozen specs, and nothing else.

The schema (generated from `fptq.study.spec.RunSpec` and registered in Hydra's ConfigStore as
`run_schema`) makes a typo or a wrongly typed value fail at compose time; `to_run_spec` then
builds the frozen dataclasses, whose `__post_init__` checks the values (bits, thresholds, group
sizes...) before any work starts. Only this module and `fptq.study.cli` know about Hydra.

A spec field that holds a method's settings (`fptq.quant.methods.method_settings_field`) becomes
one node per registered method, with that method's settings and defaults: `quant.weight.gptq.damp`,
`quant.act.fptq.v0`, `quant.transform_args.smoothquant.alpha`. A plug-in registered before this
module is imported (`$FPTQ_PLUGINS`, entry points) gets its node the same way. `to_run_spec` keeps
only the settings of the methods the config chooses, so the job key never depends on which other
methods exist.
"""

import dataclasses
import difflib
import typing
from dataclasses import field
from typing import Any, Dict, List, Optional, Tuple, Union

from omegaconf import DictConfig, OmegaConf

from fptq.study.spec import RunSpec

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


def _per_method_nodes(f: dataclasses.Field):
    """(name, schema type, default) of one node per registered method of the field's kind."""
    from fptq.quant.methods import REGISTRIES

    out = []
    for name, method in REGISTRIES[f.metadata["per_method"]].items():
        sch = schema_of(method.Settings)
        out.append((name, sch, field(default_factory=sch)))
    return out


def schema_of(cls: type) -> type:
    """A non-frozen dataclass with cls's fields (tuples as lists), for Hydra's ConfigStore."""
    if cls not in _SCHEMAS:
        hints = typing.get_type_hints(cls)
        fields = []
        for f in dataclasses.fields(cls):
            if "per_method" not in f.metadata:
                fields.append((f.name, _schema_type(hints[f.name]), _schema_default(f)))
            elif f.metadata["inline"]:
                own = {g.name for g in dataclasses.fields(cls)}
                for node in _per_method_nodes(f):
                    if node[0] in own:
                        raise TypeError(f"a method named {node[0]!r} clashes with {cls.__name__}.{node[0]}")
                    fields.append(node)
            else:
                nodes = dataclasses.make_dataclass(f"{cls.__name__}_{f.name}_Conf", _per_method_nodes(f))
                _register_schema(nodes)
                fields.append((f.name, nodes, field(default_factory=nodes)))
        schema = dataclasses.make_dataclass(cls.__name__ + "Conf", fields)
        _register_schema(schema)
        _SCHEMAS[cls] = schema
    return _SCHEMAS[cls]


def _register_schema(schema: type) -> None:
    """Importable as fptq.study.config.<Name>, so configs holding it pickle (submitit launchers send
    the composed config to each job's process)."""
    if schema.__name__ in globals():
        raise TypeError(
            f"two spec or settings classes named {schema.__name__[:-4]}: schema names must be unique"
        )
    schema.__module__ = __name__
    globals()[schema.__name__] = schema


def _check_all_nodes(kind: str, nodes: Dict[str, Any], owner: type) -> None:
    """Every method node's values are validated, chosen or not: a bad value never waits for the
    sweep that chooses its method."""
    from fptq.quant.methods import REGISTRIES

    for name, method in REGISTRIES[kind].items():
        if isinstance(nodes.get(name), dict):
            method.settings(nodes[name])


def _known_keys(cls: type) -> List[str]:
    """The config keys a node of spec `cls` may hold: its fields, and for a per-method field the
    registered methods' names (inline) or the field's own name."""
    from fptq.quant.methods import REGISTRIES

    keys = []
    for f in dataclasses.fields(cls):
        if "per_method" in f.metadata and f.metadata["inline"]:
            keys += REGISTRIES[f.metadata["per_method"]].names()
        else:
            keys.append(f.name)
    return keys


def _unknown(where: str, key: str, known: List[str], label: str) -> str:
    """The message for an unknown key under `where`, with the closest known key."""
    prefix = f"{where}." if where else ""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
    return f"unknown config key {prefix + key!r}{hint} ({label}: {', '.join(known)})"


def unknown_keys(cls: type, data: Any, where: str = "") -> List[str]:
    """Every key of `data` that no field of spec `cls` (recursively) or registered method takes,
    each with the closest known key. Hydra's `+key=value` adds keys that the schema would refuse
    without the `+`, and a silently ignored typo (`+quant.wieght.bits=8`) would run the default job
    under its job key."""
    from fptq.quant.methods import REGISTRIES

    if not isinstance(data, dict):
        return []
    hints = typing.get_type_hints(cls)
    known = _known_keys(cls)
    out = []
    for k, v in data.items():
        path = f"{where}.{k}" if where else str(k)
        if k not in known:
            out.append(_unknown(where, str(k), known, f"{where or 'the top level'} has"))
            continue
        f = next((f for f in dataclasses.fields(cls) if f.name == k), None)
        if f is None or not isinstance(v, dict):
            continue
        if "per_method" in f.metadata:  # not inline: {method name: settings}
            names = REGISTRIES[f.metadata["per_method"]].names()
            out += [_unknown(path, str(m), names, "known") for m in v if m not in names]
            continue
        tp = hints[k]
        if typing.get_origin(tp) is Union:
            tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
        if dataclasses.is_dataclass(tp):
            out += unknown_keys(tp, v, path)
    return out


def _build(cls: type, data: Any):
    if data is None:
        return None
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if "per_method" in f.metadata:  # the chosen method(s)' settings only
            chosen = f.metadata["select"](data)
            nodes = data if f.metadata["inline"] else (data.get(f.name) or {})
            _check_all_nodes(f.metadata["per_method"], nodes, cls)
            if f.metadata["inline"]:
                kwargs[f.name] = nodes.get(chosen)
            else:
                kwargs[f.name] = {n: nodes.get(n) for n in chosen}
            continue
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
    unknown = unknown_keys(RunSpec, data)
    if unknown:
        raise ValueError(
            unknown[0] if len(unknown) == 1 else "\n  - ".join(["unknown config keys:", *unknown])
        )
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
