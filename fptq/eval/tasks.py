"""Zero-shot / few-shot tasks for lm-eval, built from lm-eval's own task YAMLs.

With the hub, lm-eval loads its datasets itself. Offline, each task's local files (the shared data
folder's layout) are converted to the schema of the hub dataset that lm-eval's YAML expects and
written as JSONL; the task then runs lm-eval's unchanged YAML (same doc_to_text, doc_to_choice,
process_docs, metrics) with `dataset_path: json`. So prompts and scoring are lm-eval's by
construction; tests/eval/test_tasks.py checks them item by item.
"""

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from fptq.data import DataSpec, shared_data_root
from fptq.files import read_jsonl
from fptq.hub import use_hub

COMMONSENSE = ("piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "boolq", "openbookqa")
MMLU_CATEGORIES = {
    "mmlu_stem_tasks": "stem",
    "mmlu_humanities_tasks": "humanities",
    "mmlu_social_sciences_tasks": "social_sciences",
    "mmlu_other_tasks": "other",
}


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"expected the task data file {path}; set eval.task_data=/folder laid out like shared/data"
        )
    return path


# ---- converters: local file(s) -> documents in the hub dataset's schema ------------------------


def _piqa(root: Path) -> List[dict]:
    docs = read_jsonl(_need(root / "piqa" / "valid.jsonl"))
    labels = _need(root / "piqa" / "valid-labels.lst").read_text().split()
    if len(labels) != len(docs):
        raise ValueError(f"piqa: {len(docs)} documents but {len(labels)} labels in valid-labels.lst")
    return [dict(d, label=int(label)) for d, label in zip(docs, labels, strict=True)]


def _letters(n: int) -> List[str]:
    return [chr(ord("A") + i) for i in range(n)]


def _arc(name: str) -> Callable[[Path], List[dict]]:
    def conv(root: Path) -> List[dict]:
        out = []
        for d in read_jsonl(_need(root / "zeroshot" / f"{name}.jsonl")):
            labels = _letters(len(d["choices"]))
            q = d["query"][len("Question: ") :] if d["query"].startswith("Question: ") else d["query"]
            out.append(
                {
                    "question": q,
                    "choices": {"text": d["choices"], "label": labels},
                    "answerKey": labels[d["gold"]],
                }
            )
        return out

    return conv


_SENTENCE_END = re.compile(r"[.!?][\"')]*\s")


def split_hellaswag_ctx(ctx: str) -> Dict[str, str]:
    """'label: ctx_a ctx_b' -> fields. ctx_b (the sentence fragment the endings continue) is what
    follows the last sentence end; lm-eval capitalizes it, so it must be recovered."""
    label, _, rest = ctx.partition(": ")
    ends = list(_SENTENCE_END.finditer(rest))
    if not ends:
        return {"activity_label": label, "ctx_a": rest, "ctx_b": ""}
    cut = ends[-1].end()
    return {"activity_label": label, "ctx_a": rest[:cut].rstrip(), "ctx_b": rest[cut:]}


def _hellaswag(root: Path) -> List[dict]:
    return [
        dict(split_hellaswag_ctx(d["ctx"]), endings=d["endings"], label=str(d["label"]))
        for d in read_jsonl(_need(root / "zeroshot" / "hellaswag.jsonl"))
    ]


def _winogrande(root: Path) -> List[dict]:
    out = []
    for d in read_jsonl(_need(root / "zeroshot" / "winogrande.jsonl")):
        a, b = d["context_options"]
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        prefix = a[:n]  # the sentence up to the blank (possibly a few letters the options share)
        out.append(
            {
                "sentence": f"{prefix}_ {d['continuation']}",
                "option1": a[n:],
                "option2": b[n:],
                "answer": str(d["gold"] + 1),
            }
        )
    return out


def _boolq(root: Path) -> List[dict]:
    out = []
    for d in read_jsonl(_need(root / "zeroshot" / "boolq.jsonl")):
        body = d["query"][len("Passage: ") :]
        passage, _, question = body.rpartition("\nQuestion: ")
        out.append(
            {
                "passage": passage,
                "question": question[:-1] if question.endswith("?") else question,
                "label": int(d["gold"]),
            }
        )
    return out


def _openbookqa(root: Path) -> List[dict]:
    out = []
    for d in read_jsonl(_need(root / "zeroshot" / "openbookqa.jsonl")):
        labels = _letters(len(d["choices"]))
        out.append(
            {
                "question_stem": d["query"],
                "choices": {"text": d["choices"], "label": labels},
                "answerKey": labels[d["gold"]],
            }
        )
    return out


def _lambada(root: Path) -> List[dict]:
    return [
        {"text": d["context"] + " " + d["continuation"]}
        for d in read_jsonl(_need(root / "zeroshot" / "lambada_openai.jsonl"))
    ]


def mmlu_docs(root: Path, subject: str, split: str) -> List[dict]:
    path = _need(root / "mmlu" / split / f"{subject}_{split}.csv")
    with open(path, newline="", encoding="utf-8") as f:
        return [
            {
                "question": r["question"],
                "subject": subject,
                "choices": [r[f"choice{i}"] for i in range(4)],
                "answer": int(r["answer"]),
            }
            for r in csv.DictReader(f)
        ]


@dataclass(frozen=True)
class LocalTask:
    yaml: str  # lm-eval task YAML, relative to lm_eval/tasks
    split: str  # the split lm-eval evaluates (named as in the YAML)
    convert: Callable[[Path], List[dict]]
    files: Tuple[str, ...]  # the local files it reads, relative to the task data folder


LOCAL_TASKS: Dict[str, LocalTask] = {
    "piqa": LocalTask("piqa/piqa.yaml", "validation", _piqa, ("piqa/valid.jsonl", "piqa/valid-labels.lst")),
    "arc_easy": LocalTask("arc/arc_easy.yaml", "test", _arc("arc_easy"), ("zeroshot/arc_easy.jsonl",)),
    "arc_challenge": LocalTask(
        "arc/arc_challenge.yaml", "test", _arc("arc_challenge"), ("zeroshot/arc_challenge.jsonl",)
    ),
    "hellaswag": LocalTask(
        "hellaswag/hellaswag.yaml", "validation", _hellaswag, ("zeroshot/hellaswag.jsonl",)
    ),
    "winogrande": LocalTask(
        "winogrande/default.yaml", "validation", _winogrande, ("zeroshot/winogrande.jsonl",)
    ),
    "boolq": LocalTask("super_glue/boolq/default.yaml", "validation", _boolq, ("zeroshot/boolq.jsonl",)),
    "openbookqa": LocalTask(
        "openbookqa/openbookqa.yaml", "test", _openbookqa, ("zeroshot/openbookqa.jsonl",)
    ),
    "lambada_openai": LocalTask(
        "lambada/lambada_openai.yaml", "test", _lambada, ("zeroshot/lambada_openai.jsonl",)
    ),
}
KNOWN_TASKS = tuple(LOCAL_TASKS) + ("mmlu",)


def task_files(name: str, root: Path) -> List[str]:
    """The local files task `name` reads, relative to the task data folder `root`."""
    if name == "mmlu":
        return sorted(p.relative_to(root).as_posix() for p in (root / "mmlu").glob("*/*.csv"))
    return list(LOCAL_TASKS[name].files)


def check_tasks(names) -> None:
    """Every name must be a known task (the one list: LOCAL_TASKS plus mmlu)."""
    unknown = [n for n in names if n not in KNOWN_TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {list(KNOWN_TASKS)}")


def lm_eval_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def load_task_yaml(rel: str) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(lm_eval_tasks_dir() / rel)


def mmlu_subjects() -> Dict[str, str]:
    """subject -> category (stem, humanities, social_sciences, other), from lm-eval's MMLU YAMLs."""
    out = {}
    for p in sorted((lm_eval_tasks_dir() / "mmlu" / "default").glob("mmlu_*.yaml")):
        cfg = load_task_yaml(str(p.relative_to(lm_eval_tasks_dir())))
        tag = cfg.get("tag")
        tag = tag[0] if isinstance(tag, list) else tag
        if tag in MMLU_CATEGORIES:
            out[cfg["dataset_name"]] = MMLU_CATEGORIES[tag]
    return out


def _write_jsonl(docs: List[dict], cache: Path, name: str) -> str:
    cache.mkdir(parents=True, exist_ok=True)
    data = "\n".join(json.dumps(d, ensure_ascii=False) for d in docs) + "\n"
    path = cache / f"{name}-{hashlib.sha1(data.encode()).hexdigest()[:10]}.jsonl"
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(data, encoding="utf-8")
        tmp.replace(path)
    return str(path.resolve())  # absolute: lm-eval resolves data_files against the CWD


def _local_config(cfg: dict, files: Dict[str, str], split: str) -> dict:
    cfg = dict(cfg)
    cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files})
    for key in ("training_split", "validation_split", "test_split"):
        cfg[key] = None
    cfg["test_split" if split == "test" else "validation_split"] = split
    return cfg


def build_local_task_configs(
    names: List[str], data_root: Path, cache: Path, mmlu_shots: int = 5
) -> Dict[str, dict]:
    """Task name -> lm-eval task config dict reading converted local files."""
    check_tasks(names)
    configs = {}
    for name in names:
        if name == "mmlu":
            template = load_task_yaml("mmlu/default/_default_template_yaml")
            for subject in mmlu_subjects():
                cfg = dict(
                    template,
                    **{
                        k: v
                        for k, v in load_task_yaml(f"mmlu/default/mmlu_{subject}.yaml").items()
                        if k in ("task", "task_alias", "description", "dataset_name")
                    },
                )
                files = {
                    "test": _write_jsonl(
                        mmlu_docs(data_root, subject, "test"), cache, f"mmlu_{subject}_test"
                    ),
                    "dev": _write_jsonl(mmlu_docs(data_root, subject, "dev"), cache, f"mmlu_{subject}_dev"),
                }
                cfg = _local_config(cfg, files, "test")
                cfg["fewshot_split"] = "dev"
                cfg["num_fewshot"] = mmlu_shots
                cfg.pop("tag", None)
                configs[cfg["task"]] = cfg
            continue
        t = LOCAL_TASKS[name]
        cfg = load_task_yaml(t.yaml)
        cfg.pop("tag", None)
        files = {t.split: _write_jsonl(t.convert(data_root), cache, name)}
        configs[name] = _local_config(cfg, files, t.split)
    return configs


def tasks_from_hub(task_source: str, data_spec: DataSpec) -> bool:
    """lm-eval tasks from the hub (True) or the local task data (False): eval.task_source wins;
    "auto" follows data.source (which may itself be auto)."""
    return use_hub(task_source if task_source != "auto" else data_spec.source, "lm-eval tasks")


def task_data_root(spec: DataSpec, explicit: Optional[str]) -> Path:
    root = Path(explicit) if explicit else shared_data_root(spec)
    if root is None or not root.is_dir():
        raise FileNotFoundError(
            "no local task data: set eval.task_data=/folder laid out like shared/data "
            "(piqa/, zeroshot/, mmlu/), or run with the hub reachable"
        )
    return root
