import pytest

from conftest import tiny_model
from fptq.data import DataSpec
from fptq.eval.zeroshot import evaluate_tasks, summarize
from fptq.models.loading import byte_tokenizer


def test_summary_averages():
    tasks = {
        "piqa": {"acc": 0.6},
        "arc_easy": {"acc": 0.4},
        "lambada_openai": {"acc": 0.9},
        "mmlu_abstract_algebra": {"acc": 0.5, "n": 100},
        "mmlu_professional_medicine": {"acc": 0.2, "n": 300},
        "mmlu_philosophy": {"acc": 0.3, "n": 100},
    }
    s = summarize(tasks)
    assert s["commonsense_avg_acc"] == pytest.approx(0.5) and s["commonsense_tasks"] == 2
    assert s["mmlu_stem"] == pytest.approx(0.5) and s["mmlu_other"] == pytest.approx(
        0.2
    )  # professional_medicine is "other"
    assert s["mmlu_humanities"] == pytest.approx(0.3)
    assert s["mmlu_avg"] == pytest.approx((50 + 60 + 30) / 500)


def test_lm_eval_runs_on_the_in_memory_model(shared_data, tmp_path):
    model = tiny_model("llama", outliers=False)
    out = evaluate_tasks(
        model,
        byte_tokenizer(),
        ["piqa", "winogrande"],
        data_spec=DataSpec(source="local", root=str(shared_data)),
        cache_dir=str(tmp_path),
        limit=4,
        batch_size=4,
    )
    assert set(out["tasks"]) == {"piqa", "winogrande"}
    assert out["tasks"]["piqa"]["n"] == 4 and 0 <= out["tasks"]["piqa"]["acc"] <= 1
    assert "acc_stderr" in out["tasks"]["winogrande"]
    assert out["summary"]["commonsense_tasks"] == 2 and out["summary"]["source"] == "local"


def test_unknown_task():
    with pytest.raises(ValueError, match="known"):
        evaluate_tasks(None, None, ["lambada_standard"], data_spec=DataSpec(), cache_dir="/tmp")
