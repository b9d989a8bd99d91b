"""End to end: fptq-run on tiny-llama, no network, W&B disabled."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fptq_run
from fptq.study.store import ResultStore


def _run(args, tmp_path, ok=True):
    return fptq_run(args, tmp_path, ok)


def _run_fail(args, tmp_path):
    return _run([f"hydra.run.dir={tmp_path / 'failed'}", *args], tmp_path, ok=False)


def test_single_run_writes_result_and_store_row(tmp_path):
    proc = _run([f"hydra.run.dir={tmp_path / 'out'}"], tmp_path)
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["scheme"] == "w4a8_fptq" and result["model"] == "tiny-llama"
    ppl = result["metrics"]["ppl"]["wikitext2"]
    assert ppl["windows"] == 2 and 1 < ppl["ppl"] < 1e4
    assert result["baseline"]["ppl"]["wikitext2"]["ppl"] > 1
    assert result["quant_summary"]["layers"] == 14
    assert (tmp_path / "out" / "quant_report.json").is_file()
    rows = ResultStore(str(tmp_path / "results")).read()
    assert len(rows) == 1 and rows[0]["scheme"] == "w4a8_fptq" and rows[0]["ppl_wikitext2"] == ppl["ppl"]
    assert "w4a8_fptq" in proc.stdout and "wikitext2" in proc.stdout  # the printed table


def test_multirun_writes_one_row_per_scheme(tmp_path):
    _run(
        ["-m", "quant=fp,w8a8_rtn,w4a16_rtn_g128,w4a8_rtn", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path
    )
    rows = ResultStore(str(tmp_path / "results")).read()
    assert sorted(r["scheme"] for r in rows) == ["fp", "w4a16_rtn_g128", "w4a8_rtn", "w8a8_rtn"]
    fp = next(r for r in rows if r["scheme"] == "fp")
    w8 = next(r for r in rows if r["scheme"] == "w8a8_rtn")
    assert w8["fp_ppl_wikitext2"] == pytest.approx(fp["ppl_wikitext2"])  # cached baseline reused
    assert len(list(Path(tmp_path / "sweep").glob("*/result.json"))) == 4


def test_bad_value_exits_nonzero_with_message(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fptq.study.cli",
            "debug=tiny",
            "quant.weight.bits=12",
            f"hydra.run.dir={tmp_path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "weight.bits must be in [2, 8]" in proc.stderr + proc.stdout


def test_run_with_lm_eval_tasks_records_accuracy(tmp_path, shared_data):
    _run(
        [
            f"hydra.run.dir={tmp_path / 'out'}",
            "eval.tasks=[piqa,boolq]",
            "eval.limit=3",
            "eval.batch_size=3",
            f"eval.task_data={shared_data}",
            "quant=w8a8_rtn",
        ],
        tmp_path,
    )
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert set(result["metrics"]["tasks"]) == {"piqa", "boolq"}
    row = ResultStore(str(tmp_path / "results")).read()[0]
    assert 0 <= row["piqa_acc"] <= 1 and "piqa_acc_stderr" in row and row["commonsense_tasks"] == 2


def test_triton_backend_run_in_interpreter(tmp_path):
    """backend=triton runs the quantized model's linears through the packed kernels."""
    _run(
        [
            f"hydra.run.dir={tmp_path / 'out'}",
            "backend=triton",
            "quant=w4a8_rtn",
            "eval.max_windows=1",
            "eval.seqlen=32",
            "eval.baseline=false",
        ],
        tmp_path,
    )
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["backend"] == "triton" and result["metrics"]["ppl"]["wikitext2"]["ppl"] > 1


def test_composition_sweep_names_both_axes(tmp_path):
    """weight x act as a grid: one row per pair, each axis a column of the store and the table."""
    _run(
        [
            "-m",
            "weight=int4_g128,int4_g64",
            "act=fptq,per_token_dynamic",
            "eval.baseline=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        tmp_path,
    )
    rows = ResultStore(str(tmp_path / "results")).read()
    pairs = sorted((r["weight"], r["act"]) for r in rows)
    assert pairs == [
        ("int4_g128", "fptq"),
        ("int4_g128", "per_token_dynamic"),
        ("int4_g64", "fptq"),
        ("int4_g64", "per_token_dynamic"),
    ]
    assert {r["weight.group_size"] for r in rows} == {128, 64}
    assert all(r["n_per_token_dynamic"] == 14 for r in rows if r["act"] == "per_token_dynamic")
    from fptq.analysis.tables import perplexity_table

    table = perplexity_table(rows)  # one scheme: the two axes become the table's columns
    assert {"weight", "act"} <= set(table.columns) and len(table.rows) == 4


def test_save_then_evaluate_the_checkpoint_without_calibration(tmp_path):
    _run([f"hydra.run.dir={tmp_path / 'a'}", "save.dir=auto"], tmp_path)
    first = json.loads((tmp_path / "a" / "result.json").read_text())
    ck = tmp_path / "a" / "checkpoint"
    assert first["checkpoint"] == str(ck) and (ck / "model.safetensors").is_file()
    _run([f"hydra.run.dir={tmp_path / 'b'}", "model=saved", f"model.path={ck}"], tmp_path)
    second = json.loads((tmp_path / "b" / "result.json").read_text())
    assert second["model"] == "tiny-llama" and second["checkpoint"] == str(ck)
    ppl = [r["metrics"]["ppl"]["wikitext2"]["ppl"] for r in (first, second)]
    assert ppl[0] == ppl[1]  # identical logits, so identical perplexity
    assert second["baseline"] == first["baseline"]  # from the cache, keyed by the base model
    assert "quantize_s" not in second["timings"] and "calib_data_s" not in second["timings"]
    assert second["quant_summary"]["layers"] == 14  # the saved report


def test_checkpoint_with_another_scheme_fails_before_loading(tmp_path):
    _run([f"hydra.run.dir={tmp_path / 'a'}", "save.dir=auto", "quant=w4a16_rtn_g128"], tmp_path)
    proc = _run_fail(
        ["model=saved", f"model.path={tmp_path / 'a' / 'checkpoint'}", "quant=w8a8_rtn"], tmp_path
    )
    out = proc.stdout + proc.stderr
    assert "weight.bits: checkpoint 4, run 8" in out and "Traceback" not in out


def test_save_into_a_non_empty_folder_fails_before_quantizing(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    proc = _run_fail([f"save.dir={tmp_path / 'taken'}"], tmp_path)
    out = proc.stdout + proc.stderr
    assert (
        "not empty" in out and "quantize" not in out.split("not empty")[0][-2000:] and "Traceback" not in out
    )


def test_sequential_onloading_run_equals_eager(tmp_path):
    """fptq-run on a local folder: onload=sequential (block-by-block fp baseline and quantization,
    packed blocks on the host) gives the eager run's numbers exactly."""
    import torch
    import transformers

    from fptq.models.loading import byte_tokenizer

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=258, max_position_embeddings=512,
    )  # fmt: skip
    folder = tmp_path / "float"
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    byte_tokenizer().save_pretrained(str(folder))
    results = {}
    for onload in ("eager", "sequential"):
        work = tmp_path / onload
        work.mkdir()
        args = [f"hydra.run.dir={work / 'out'}", "model.source=hf", f"model.path={folder}",
                f"model.onload={onload}", "model.packed_on=host", "quant.weight.group_size=64"]  # fmt: skip
        _run(args, work)
        results[onload] = json.loads((work / "out" / "result.json").read_text())
    e, s = results["eager"], results["sequential"]
    assert s["metrics"]["ppl"]["wikitext2"]["ppl"] == e["metrics"]["ppl"]["wikitext2"]["ppl"]
    assert s["baseline"]["ppl"]["wikitext2"]["ppl"] == e["baseline"]["ppl"]["wikitext2"]["ppl"]
    assert s["spec"]["model"]["onload"] == "sequential"
