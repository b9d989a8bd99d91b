"""What a finished run leaves behind: provenance, the result document, its results-store row
(`fptq.study.row.Row`), and the console table."""

import platform
import subprocess
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from fptq import __version__
from fptq.quant.report import QuantReport
from fptq.study.identity import source_tree
from fptq.study.row import Row, flatten_spec
from fptq.study.spec import RunSpec

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


def store_row(result: Dict[str, Any], spec: RunSpec) -> Row:
    """The job's results-store row: its settings flattened from the spec (`flatten_spec`), what it
    measured, what quantization reported, and where it ran."""
    q = spec.quant
    metrics: Dict[str, Any] = {}
    for d, r in result["metrics"]["ppl"].items():
        metrics[f"ppl_{d}"] = r["ppl"]
        metrics[f"windows_{d}"] = r["windows"]
    for d, r in result["baseline"]["ppl"].items():
        metrics[f"fp_ppl_{d}"] = (r or {}).get("ppl")
    for task, r in result["metrics"]["tasks"].items():
        if task.startswith("mmlu_"):
            continue  # per-subject MMLU stays in result.json; the store gets the averages
        for m in ("acc", "acc_norm", "perplexity"):
            if r.get(m) is not None:
                metrics[f"{task}_{m}"] = r[m]
                if r.get(f"{m}_stderr") is not None:
                    metrics[f"{task}_{m}_stderr"] = r[f"{m}_stderr"]
    for k, v in result["metrics"]["task_summary"].items():
        if isinstance(v, (int, float)) and k != "seconds":
            metrics[k] = v
    summary = result["quant_summary"] or {}
    quant: Dict[str, Any] = {
        "quantize_s": summary.get("quantize_seconds"),
        "packed_bytes": summary.get("mem_packed_bytes"),
        "mean_output_sqnr_db": summary.get("mean_output_sqnr_db"),
        "data_free": q.data_free,  # no calibration (nothing in the scheme reads statistics)
    }
    for k, v in (summary.get("strategy_counts") or {}).items():
        quant[f"n_{k}"] = v
    for tname, info in (summary.get("transforms") or {}).items():  # e.g. quarot.r1, spinquant.loss_end
        for k, v in info.items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                quant[f"{tname}.{k}"] = v
    return Row(
        experiment=spec.experiment_name,
        model=spec.model.name,
        scheme=q.name,
        weight=q.weight.label if q.weight else "none",
        act=q.act.label if q.act else "none",
        job_key=result.get("job_key"),
        config_key=result.get("config_key"),
        code_version=result.get("code_version"),
        run_id=result["run_id"],
        finished_at=result["finished_at"],
        settings={**flatten_spec(spec), "calib_seed": spec.calib_seed},
        metrics=metrics,
        quant=quant,
        run={
            "checkpoint": result.get("checkpoint"),  # saved to, or evaluated from (model=saved)
            "overrides": result["overrides"],
            "output_dir": result["output_dir"],
            "git_commit": result["git_commit"],
            "device": result["device"],
            "total_s": result["timings"]["total_s"],
        },
    )


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
