"""Zero-shot and MMLU evaluation of the in-memory (quantized) model with lm-evaluation-harness.

The model is wrapped in lm-eval's HFLM and scored by lm-eval itself (`simple_evaluate`); nothing
is re-implemented here but the offline data plumbing (fptq.eval.tasks) and the summary: the
common-sense average and MMLU's Humanities / STEM / Social Sciences / Other averages
(document-weighted, as lm-eval's MMLU group does).
"""

import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from fptq.data import DataSpec
from fptq.eval.tasks import (
    COMMONSENSE,
    build_local_task_configs,
    check_tasks,
    mmlu_subjects,
    task_data_root,
    tasks_from_hub,
)

log = logging.getLogger(__name__)


def _task_objects(
    names: List[str], data_spec: DataSpec, task_data: Optional[str], cache_dir: str, mmlu_shots: int
):
    from lm_eval.api.task import ConfigurableTask

    root = task_data_root(data_spec, task_data)
    log.info("lm-eval tasks from local files under %s", root)
    configs = build_local_task_configs(names, root, Path(cache_dir).expanduser() / "tasks", mmlu_shots)
    return [ConfigurableTask(config=c) for c in configs.values()]


def evaluate_tasks(
    model,
    tokenizer,
    names: List[str],
    *,
    data_spec: DataSpec,
    cache_dir: str,
    task_data: Optional[str] = None,
    source: str = "auto",
    limit: Optional[int] = None,
    mmlu_limit: Optional[int] = None,
    batch_size: int = 8,
    mmlu_shots: int = 5,
    device: str = "cpu",
    seed: int = 0,
) -> Dict[str, Any]:
    """Run lm-eval on `names`; returns {"tasks": {task: {metric: v, metric_stderr: v, n: N}}, "summary": {...}}."""
    check_tasks(names)
    if not names:
        return {"tasks": {}, "summary": {}}
    from lm_eval.models.huggingface import HFLM

    t0 = time.perf_counter()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    from_hub = tasks_from_hub(source, data_spec)

    def tasks_for(subset: List[str]):
        """Hub: lm-eval's own task names; local: its YAMLs over converted local files."""
        return subset if from_hub else _task_objects(subset, data_spec, task_data, cache_dir, mmlu_shots)

    runs = []
    plain = [n for n in names if n != "mmlu"]
    if plain:
        runs.append(dict(tasks=tasks_for(plain), num_fewshot=None, limit=limit))
    if "mmlu" in names:  # its own call: few-shot, and its own per-subject limit
        m_limit = mmlu_limit if mmlu_limit is not None else limit
        # local MMLU configs carry num_fewshot themselves (fewshot_split: dev)
        runs.append(
            dict(tasks=tasks_for(["mmlu"]), num_fewshot=mmlu_shots if from_hub else None, limit=m_limit)
        )
    tasks = _run_all(lm, runs, seed)
    summary = summarize(tasks)
    summary["seconds"] = time.perf_counter() - t0
    summary["source"] = "hub" if from_hub else "local"
    return {"tasks": tasks, "summary": summary}


def _run_all(lm, runs: List[Dict[str, Any]], seed: int) -> Dict[str, Dict[str, Any]]:
    """Run each lm-eval call; per task, its metrics (and stderrs) without lm-eval's filter suffix."""
    from lm_eval import simple_evaluate

    results: Dict[str, Dict[str, Any]] = {}
    n_samples: Dict[str, int] = {}
    for run in runs:
        out = simple_evaluate(
            model=lm,
            tasks=run["tasks"],
            num_fewshot=run["num_fewshot"],
            limit=run["limit"],
            bootstrap_iters=1000,
            log_samples=False,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
        results.update(out["results"])
        for task, n in (out.get("n-samples") or {}).items():
            n_samples[task] = n.get("effective", n.get("original")) if isinstance(n, dict) else n
    tasks = {}
    for task, res in results.items():
        row = {}
        for key, v in res.items():
            if not isinstance(v, (int, float)) or "," not in key:
                continue
            metric, _, _filter = key.partition(",")
            row[metric] = float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else None
        if task in n_samples:
            row["n"] = n_samples[task]
        tasks[task] = row
    return tasks


def summarize(tasks: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    cs = [tasks[t]["acc"] for t in COMMONSENSE if t in tasks and tasks[t].get("acc") is not None]
    if cs:
        out["commonsense_avg_acc"] = sum(cs) / len(cs)
        out["commonsense_tasks"] = len(cs)
    subjects = mmlu_subjects() if any(t.startswith("mmlu_") for t in tasks) else {}
    cats: Dict[str, List[tuple]] = {}
    for subject, cat in subjects.items():
        r = tasks.get(f"mmlu_{subject}")
        if r and r.get("acc") is not None:
            cats.setdefault(cat, []).append((r["acc"], r.get("n", 1)))
    if cats:
        allv = [x for v in cats.values() for x in v]
        for cat, vals in sorted(cats.items()):
            out[f"mmlu_{cat}"] = sum(a * n for a, n in vals) / sum(n for _, n in vals)
        out["mmlu_avg"] = sum(a * n for a, n in allv) / sum(n for _, n in allv)
        out["mmlu_subjects"] = len(allv)
    return out
