"""A job's stable key: what it computes, not where or when it ran.

    job_key = sha256(resolved config without paths, loggers, progress bars and save targets;
                     the content identity of the model and of every data file the job reads;
                     the resolved device type; the code version)

A sweep that is launched again skips every job whose key already has a complete row in the
results store (`resume=true`, the default) and runs the rest: the ones that failed, were killed,
or never started. `resume=false` runs the job anyway and replaces its row.

The code version (`fptq.study.identity.code_version`, a digest of the package's numeric source) is part
of the key. A changed quantizer, transform, calibration or evaluation then gives new keys and the
sweep recomputes, instead of silently mixing rows of two versions of the algorithm in one table;
edits to presentation-only modules (CLI, tables, logging) keep the keys. Not the git commit: a
README or test change would then invalidate a finished study, and an installed wheel has no
commit. The store row also carries `config_key` (the same hash without the code version), so the
log says when rows of this job exist from another code version.
"""

import logging
from dataclasses import asdict
from typing import Any, Dict, Tuple

from fptq.data import calib_file, local_file
from fptq.hub import use_hub
from fptq.study.identity import code_version, digest, file_digest, model_identity
from fptq.study.spec import RunSpec

log = logging.getLogger(__name__)

# fields that say where things go or how they are shown, never what is computed
EXCLUDED = {
    "paths": None,
    "logger": None,
    "save": None,
    "resume": None,
    "resume_blocks": None,
    "device": None,  # replaced by the resolved device type
    "data": None,  # replaced by the content identity of each file read
    "eval": ("progress", "task_data"),
    "model": ("path",),  # replaced by the model's content identity
}


def _config(spec: RunSpec) -> Dict[str, Any]:
    cfg = asdict(spec)
    for k, fields in EXCLUDED.items():
        if fields is None:
            cfg.pop(k, None)
        else:
            for f in fields:
                cfg[k].pop(f, None)
    return cfg


def data_files(spec: RunSpec) -> Dict[str, str]:
    """The data sets a job reads: evaluation sets, and the calibration set if it calibrates."""
    names = {d: d for d in spec.eval.datasets}
    reads_calib = not (spec.quant.data_free and spec.calib.data_free_sample == 0)
    if not spec.quant.is_float and spec.model.source != "quantized" and reads_calib:
        f = calib_file(spec.calib)
        if f is not None:
            names[f"calib:{f}"] = f
    return names


def data_identity(spec: RunSpec) -> Dict[str, Any]:
    """Per data set read: "hub" when it comes from the hub, else the digest of the local file's
    bytes ("missing" when absent: preflight reports it)."""
    out: Dict[str, Any] = {}
    for label, name in data_files(spec).items():
        if use_hub(spec.data.source, f"data.{name}"):
            out[label] = "hub"
            continue
        try:
            out[label] = file_digest(local_file(name, spec.data))
        except FileNotFoundError:
            out[label] = "missing"
    if spec.eval.tasks:
        out["tasks"] = _tasks_identity(spec)
    return out


def _tasks_identity(spec: RunSpec) -> Any:
    from fptq.eval.tasks import task_data_root, task_files, tasks_from_hub

    if tasks_from_hub(spec.eval.task_source, spec.data):
        return "hub"
    try:
        root = task_data_root(spec.data, spec.eval.task_data)
    except FileNotFoundError:
        return "missing"
    files = [root / rel for t in spec.eval.tasks for rel in task_files(t, root)]
    return sorted((f.relative_to(root).as_posix(), f.stat().st_size) for f in files if f.is_file())


def job_key(spec: RunSpec, device_type: str) -> Tuple[str, Dict[str, Any]]:
    """(key, the parts it hashes). 16 hex digits; `parts["config_key"]` omits the code version."""
    parts = {
        "config": _config(spec),
        "model": model_identity(spec.model),
        "data": data_identity(spec),
        "device": device_type,
    }
    config_key = digest(parts)
    parts["code_version"] = code_version()
    return digest(parts), dict(parts, config_key=config_key)
