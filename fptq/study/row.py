"""A results-store row: one finished job, typed and versioned.

    Row(experiment, model, scheme, weight, act, job_key, ..., settings, metrics, quant, run, version)

`settings` is the job's resolved spec flattened (`flatten_spec`), so a new option of a spec, a
method's settings or a plug-in's shows up in the row, and as a table column wherever an experiment
varies it, with no edit anywhere else. Keys name the spec's path without `quant.`: `weight.bits`,
`weight.group_size` (0: per channel), `weight.gptq.damp`, `act.strategy`, `act.fptq.v0`,
`transforms`, `smoothquant.alpha`, `kv.bits`, `calib.n_samples`, `eval.seqlen`, `seed`.
`metrics` holds the numbers measured (`ppl_<set>`, `fp_ppl_<set>`, `windows_<set>`, `<task>_acc`,
MMLU and common-sense averages); `quant` what quantization reports (`quantize_s`, `packed_bytes`,
`n_<mode>` layer counts, `data_free`); `run` where and how it ran.

Rows written before this layout (version 1: one flat dict with hand-named keys such as `v0`,
`gptq_damp`, `w_bits`) are read through `Row.from_dict`, which maps their keys to these.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

ROW_VERSION = 2

# spec fields that say where things go or how they are shown, or that the row names elsewhere
_NOT_SETTINGS = {
    "experiment_name",
    "resume",
    "device",
    "paths",
    "logger",
    "save",
    "data",
    "model.path",
    "model.name",
    "model.hf_id",
    "model.config",
    "quant.name",
    "eval.progress",
    "eval.task_data",
    "eval.datasets",
    "eval.tasks",
    "eval.baseline",
    "eval.batch_size",
}


def _value(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True) if v else None
    return v


def _flatten(obj: Any, path: str, out: Dict[str, Any]) -> None:
    for f in dataclasses.fields(obj):
        full = f"{path}.{f.name}" if path else f.name
        if full in _NOT_SETTINGS:
            continue
        key = full.removeprefix("quant.")
        v = getattr(obj, f.name)
        if "per_method" in f.metadata:  # the chosen method(s)' settings, named by the method
            if f.metadata["inline"]:
                chosen = f.metadata["select"]({g.name: getattr(obj, g.name) for g in dataclasses.fields(obj)})
                base = key.rpartition(".")[0]
                _flatten(v, f"{base}.{chosen}" if base else chosen, out)
            else:
                for name, s in (v or {}).items():
                    _flatten(s, name, out)
            continue
        if dataclasses.is_dataclass(v):
            _flatten(v, full, out)
        elif v is None and f.type and "Spec" in str(f.type):
            continue  # an absent axis (float weights, no activation quantization)
        else:
            out[key] = _value(v)


def flatten_spec(spec: Any) -> Dict[str, Any]:
    """The resolved settings of a job (a RunSpec), flat, as the row's `settings`."""
    out: Dict[str, Any] = {}
    _flatten(spec, "", out)
    return out


@dataclass
class Row:
    experiment: str
    model: str
    scheme: str  # the preset's name (quant.name)
    weight: str = "none"  # the weight axis' label, e.g. int4_g128_gptq
    act: str = "none"  # the activation axis' label, e.g. fptq
    job_key: Optional[str] = None
    config_key: Optional[str] = None
    code_version: Optional[str] = None
    run_id: Optional[str] = None
    finished_at: str = ""
    settings: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)
    quant: Dict[str, Any] = field(default_factory=dict)
    run: Dict[str, Any] = field(default_factory=dict)
    version: int = ROW_VERSION

    _TOP = (
        "experiment",
        "model",
        "scheme",
        "weight",
        "act",
        "job_key",
        "config_key",
        "code_version",
        "run_id",
        "finished_at",
    )

    def get(self, key: str, default: Any = None) -> Any:
        """A value by its name, wherever the row keeps it (the columns of the tables)."""
        if key in self._TOP:
            return getattr(self, key)
        for part in (self.metrics, self.settings, self.quant, self.run):
            if key in part:
                return part[key]
        return default

    def __getitem__(self, key: str) -> Any:
        v = self.get(key, _MISSING)
        if v is _MISSING:
            raise KeyError(key)
        return v

    def __contains__(self, key: str) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def keys(self):
        return [*self._TOP, *self.metrics, *self.settings, *self.quant, *self.run]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Row":
        """A row as stored: this version's layout, or a version-1 flat row (migrated)."""
        if d.get("version") == ROW_VERSION:
            return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})
        return _from_v1(d)


_MISSING = object()

# version-1 flat keys -> settings keys
_V1_SETTINGS = {
    "w_bits": "weight.bits",
    "w_algo": "weight.algo",
    "group_size": "weight.group_size",
    "w_scale_rule": "weight.scale_rule",
    "w_zero_point": "weight.zero_point",
    "w_mse": "weight.mse",
    "gptq_damp": "weight.gptq.damp",
    "gptq_act_order": "weight.gptq.act_order",
    "true_sequential": "weight.gptq.true_sequential",
    "a_bits": "act.bits",
    "a_scale_rule": "act.scale_rule",
    "act_strategy": "act.strategy",
    "v0": "act.fptq.v0",
    "v1": "act.fptq.v1",
    "middle_band": "act.fptq.middle_band",
    "lae": "act.fptq.lae",
    "equalizer": "act.equalizer",
    "lae_linear": "act.lae_linear",
    "auto_budget_db": "act.auto.budget_db",
    "act_overrides": "act.overrides",
    "kv_bits": "kv.bits",
    "kv_position": "kv.position",
    "transforms": "transforms",
    "calib_source": "calib.source",
    "calib_seqlen": "calib.seqlen",
    "seed": "seed",
    "seqlen": "eval.seqlen",
    "eval_limit": "eval.limit",
    "mmlu_limit": "eval.mmlu_limit",
    "mmlu_shots": "eval.mmlu_shots",
    "backend": "backend",
    "onload": "model.onload",
    "model_dtype": "model.dtype",
}
_V1_QUANT = ("quantize_s", "packed_bytes", "mean_output_sqnr_db", "data_free")
_V1_RUN = (
    "overrides",
    "output_dir",
    "git_commit",
    "device",
    "checkpoint",
    "total_s",
    "calib_seed",
    "calib_seed_fixed",
)
_V1_SKIP = {"granularity", "calib_n", *Row._TOP}


def _from_v1(d: Dict[str, Any]) -> Row:
    settings: Dict[str, Any] = {}
    metrics: Dict[str, Any] = {}
    quant: Dict[str, Any] = {}
    run: Dict[str, Any] = {}
    for k, v in d.items():
        if k in _V1_SETTINGS:
            if v is not None:
                settings[_V1_SETTINGS[k]] = v
        elif k in _V1_QUANT or k.startswith("n_"):
            quant[k] = v
        elif k in _V1_RUN:
            run[k] = v
        elif k not in _V1_SKIP:
            metrics[k] = v
    if d.get("calib_n") is not None:
        settings["calib.data_free_sample" if d.get("data_free") else "calib.n_samples"] = d["calib_n"]
    if settings.get("kv.bits") == 16:
        settings["kv.bits"] = 0  # version 1 wrote 16 for a float cache
    if d.get("w_bits", 16) != 16 and d.get("group_size") is None and "weight.bits" in settings:
        settings["weight.group_size"] = 0  # version 1 wrote None for per channel
    if settings.get("weight.bits") == 16:
        settings = {k: v for k, v in settings.items() if not k.startswith("weight.")}
    if settings.get("act.bits") == 16:
        settings = {k: v for k, v in settings.items() if not k.startswith("act.")}
    strategy, algo = settings.get("act.strategy"), settings.get("weight.algo")
    settings = {
        k: v
        for k, v in settings.items()
        if not (k.startswith("act.fptq.") and strategy != "fptq")
        and not (k.startswith("act.auto.") and strategy != "auto")
        and not (k.startswith("weight.gptq.") and algo != "gptq")
    }
    return Row(
        experiment=str(d.get("experiment")),
        model=str(d.get("model")),
        scheme=str(d.get("scheme")),
        weight=d.get("weight") or "none",
        act=d.get("act") or "none",
        job_key=d.get("job_key"),
        config_key=d.get("config_key"),
        code_version=d.get("code_version"),
        run_id=d.get("run_id"),
        finished_at=str(d.get("finished_at", "")),
        settings=settings,
        metrics=metrics,
        quant=quant,
        run={**run, "migrated_from_version": 1},
    )
