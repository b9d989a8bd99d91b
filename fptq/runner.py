"""One run: load -> calibrate -> quantize -> evaluate -> record. Takes a validated RunSpec."""

import json
import logging
import platform
import subprocess
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from fptq import __version__
from fptq.config import RunSpec
from fptq.data import calibration_ids, eval_tokens
from fptq.eval.perplexity import perplexity
from fptq.models import load_model
from fptq.pipeline import quantize_model
from fptq.results import ResultStore, write_json_atomic
from fptq.runlog import make_logger

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "-uno"], cwd=REPO, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(device)


class BaselineCache:
    """Unquantized perplexities, keyed by model and protocol, so sweeps compute them once."""

    def __init__(self, cache_dir: str):
        self.path = Path(cache_dir).expanduser() / "baselines.json"

    def _read(self) -> Dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        return self._read().get(key)

    def put(self, key: str, value: Dict[str, Any]) -> None:
        data = self._read()
        data[key] = value
        write_json_atomic(self.path, data)


def baseline_key(spec: RunSpec, dataset: str) -> str:
    m = spec.model
    ident = m.path or m.hf_id or (json.dumps(m.config, sort_keys=True) + f"/seed{m.seed}")
    return f"{m.name}|{m.source}|{ident}|{m.dtype}|bos={m.add_bos}|{dataset}|{spec.eval.seqlen}|{spec.eval.max_windows}|{spec.data.source}"


def run(spec: RunSpec, out_dir: str, config: Dict[str, Any], overrides: str = "") -> Dict[str, Any]:
    t_start = time.perf_counter()
    torch.manual_seed(spec.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(spec.device)
    scheme = spec.quant
    run_name = f"{spec.model.name}/{scheme.name}"
    logger = make_logger(spec.logger, config, group=spec.experiment_name, name=run_name, out_dir=str(out))
    try:
        timings: Dict[str, float] = {}
        t = time.perf_counter()
        model, tok = load_model(spec.model, str(Path(spec.paths.cache_dir).expanduser()))
        model.to(device)
        timings["load_s"] = time.perf_counter() - t
        bos = tok.bos_token_id if spec.model.add_bos else None
        streams = {d: eval_tokens(d, tok, spec.data, spec.eval.seqlen) for d in spec.eval.datasets}

        def ppl(d: str, tag: str) -> Dict[str, Any]:
            e = spec.eval
            return perplexity(
                model, streams[d], e.seqlen, e.max_windows, bos, e.progress, desc=f"{tag} {d}"
            ).as_dict()

        baseline: Dict[str, Any] = {}
        cache = BaselineCache(spec.paths.cache_dir)
        if spec.eval.baseline and not scheme.is_float:
            t = time.perf_counter()
            for d in streams:
                key = baseline_key(spec, d)
                baseline[d] = cache.get(key)
                if baseline[d] is None:
                    baseline[d] = ppl(d, "fp")
                    cache.put(key, baseline[d])
            timings["baseline_eval_s"] = time.perf_counter() - t

        t = time.perf_counter()
        report = None
        if not scheme.is_float:
            calib = calibration_ids(spec.calib, tok, spec.data, model.config.vocab_size)
            timings["calib_data_s"] = time.perf_counter() - t
            report = quantize_model(
                model,
                scheme,
                calib,
                batch_size=spec.calib.batch_size,
                seed=spec.seed,
                progress=spec.eval.progress,
                propagate=spec.calib.propagate,
            )
            timings["quantize_s"] = report.seconds
        if spec.backend == "triton" and report is not None:
            import os

            if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
                raise RuntimeError(
                    "backend=triton needs a CUDA device (or TRITON_INTERPRET=1 on CPU, very slow)"
                )
            from fptq.kernels.linear import set_backend

            log.info("triton backend on %d quantized linears", set_backend(model, "triton"))
        t = time.perf_counter()
        metrics = {d: ppl(d, scheme.name) for d in streams}
        timings["eval_s"] = time.perf_counter() - t
        zeroshot = None
        if spec.eval.tasks:
            from fptq.eval.zeroshot import evaluate_tasks

            zeroshot = evaluate_tasks(
                model,
                tok,
                list(spec.eval.tasks),
                data_spec=spec.data,
                cache_dir=spec.paths.cache_dir,
                task_data=spec.eval.task_data,
                source=spec.eval.task_source,
                limit=spec.eval.limit,
                mmlu_limit=spec.eval.mmlu_limit,
                batch_size=spec.eval.batch_size,
                mmlu_shots=spec.eval.mmlu_shots,
                device=str(device),
                seed=spec.seed,
            )
            timings["tasks_s"] = zeroshot["summary"]["seconds"]
        if scheme.is_float:
            for d, r in metrics.items():
                cache.put(baseline_key(spec, d), r)
                baseline[d] = r
        timings["total_s"] = time.perf_counter() - t_start

        result = {
            "run_id": uuid.uuid4().hex[:12],
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "experiment_name": spec.experiment_name,
            "model": spec.model.name,
            "scheme": scheme.name,
            "spec": asdict(spec),
            "overrides": overrides,
            "metrics": {
                "ppl": metrics,
                "tasks": (zeroshot or {}).get("tasks", {}),
                "task_summary": (zeroshot or {}).get("summary", {}),
            },
            "baseline": {"ppl": baseline},
            "quant_summary": report.summary() if report else None,
            "timings": timings,
            "device": str(device),
            "backend": spec.backend,
            "versions": versions(),
            "git_commit": git_commit(),
            "output_dir": str(out.resolve()),
        }
        write_json_atomic(out / "result.json", result)
        if report is not None:
            (out / "quant_report.json").write_text(report.to_json())
        ResultStore(spec.paths.results_dir).append(store_row(result, spec))
        logger.log(
            {f"ppl/{d}": r["ppl"] for d, r in metrics.items()}
            | {f"fp_ppl/{d}": (r or {}).get("ppl") for d, r in baseline.items()}
            | timings
        )
        if report is not None:
            logger.log_table("quant_report", report.rows())
        if zeroshot:
            logger.log(
                {f"task/{k}": v for k, v in zeroshot["summary"].items() if isinstance(v, (int, float))}
            )
            logger.log_table("tasks", [{"task": k, **v} for k, v in zeroshot["tasks"].items()])
        return result
    finally:
        logger.finish()


def store_row(result: Dict[str, Any], spec: RunSpec) -> Dict[str, Any]:
    """One flat row of the results store (what analysis/ reads)."""
    q = spec.quant
    row = {
        "run_id": result["run_id"],
        "finished_at": result["finished_at"],
        "experiment": spec.experiment_name,
        "model": spec.model.name,
        "scheme": q.name,
        "w_bits": q.weight.bits if q.weight else 16,
        "w_algo": q.weight.algo if q.weight else None,
        "group_size": q.weight.group if q.weight else None,
        "a_bits": q.act.bits if q.act else 16,
        "act_strategy": q.act.strategy if q.act else None,
        "v0": q.act.v0 if q.act else None,
        "v1": q.act.v1 if q.act else None,
        "middle_band": q.act.middle_band if q.act else None,
        "kv_bits": q.kv.bits or 16,
        "transforms": ",".join(q.transforms),
        "calib_source": spec.calib.source,
        "calib_n": spec.calib.n_samples,
        "calib_seqlen": spec.calib.seqlen,
        "seed": spec.seed,
        "seqlen": spec.eval.seqlen,
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
    row["mean_output_sqnr_db"] = summary.get("mean_output_sqnr_db")
    for k, v in (summary.get("strategy_counts") or {}).items():
        row[f"n_{k}"] = v
    row["total_s"] = result["timings"]["total_s"]
    return row


def format_table(result: Dict[str, Any]) -> str:
    lines = [f"{'model':<16} {'scheme':<18} {'dataset':<10} {'windows':>9} {'ppl':>9} {'vs fp':>8}"]
    for d, r in result["metrics"]["ppl"].items():
        base = result["baseline"]["ppl"].get(d) or {}
        win = f"{r['windows']}/{r['total_windows']}"
        if base and result["scheme"] != "fp":
            lines.append(f"{result['model']:<16} {'fp':<18} {d:<10} {win:>9} {base['ppl']:>9.3f} {'':>8}")
        delta = f"{r['ppl'] - base['ppl']:+.3f}" if base and result["scheme"] != "fp" else ""
        lines.append(
            f"{result['model']:<16} {result['scheme']:<18} {d:<10} {win:>9} {r['ppl']:>9.3f} {delta:>8}"
        )
    tasks = result["metrics"].get("tasks") or {}
    if tasks:
        lines.append("")
        lines.append(f"{'task':<24} {'acc':>8} {'acc_norm':>9} {'n':>6}")
        for t, r in tasks.items():
            if t.startswith("mmlu_"):
                continue
            acc, accn = r.get("acc"), r.get("acc_norm")
            lines.append(
                f"{t:<24} {'' if acc is None else f'{acc:.4f}':>8} {'' if accn is None else f'{accn:.4f}':>9} {r.get('n', ''):>6}"
            )
        for k, v in (result["metrics"].get("task_summary") or {}).items():
            if k.startswith(("mmlu_", "commonsense_avg")) and isinstance(v, float):
                lines.append(f"{k:<24} {v:>8.4f}")
    return "\n".join(lines)
