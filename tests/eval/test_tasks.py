"""Local (offline) tasks build the same prompts, choices and targets as lm-eval's built-in tasks
do for the same items. The built-in side runs lm-eval's unchanged YAML on documents in the hub
dataset's schema; the local side converts the shared-data format."""

import json
from pathlib import Path

import pytest

from fptq.eval.tasks import (
    _local_config,
    build_local_task_configs,
    load_task_yaml,
    mmlu_subjects,
    split_hellaswag_ctx,
)

# one real item per task: (hub-schema document, the same item in the shared-data format)
ITEMS = {
    "piqa": (
        {
            "goal": "dresser",
            "sol1": "replace drawer with bobby pin ",
            "sol2": "finish, woodgrain with  bobby pin ",
            "label": 1,
        },
        {
            "piqa/valid.jsonl": {
                "goal": "dresser",
                "sol1": "replace drawer with bobby pin ",
                "sol2": "finish, woodgrain with  bobby pin ",
            },
            "piqa/valid-labels.lst": "1",
        },
    ),
    "arc_easy": (
        {
            "id": "x",
            "question": "Which piece of safety equipment is used to keep mold spores from entering the respiratory system?",
            "choices": {
                "text": ["safety goggles", "breathing mask", "rubber gloves", "lead apron"],
                "label": ["A", "B", "C", "D"],
            },
            "answerKey": "B",
        },
        {
            "zeroshot/arc_easy.jsonl": {
                "choices": ["safety goggles", "breathing mask", "rubber gloves", "lead apron"],
                "query": "Question: Which piece of safety equipment is used to keep mold spores from entering the respiratory system?",
                "gold": 1,
            }
        },
    ),
    "hellaswag": (
        {
            "ind": 4,
            "activity_label": "Clean and jerk",
            "ctx_a": "A lady walks to a barbell. She bends down and grabs the pole.",
            "ctx_b": "the lady",
            "ctx": "A lady walks to a barbell. She bends down and grabs the pole. the lady",
            "endings": [
                "swings and lands in her arms.",
                "pulls the barbell forward.",
                "pulls a rope attached to the barbell.",
                "stands and lifts the weight over her head.",
            ],
            "source_id": "s",
            "split": "val",
            "split_type": "indomain",
            "label": "3",
        },
        {
            "zeroshot/hellaswag.jsonl": {
                "ctx": "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. the lady",
                "endings": [
                    "swings and lands in her arms.",
                    "pulls the barbell forward.",
                    "pulls a rope attached to the barbell.",
                    "stands and lifts the weight over her head.",
                ],
                "label": 3,
            }
        },
    ),
    "winogrande": (
        {
            "sentence": "They were worried the wine would ruin the bed and the blanket, but the _ was't ruined.",
            "option1": "blanket",
            "option2": "bed",
            "answer": "2",
        },
        {
            "zeroshot/winogrande.jsonl": {
                "context_options": [
                    "They were worried the wine would ruin the bed and the blanket, but the blanket",
                    "They were worried the wine would ruin the bed and the blanket, but the bed",
                ],
                "continuation": "was't ruined.",
                "gold": 1,
            }
        },
    ),
    "boolq": (
        {
            "question": "does ethanol take more energy make that produces",
            "passage": "All biomass goes through steps.",
            "idx": 0,
            "label": 0,
        },
        {
            "zeroshot/boolq.jsonl": {
                "query": "Passage: All biomass goes through steps.\nQuestion: does ethanol take more energy make that produces?",
                "choices": ["no", "yes"],
                "gold": 0,
            }
        },
    ),
    "openbookqa": (
        {
            "id": "7",
            "question_stem": "Predators eat",
            "choices": {"text": ["lions", "humans", "bunnies", "grass"], "label": ["A", "B", "C", "D"]},
            "answerKey": "C",
        },
        {
            "zeroshot/openbookqa.jsonl": {
                "query": "Predators eat",
                "choices": ["lions", "humans", "bunnies", "grass"],
                "gold": 2,
            }
        },
    ),
    "lambada_openai": (
        {"text": "I look at him, feeling stunned. But I don't care about signs"},
        {
            "zeroshot/lambada_openai.jsonl": {
                "context": "I look at him, feeling stunned. But I don't care about",
                "continuation": "signs",
            }
        },
    ),
}
YAMLS = {
    "piqa": "piqa/piqa.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "winogrande": "winogrande/default.yaml",
    "boolq": "super_glue/boolq/default.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
    "lambada_openai": "lambada/lambada_openai.yaml",
}
SPLITS = {"arc_easy": "test", "openbookqa": "test", "lambada_openai": "test"}


def _views(cfg):
    from lm_eval.api.task import ConfigurableTask

    task = ConfigurableTask(config=cfg)
    docs = list(task.test_docs() if task.has_test_docs() else task.validation_docs())
    out = []
    for d in docs:
        choice = task.doc_to_choice(d) if cfg.get("output_type") == "multiple_choice" else None
        out.append((task.doc_to_text(d), choice, task.doc_to_target(d)))
    return out


def _write_local(root: Path, files: dict) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content if isinstance(content, str) else json.dumps(content) + "\n")


@pytest.mark.parametrize("name", list(ITEMS))
def test_local_task_matches_builtin(name, tmp_path):
    hub_doc, local_files = ITEMS[name]
    split = SPLITS.get(name, "validation")
    hub_file = tmp_path / "hub.jsonl"
    hub_file.write_text(json.dumps(hub_doc) + "\n")
    builtin_cfg = load_task_yaml(YAMLS[name])
    builtin_cfg.pop("tag", None)
    builtin = _views(_local_config(builtin_cfg, {split: str(hub_file)}, split))
    _write_local(tmp_path / "data", local_files)
    local_cfg = build_local_task_configs([name], tmp_path / "data", tmp_path / "cache")[name]
    local = _views(local_cfg)
    assert local == builtin
    assert builtin[0][0]  # a non-empty prompt


def test_mmlu_local_matches_builtin(tmp_path):
    row = "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.,0,1,2,3,1\n"
    for split in ("dev", "test"):
        p = tmp_path / "data" / "mmlu" / split / f"abstract_algebra_{split}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("question,choice0,choice1,choice2,choice3,answer\n" + row * 6)
    from fptq.eval import tasks as T

    subjects = mmlu_subjects()
    assert len(subjects) == 57 and set(subjects.values()) == {
        "stem",
        "humanities",
        "social_sciences",
        "other",
    }
    orig = T.mmlu_subjects
    T.mmlu_subjects = lambda: {"abstract_algebra": "stem"}
    try:
        configs = build_local_task_configs(["mmlu"], tmp_path / "data", tmp_path / "cache")
    finally:
        T.mmlu_subjects = orig
    cfg = configs["mmlu_abstract_algebra"]
    assert (
        cfg["num_fewshot"] == 5
        and cfg["fewshot_split"] == "dev"
        and cfg["fewshot_config"]["sampler"] == "first_n"
    )
    assert cfg["description"].startswith(
        "The following are multiple choice questions (with answers) about abstract"
    )
    text, choices, target = _views(cfg)[0]
    assert text == "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:"
    assert choices == ["A", "B", "C", "D"] and target == 1


@pytest.mark.parametrize(
    "ctx, expected",
    [
        (
            "Roof shingle removal: A man is sitting on a roof. he",
            ("Roof shingle removal", "A man is sitting on a roof.", "he"),
        ),
        (
            "High jump: A boy runs. The boy lands. the boy",
            ("High jump", "A boy runs. The boy lands.", "the boy"),
        ),
        ("Label: no sentence end here", ("Label", "no sentence end here", "")),
    ],
)
def test_split_hellaswag_ctx(ctx, expected):
    d = split_hellaswag_ctx(ctx)
    assert (d["activity_label"], d["ctx_a"], d["ctx_b"]) == expected


def test_unknown_task_lists_known(tmp_path):
    with pytest.raises(ValueError, match="piqa"):
        build_local_task_configs(["lambada_standard"], tmp_path, tmp_path)


def test_missing_task_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="piqa/valid.jsonl"):
        build_local_task_configs(["piqa"], tmp_path, tmp_path / "cache")
