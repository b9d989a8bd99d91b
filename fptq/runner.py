"""One run as named steps: load -> baseline -> quantize -> evaluate -> record.

`run` takes a validated `RunSpec`; each step is a function of it. Everything a finished run
produces goes through `record`: result.json, quant_report.json, one results-store row, W&B.
"""

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from fptq.baseline import BaselineCache
from fptq.data import calibration_ids, eval_tokens
from fptq.eval.perplexity import perplexity
from fptq.files import write_json_atomic
from fptq.models import load_model
from fptq.pipeline import quantize_model
from fptq.qlinear import check_kernel_device, set_backend
from fptq.record import make_result, store_row
from fptq.report import QuantReport
from fptq.results import ResultStore
from fptq.runlog import make_logger
from fptq.spec import RunSpec

log = logging.getLogger(__name__)
Streams = Dict[str, torch.Tensor]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(device)


@contextmanager
def _timed(timings: Dict[str, float], key: str):
    t = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t


# ---- steps --------------------------------------------------------------------------------------


def load(spec: RunSpec, device: torch.device) -> Tuple[torch.nn.Module, Any, Streams]:
    """The float model on `device`, its tokenizer, and the evaluation token streams."""
    model, tok = load_model(spec.model, str(Path(spec.paths.cache_dir).expanduser()))
    model.to(device)
    streams = {d: eval_tokens(d, tok, spec.data, spec.eval.seqlen) for d in spec.eval.datasets}
    return model, tok, streams


def ppl(spec: RunSpec, model, tok, streams: Streams, dataset: str, tag: str) -> Dict[str, Any]:
    e = spec.eval
    bos = tok.bos_token_id if spec.model.add_bos else None
    return perplexity(
        model, streams[dataset], e.seqlen, e.max_windows, bos, e.progress, desc=f"{tag} {dataset}"
    ).as_dict()


def baseline(spec: RunSpec, model, tok, streams: Streams) -> Dict[str, Any]:
    """fp perplexities of the still-float model (cached per model and protocol)."""
    if not spec.eval.baseline or spec.quant.is_float:
        return {}
    return BaselineCache(spec.paths.cache_dir).get_or_compute(
        spec, streams, lambda d: ppl(spec, model, tok, streams, d, "fp")
    )


def quantize(spec: RunSpec, model, tok, timings: Dict[str, float]) -> Optional[QuantReport]:
    """Calibrate and quantize in place, then switch to the chosen backend."""
    if spec.quant.is_float:
        return None
    with _timed(timings, "calib_data_s"):
        calib = calibration_ids(spec.calib, tok, spec.data, model.config.vocab_size)
    report = quantize_model(
        model,
        spec.quant,
        calib,
        batch_size=spec.calib.batch_size,
        seed=spec.seed,
        progress=spec.eval.progress,
        propagate=spec.calib.propagate,
    )
    timings["quantize_s"] = report.seconds
    if spec.backend != "reference":
        log.info("%s backend on %d quantized linears", spec.backend, set_backend(model, spec.backend))
    return report


def evaluate(
    spec: RunSpec, model, tok, streams: Streams, device: torch.device, timings: Dict[str, float]
) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """Perplexity on every set, then the lm-eval tasks if any."""
    with _timed(timings, "eval_s"):
        ppls = {d: ppl(spec, model, tok, streams, d, spec.quant.name) for d in streams}
    if not spec.eval.tasks:
        return ppls, None
    from fptq.eval.zeroshot import evaluate_tasks

    e = spec.eval
    zeroshot = evaluate_tasks(
        model,
        tok,
        list(e.tasks),
        data_spec=spec.data,
        cache_dir=spec.paths.cache_dir,
        task_data=e.task_data,
        source=e.task_source,
        limit=e.limit,
        mmlu_limit=e.mmlu_limit,
        batch_size=e.batch_size,
        mmlu_shots=e.mmlu_shots,
        device=str(device),
        seed=spec.seed,
    )
    timings["tasks_s"] = zeroshot["summary"]["seconds"]
    return ppls, zeroshot


def record(spec: RunSpec, out: Path, result: Dict[str, Any], report: Optional[QuantReport], logger) -> None:
    """Write result.json (atomic), quant_report.json, one store row, and the W&B summary."""
    write_json_atomic(out / "result.json", result)
    if report is not None:
        (out / "quant_report.json").write_text(report.to_json())
    ResultStore(spec.paths.results_dir).append(store_row(result, spec))
    m = result["metrics"]
    logger.log(
        {f"ppl/{d}": r["ppl"] for d, r in m["ppl"].items()}
        | {f"fp_ppl/{d}": (r or {}).get("ppl") for d, r in result["baseline"]["ppl"].items()}
        | result["timings"]
    )
    if report is not None:
        logger.log_table("quant_report", report.rows())
    if m["tasks"]:
        logger.log({f"task/{k}": v for k, v in m["task_summary"].items() if isinstance(v, (int, float))})
        logger.log_table("tasks", [{"task": k, **v} for k, v in m["tasks"].items()])


# ---- the run ------------------------------------------------------------------------------------


def run(spec: RunSpec, out_dir: str, config: Dict[str, Any], overrides: str = "") -> Dict[str, Any]:
    t_start = time.perf_counter()
    torch.manual_seed(spec.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(spec.device)
    if spec.backend == "triton":
        check_kernel_device(device)  # before any work; per-layer constraints after quantization
    run_name = f"{spec.model.name}/{spec.quant.name}"
    logger = make_logger(spec.logger, config, group=spec.experiment_name, name=run_name, out_dir=str(out))
    try:
        timings: Dict[str, float] = {}
        with _timed(timings, "load_s"):
            model, tok, streams = load(spec, device)
        with _timed(timings, "baseline_eval_s"):
            fp = baseline(spec, model, tok, streams)
        report = quantize(spec, model, tok, timings)
        ppls, zeroshot = evaluate(spec, model, tok, streams, device, timings)
        if spec.quant.is_float:
            BaselineCache(spec.paths.cache_dir).put_all(spec, ppls)
            fp = ppls
        timings["total_s"] = time.perf_counter() - t_start
        result = make_result(
            spec,
            out_dir=out,
            overrides=overrides,
            ppl=ppls,
            baseline=fp,
            zeroshot=zeroshot,
            report=report,
            timings=timings,
            device=str(device),
        )
        record(spec, out, result, report, logger)
        return result
    finally:
        logger.finish()
