"""One run as named steps: resume -> preflight -> load -> baseline -> quantize -> evaluate -> record.

`run` takes a validated `RunSpec`; each step is a function of it. Everything a finished run
produces goes through `record`: result.json, quant_report.json, one results-store row, W&B.
"""

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from fptq.data import calibration_ids, eval_tokens
from fptq.eval.perplexity import perplexity, perplexity_blockwise
from fptq.files import write_json_atomic
from fptq.models.arch import arch_of
from fptq.models.checkpoint import REPORT_NAME, check_destination, check_scheme, save_quantized
from fptq.models.loading import ModelSpec, load_model
from fptq.models.onload import BlockLoader, stream_blocks
from fptq.quant.blockstate import BlockState
from fptq.quant.pipeline import quantize_model
from fptq.quant.qlinear import set_backend
from fptq.quant.report import QuantReport
from fptq.study.baseline import BaselineCache
from fptq.study.claim import Claim
from fptq.study.jobkey import job_key
from fptq.study.preflight import PreflightError, preflight
from fptq.study.record import make_result, store_row
from fptq.study.runlog import make_logger
from fptq.study.spec import RunSpec
from fptq.study.store import ResultStore

log = logging.getLogger(__name__)
Streams = Dict[str, torch.Tensor]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        # a user error (exit 2, no traceback), said before any work
        raise PreflightError(["device=cuda but no CUDA device is available; use device=cpu or device=auto"])
    return torch.device(device)


@contextmanager
def _timed(timings: Dict[str, float], key: str):
    t = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t


# ---- steps --------------------------------------------------------------------------------------


def _cache(spec: RunSpec) -> str:
    return str(Path(spec.paths.cache_dir).expanduser())


def load(spec: RunSpec, device: torch.device) -> Tuple[torch.nn.Module, Any, Streams]:
    """The model on `device` (float; a skeleton with onload=sequential; packed for a saved
    checkpoint), its tokenizer, and the evaluation token streams."""
    model, tok = load_model(spec.model, _cache(spec), device)
    streams = {d: eval_tokens(d, tok, spec.data, spec.eval.seqlen) for d in spec.eval.datasets}
    return model, tok, streams


def from_checkpoint(spec: RunSpec) -> Tuple[RunSpec, Optional[ModelSpec]]:
    """For model.source=quantized: check the checkpoint against the run's scheme before any work,
    and name the run after the model it was made from. Returns (spec, that base model's spec)."""
    if spec.model.source != "quantized":
        return spec, None
    qc = check_scheme(spec.model.path, spec.quant)
    base = qc.get("base_model") or {}
    base_spec = ModelSpec(**base) if base else None
    if base_spec is not None:
        spec = replace(spec, model=replace(spec.model, name=base_spec.name))
    return spec, base_spec


def prompt_ids(spec: RunSpec, tok) -> Optional[torch.Tensor]:
    """eval.prompt as token ids (no special tokens), or None."""
    if not spec.eval.prompt:
        return None
    return torch.tensor(tok(spec.eval.prompt, add_special_tokens=False)["input_ids"], dtype=torch.long)


def _window_args(spec: RunSpec, tok, dataset: str, tag: str) -> Dict[str, Any]:
    """perplexity()'s protocol arguments for `dataset` (seqlen, windows, BOS, prompt, progress)."""
    e = spec.eval
    return dict(
        seqlen=e.seqlen,
        max_windows=e.windows_for(dataset),
        bos_id=tok.bos_token_id if spec.model.add_bos else None,
        progress=e.progress,
        desc=f"{tag} {dataset}",
        prefix_ids=prompt_ids(spec, tok),
    )


def ppl(spec: RunSpec, model, tok, streams: Streams, dataset: str, tag: str) -> Dict[str, Any]:
    return perplexity(model, streams[dataset], **_window_args(spec, tok, dataset, tag)).as_dict()


def baseline(
    spec: RunSpec, model, tok, streams: Streams, device, base: Optional[ModelSpec] = None
) -> Dict[str, Any]:
    """fp perplexities of the still-float model (cached per model and protocol). With onload=
    sequential they are computed block by block; for a saved checkpoint, from the model it was
    made from (`base`), loaded only if the cache misses."""
    if not spec.eval.baseline or spec.quant.is_float:
        return {}
    if spec.model.source == "quantized":
        if base is None:
            log.warning("%s records no base model: no fp baseline", spec.model.path)
            return {}
        fspec = replace(spec, model=base)
        state: Dict[str, Any] = {}

        def compute(d):
            if "model" not in state:
                state["model"], _ = load_model(base, _cache(spec), device)
            return _fp_ppl(fspec, state["model"], tok, streams, d, device)

        return BaselineCache(spec.paths.cache_dir).get_or_compute(fspec, streams, compute)
    return BaselineCache(spec.paths.cache_dir).get_or_compute(
        spec, streams, lambda d: _fp_ppl(spec, model, tok, streams, d, device)
    )


def _fp_ppl(spec: RunSpec, model, tok, streams: Streams, dataset: str, device) -> Dict[str, Any]:
    if spec.model.onload != "sequential":
        return ppl(spec, model, tok, streams, dataset, "fp")
    loader = BlockLoader(model, spec.model.torch_dtype, device)
    return perplexity_blockwise(
        model, streams[dataset], loader, **_window_args(spec, tok, dataset, "fp")
    ).as_dict()


def calibration(spec: RunSpec, model, tok, timings: Dict[str, float]) -> Optional[torch.Tensor]:
    """The calibration token ids, or None (fp, a saved checkpoint, data-free without samples). Taken
    right after the model load, before the fp baseline: a text too short for the crops (which needs
    the tokenizer to count) fails before any expensive work."""
    if spec.quant.is_float or spec.model.source == "quantized":
        return None
    calib_spec = spec.calib
    if spec.quant.data_free:  # no calibration: a few samples for the report's output SQNR, or none
        calib_spec = replace(calib_spec, n_samples=max(calib_spec.data_free_sample, 1))
        log.info(
            "%s is data-free: no calibration; output SQNR %s",
            spec.quant.name,
            f"on {calib_spec.data_free_sample} samples" if calib_spec.data_free_sample else "skipped",
        )
    calib = None
    if not spec.quant.data_free or calib_spec.data_free_sample:
        with _timed(timings, "calib_data_s"):
            calib = calibration_ids(calib_spec, tok, spec.data, model.config.vocab_size, seed=spec.seed)
    return calib


def work_folder(spec: RunSpec, key: str) -> Path:
    """The job's work folder in the results store: its block state while it quantizes."""
    return Path(spec.paths.results_dir).expanduser() / "work" / key


def quantize(
    spec: RunSpec, model, calib: Optional[torch.Tensor], timings: Dict[str, float], state=None
) -> Optional[QuantReport]:
    """Quantize in place on the calibration ids (resuming from `state`, a BlockState, if it holds
    finished blocks), then switch to the chosen backend."""
    if spec.quant.is_float:
        return None
    onload = None
    if spec.model.onload == "sequential":
        onload = BlockLoader(model, spec.model.torch_dtype, next(model.parameters()).device).load
    offload = (lambda b: b.to("cpu")) if spec.model.packed_on == "host" else None
    report = quantize_model(
        model,
        spec.quant,
        calib,
        batch_size=spec.calib.batch_size,
        seed=spec.seed,
        progress=spec.eval.progress,
        propagate=spec.calib.propagate,
        onload=onload,
        offload=offload,
        state=state,
    )
    timings["quantize_s"] = report.seconds
    if spec.backend != "reference":
        log.info("%s backend on %d quantized linears", spec.backend, set_backend(model, spec.backend))
    return report


def saved_report(spec: RunSpec) -> Optional[QuantReport]:
    """A saved checkpoint's quantization report (it was not quantized in this run)."""
    f = Path(spec.model.path).expanduser() / REPORT_NAME
    return QuantReport.from_json(f.read_text()) if f.is_file() else None


def save(spec: RunSpec, model, tok, report, out: Path, timings: Dict[str, float]) -> Optional[Dict[str, Any]]:
    """Write the quantized model as a checkpoint folder if save.dir is set."""
    if spec.save.dir is None:
        return None
    folder = out / "checkpoint" if spec.save.dir == "auto" else Path(spec.save.dir).expanduser()
    if spec.save.format == "compressed-tensors":
        from fptq.models.export import export_compressed_tensors

        info = export_compressed_tensors(model, folder, tokenizer=tok, overwrite=spec.save.overwrite)
        timings["save_s"] = info["seconds"]
        log.info("exported the quantized model to %s (compressed-tensors, %s)", folder, info["format"])
        return info
    info = save_quantized(
        model,
        folder,
        scheme=spec.quant,
        tokenizer=tok,
        report=report,
        base_model=asdict(spec.model),
        overwrite=spec.save.overwrite,
    )
    timings["save_s"] = info["seconds"]
    log.info("saved the quantized model to %s (%.1f MB)", folder, info["bytes"] / 1e6)
    return info


def evaluate(
    spec: RunSpec, model, tok, streams: Streams, device: torch.device, timings: Dict[str, float]
) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """Perplexity on every set, then the lm-eval tasks if any. Blocks kept on the host
    (model.packed_on=host) stream through the device."""
    if spec.model.packed_on == "host" and device.type != "cpu":
        arch = arch_of(model)
        stream_blocks(model.get_submodule(arch.blocks), device)
    with _timed(timings, "eval_s"):
        if spec.quant.is_float and spec.model.onload == "sequential":  # the float model stays a skeleton
            ppls = {d: _fp_ppl(spec, model, tok, streams, d, device) for d in streams}
        else:
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
    """Write result.json and quant_report.json (atomic), the job's store row with its layer report,
    and the W&B summary. The row goes last: a job killed before it leaves no row and reruns."""
    write_json_atomic(out / "result.json", result)
    layers = report.to_dict() if report is not None else None
    if layers is not None:
        write_json_atomic(out / "quant_report.json", layers)
    ResultStore(spec.paths.results_dir).put(result["job_key"], store_row(result, spec), layers)
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
    """Run one job, or skip it if the store already has its row (spec.resume). Returns the result
    document, or {"skipped": True, "job_key", "row"} for a skipped job."""
    t_start = time.perf_counter()
    device = resolve_device(spec.device)
    key, parts = job_key(spec, device.type)
    done = resume(spec, key, parts)
    if done is not None and (spec.save.dir is None or saved_output_present(spec, done)):
        if spec.save.dir is not None:
            log.info("the checkpoint asked for is already there: %s", done.get("checkpoint"))
        return {"skipped": True, "job_key": key, "row": done}
    # identical jobs of a parallel sweep run once: the second waits for the first one's row
    claim = Claim(work_folder(spec, key))
    store = ResultStore(spec.paths.results_dir)
    wants_row = spec.resume and spec.save.dir is None
    other = claim.acquire(
        lambda: store.get(key) if wants_row else None, what=f"{spec.model.name}/{spec.quant.name} (job {key})"
    )
    if other is not None:
        log.info("job %s was run by an identical job of this sweep: its row is this job's result", key)
        return {"skipped": True, "job_key": key, "row": other}
    try:
        finished = store.get(key) if wants_row and done is None else None
        if finished is not None:  # the owner before us finished while we claimed
            return {"skipped": True, "job_key": key, "row": finished}
        if done is not None:
            log.info(
                "job %s has a row but not the checkpoint asked for (save.dir=%s, format %s): running it "
                "again to write it",
                key,
                spec.save.dir,
                spec.save.format,
            )
        return _run(spec, out_dir, config, overrides, key, parts, t_start, device)
    finally:
        claim.release()


def _run(spec, out_dir, config, overrides, key, parts, t_start, device) -> Dict[str, Any]:
    """The job's work, its claim held."""
    torch.manual_seed(spec.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec, base = from_checkpoint(spec)  # a saved checkpoint must match the scheme: check first
    preflight(spec, device)  # backend, model config and widths, data files: before any work
    if spec.save.dir not in (None, "auto"):
        check_destination(spec.save.dir, spec.save.overwrite)  # before hours of work
    run_name = f"{spec.model.name}/{spec.quant.name}"
    logger = make_logger(spec.logger, config, group=spec.experiment_name, name=run_name, out_dir=str(out))
    try:
        timings: Dict[str, float] = {}
        with _timed(timings, "load_s"):
            model, tok, streams = load(spec, device)
        calib = calibration(spec, model, tok, timings)
        with _timed(timings, "baseline_eval_s"):
            fp = baseline(spec, model, tok, streams, device, base)
        state = None
        if spec.model.source == "quantized":
            report = saved_report(spec)
        else:
            if spec.resume_blocks and not spec.quant.is_float:
                state = BlockState(work_folder(spec, key), key)
            report = quantize(spec, model, calib, timings, state)
        checkpoint = save(spec, model, tok, report, out, timings)
        ppls, zeroshot = evaluate(spec, model, tok, streams, device, timings)
        if spec.quant.is_float:
            BaselineCache(spec.paths.cache_dir).put_all(spec, streams, ppls)
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
        result.update(job_key=key, config_key=parts["config_key"], code_version=parts["code_version"])
        result["checkpoint"] = (
            checkpoint["path"]
            if checkpoint
            else (spec.model.path if spec.model.source == "quantized" else None)
        )
        if state is not None and state.resumed_at:
            result["resumed"] = {"at_block": state.resumed_at, "of": state.n_blocks}
        record(spec, out, result, report, logger)
        if state is not None:
            state.clear()  # the row is written: the block state has served
        return result
    finally:
        logger.finish()


def saved_output_present(spec: RunSpec, row: Dict[str, Any]) -> bool:
    """Whether the checkpoint or export that save.dir asks for exists from the row's run: the row's
    checkpoint folder, at the folder asked for (any folder for save.dir=auto), in the format asked
    for. A job is never skipped while an output it was asked to write is missing."""
    path = row.get("checkpoint")
    if not path or spec.model.source == "quantized":
        return False
    folder = Path(str(path)).expanduser()
    if spec.save.dir != "auto" and folder.resolve() != Path(spec.save.dir).expanduser().resolve():
        return False
    try:
        qc = json.loads((folder / "config.json").read_text()).get("quantization_config") or {}
    except (OSError, ValueError):
        return False
    want = "compressed-tensors" if spec.save.format == "compressed-tensors" else "fptq"
    return qc.get("quant_method") == want


def resume(spec: RunSpec, key: str, parts: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The store's row for this job if it is done and spec.resume (then the job is skipped), else
    None, after saying what the coming run replaces or differs from."""
    store = ResultStore(spec.paths.results_dir)
    store.check_writable(key)  # before any work: a finished run must be able to write its row
    done = store.get(key)
    if done is not None and spec.resume:
        log.info(
            "skip %s/%s: job %s already has a row (finished %s, output %s); resume=false runs it again",
            spec.model.name,
            spec.quant.name,
            key,
            done.get("finished_at"),
            done.get("output_dir"),
        )
        return done
    old = [r for r in store.read() if r.get("config_key") == parts["config_key"] and r.get("job_key") != key]
    if old:
        log.info(
            "rows of this job exist from other code versions (%s); this code (%s) computes it again",
            ", ".join(sorted({str(r.get("code_version")) for r in old})),
            parts["code_version"],
        )
    if spec.calib.seed is not None and spec.calib.seed != spec.seed:
        log.warning(
            "calib.seed=%d is set: seed=%d does not change the calibration crops", spec.calib.seed, spec.seed
        )
    return None
