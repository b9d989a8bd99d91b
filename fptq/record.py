"""What a finished run leaves behind: provenance, the result document, its flat results-store
row, and the console table."""

import json
import platform
import subprocess
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from fptq import __version__
from fptq.identity import source_tree
from fptq.report import QuantReport
from fptq.spec import RunSpec

# ---- provenance ---------------------------------------------------------------------------------


def git_commit() -> str:
    """The commit of fptq's own checkout (with -dirty), else "fptq <version>" (installed)."""
    top = source_tree()
    if top is None or not (top / ".git").exists():
        return f"fptq {__version__}"
    try:
        git = ["git", "-C", str(top)]
        sha = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "-uno"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else f"fptq {__version__}"
    except (OSError, subprocess.SubprocessError):
        return f"fptq {__version__}"


def versions() -> Dict[str, str]:
    import transformers

    out = {
        "fptq": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import lm_eval

        out["lm_eval"] = getattr(lm_eval, "__version__", "?")
    except ImportError:
        pass
    return out


# ---- the result document and its store row -----------------------------------------------------


def make_result(
    spec: RunSpec,
    *,
    out_dir: Path,
    overrides: str,
    ppl: Dict[str, Any],
    baseline: Dict[str, Any],
    zeroshot: Optional[Dict[str, Any]],
    report: Optional[QuantReport],
    timings: Dict[str, float],
    device: str,
) -> Dict[str, Any]:
    return {
        "run_id": uuid.uuid4().hex[:12],
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "experiment_name": spec.experiment_name,
        "model": spec.model.name,
        "scheme": spec.quant.name,
        "spec": asdict(spec),
        "overrides": overrides,
        "metrics": {
            "ppl": ppl,
            "tasks": (zeroshot or {}).get("tasks", {}),
            "task_summary": (zeroshot or {}).get("summary", {}),
        },
        "baseline": {"ppl": baseline},
        "quant_summary": report.summary() if report else None,
        "timings": timings,
        "device": device,
        "backend": spec.backend,
        "versions": versions(),
        "git_commit": git_commit(),
        "output_dir": str(out_dir.resolve()),
    }


def store_row(result: Dict[str, Any], spec: RunSpec) -> Dict[str, Any]:
    """One flat row of the results store (what analysis/ reads). `weight` and `act` name the two
    axes of a composition sweep (the `weight` and `act` config groups)."""
    q = spec.quant
    row = {
        "run_id": result["run_id"],
        "job_key": result.get("job_key"),
        "config_key": result.get("config_key"),
        "code_version": result.get("code_version"),
        "finished_at": result["finished_at"],
        "experiment": spec.experiment_name,
        "model": spec.model.name,
        "model_dtype": spec.model.dtype,
        "scheme": q.name,
        "weight": q.weight.label if q.weight else "none",
        "act": q.act.label if q.act else "none",
        "w_bits": q.weight.bits if q.weight else 16,
        "w_algo": q.weight.algo if q.weight else None,
        "granularity": q.weight.granularity if q.weight else None,
        "group_size": q.weight.group_size_or_none if q.weight else None,
        "w_scale_rule": q.weight.scale_rule if q.weight else None,
        "w_zero_point": (q.weight.zero_point if not q.weight.symmetric else None) if q.weight else None,
        "w_mse": q.weight.mse if q.weight else None,
        "gptq_damp": q.weight.damp if q.weight and q.weight.algo == "gptq" else None,
        "gptq_act_order": q.weight.act_order if q.weight and q.weight.algo == "gptq" else None,
        "true_sequential": q.weight.true_sequential if q.weight and not q.data_free else None,
        "a_bits": q.act.bits if q.act else 16,
        "a_scale_rule": q.act.scale_rule if q.act else None,
        "act_strategy": q.act.strategy if q.act else None,
        "v0": q.act.v0 if q.act else None,
        "v1": q.act.v1 if q.act else None,
        "middle_band": q.act.middle_band if q.act else None,
        "lae": q.act.lae if q.act else None,
        "equalizer": q.act.equalizer if q.act else None,
        "lae_linear": q.act.lae_linear if q.act else None,
        "auto_budget_db": q.act.auto_budget_db if q.act and q.act.strategy == "auto" else None,
        "act_overrides": json.dumps(q.act.overrides, sort_keys=True) if q.act and q.act.overrides else None,
        "kv_bits": q.kv.bits or 16,
        "kv_position": q.kv.position if q.kv.bits else None,
        "transforms": ",".join(q.transforms),
        "data_free": q.data_free,  # no calibration (RTN, dynamic or no activation quantization)
        "calib_source": spec.calib.source,
        # calibration samples read (a data-free scheme reads a few for its output SQNR only)
        "calib_n": spec.calib.data_free_sample if q.data_free else spec.calib.n_samples,
        "calib_seqlen": spec.calib.seqlen,
        "seed": spec.seed,
        "calib_seed": spec.calib_seed,  # the seed the crops used (calib.seed if set, else seed)
        "calib_seed_fixed": spec.calib.seed is not None,
        "seqlen": spec.eval.seqlen,
        "eval_limit": spec.eval.limit,
        "mmlu_limit": spec.eval.mmlu_limit,
        "mmlu_shots": spec.eval.mmlu_shots if "mmlu" in spec.eval.tasks else None,
        "backend": spec.backend,
        "onload": spec.model.onload,
        "checkpoint": result.get("checkpoint"),  # saved to, or evaluated from (model=saved)
        "overrides": result["overrides"],
        "output_dir": result["output_dir"],
        "git_commit": result["git_commit"],
        "device": result["device"],
    }
    for d, r in result["metrics"]["ppl"].items():
        row[f"ppl_{d}"] = r["ppl"]
        row[f"windows_{d}"] = r["windows"]
    for d, r in result["baseline"]["ppl"].items():
        row[f"fp_ppl_{d}"] = (r or {}).get("ppl")
    for task, r in result["metrics"]["tasks"].items():
        if task.startswith("mmlu_"):
            continue  # per-subject MMLU stays in result.json; the store gets the averages
        for m in ("acc", "acc_norm", "perplexity"):
            if r.get(m) is not None:
                row[f"{task}_{m}"] = r[m]
                if r.get(f"{m}_stderr") is not None:
                    row[f"{task}_{m}_stderr"] = r[f"{m}_stderr"]
    for k, v in result["metrics"]["task_summary"].items():
        if isinstance(v, (int, float)) and k != "seconds":
            row[k] = v
    summary = result["quant_summary"] or {}
    row["quantize_s"] = summary.get("quantize_seconds")
    row["packed_bytes"] = summary.get("mem_packed_bytes")
    row["mean_output_sqnr_db"] = summary.get("mean_output_sqnr_db")
    for k, v in (summary.get("strategy_counts") or {}).items():
        row[f"n_{k}"] = v
    row["total_s"] = result["timings"]["total_s"]
    return row


# ---- console table ------------------------------------------------------------------------------


def _fmt(v: Optional[float], spec: str) -> str:
    return "" if v is None else format(v, spec)


def format_table(result: Dict[str, Any]) -> str:
    """Perplexity per set (with the fp row and the gap), then task accuracies, as plain text."""
    model, scheme = result["model"], result["scheme"]
    is_fp = scheme == "fp"
    lines = [f"{'model':<16} {'scheme':<18} {'dataset':<10} {'windows':>9} {'ppl':>9} {'vs fp':>8}"]
    for d, r in result["metrics"]["ppl"].items():
        base = result["baseline"]["ppl"].get(d) or {}
        win = f"{r['windows']}/{r['total_windows']}"
        if base and not is_fp:
            lines.append(f"{model:<16} {'fp':<18} {d:<10} {win:>9} {base['ppl']:>9.3f} {'':>8}")
        delta = f"{r['ppl'] - base['ppl']:+.3f}" if base and not is_fp else ""
        lines.append(f"{model:<16} {scheme:<18} {d:<10} {win:>9} {r['ppl']:>9.3f} {delta:>8}")
    tasks = {t: r for t, r in (result["metrics"].get("tasks") or {}).items() if not t.startswith("mmlu_")}
    if tasks:
        lines += ["", f"{'task':<24} {'acc':>8} {'acc_norm':>9} {'n':>6}"]
        for t, r in tasks.items():
            acc, accn = _fmt(r.get("acc"), ".4f"), _fmt(r.get("acc_norm"), ".4f")
            lines.append(f"{t:<24} {acc:>8} {accn:>9} {r.get('n', ''):>6}")
    for k, v in (result["metrics"].get("task_summary") or {}).items():
        if k.startswith(("mmlu_", "commonsense_avg")) and isinstance(v, float):
            lines.append(f"{k:<24} {v:>8.4f}")
    return "\n".join(lines)
