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


def test_a_checkpoint_asked_for_is_written_even_when_the_job_has_a_row(tmp_path):
    """The README's save.dir example is the same job as the bare main command: a row must not make
    the job skip the checkpoint it was asked to write; once written, the job skips again."""
    _run([f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    ckpt = tmp_path / "ckpt"
    proc = _run([f"hydra.run.dir={tmp_path / 'b'}", f"save.dir={ckpt}"], tmp_path)
    assert "running it again to write it" in proc.stdout + proc.stderr
    assert json.loads((ckpt / "config.json").read_text())["quantization_config"]["quant_method"] == "fptq"
    rows = ResultStore(str(tmp_path / "results")).read()
    assert len(rows) == 1 and Path(rows[0]["checkpoint"]).resolve() == ckpt.resolve()
    proc = _run([f"hydra.run.dir={tmp_path / 'c'}", f"save.dir={ckpt}"], tmp_path)
    out = proc.stdout + proc.stderr
    assert "already has a row" in out and "the checkpoint asked for is already there" in out
    assert not (tmp_path / "c" / "result.json").exists()


@pytest.mark.parametrize(
    "args, msg",
    [
        (
            ["+quant.wieght.bits=8", "+sed=5"],
            "unknown config key 'quant.wieght'; did you mean 'quant.weight'",
        ),
        (["device=cuda"], "device=cuda but no CUDA device is available"),
        (["device=cuda", "backend=triton"], "device=cuda but no CUDA device is available"),
    ],
)
def test_user_errors_print_the_message_alone_and_leave_nothing(tmp_path, args, msg):
    if msg.startswith("device=cuda"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    proc = fptq_run(args, tmp_path, ok=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and msg in out and "Traceback" not in out, out[-2000:]
    assert not (tmp_path / "outputs").exists()  # no run folder for a job that did not run
    assert ResultStore(str(tmp_path / "results")).read() == []


def test_a_skipped_job_leaves_no_run_folder(tmp_path):
    _run([], tmp_path)
    before = sorted(p for p in (tmp_path / "outputs").rglob("result.json"))
    proc = _run([], tmp_path)
    assert "already has a row" in proc.stdout + proc.stderr
    assert sorted((tmp_path / "outputs").rglob("result.json")) == before
    assert len([p for p in (tmp_path / "outputs").rglob("*") if p.name.startswith("20")]) == 1


def test_save_into_an_existing_file_says_it_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("")
    proc = _run_fail([f"save.dir={tmp_path / 'afile'}"], tmp_path)
    out = proc.stdout + proc.stderr
    assert "is a file, not a folder" in out and "not empty" not in out and "Traceback" not in out


def test_a_folder_where_the_row_goes_fails_before_any_work(tmp_path):
    # the job's own row path is taken by a folder: said before the model load, rc 2
    _run([f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    (row,) = (tmp_path / "results" / "rows").glob("*.json")
    row.unlink()
    row.mkdir()
    (tmp_path / "results" / "rows" / "x.json").mkdir()
    proc = _run_fail([], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "is not a regular file, so this job's row cannot be written" in out
    assert "wikitext2: loading" not in out and "Traceback" not in out


def test_store_files_honour_the_umask(tmp_path):
    import stat

    old = os.umask(0o022)
    try:
        _run([f"hydra.run.dir={tmp_path / 'a'}", "save.dir=auto"], tmp_path)
    finally:
        os.umask(old)
    files = [
        *(tmp_path / "results").rglob("*.json"),
        tmp_path / "a" / "result.json",
        tmp_path / "a" / "checkpoint" / "model.safetensors",
    ]
    assert len(files) == 4
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o644" for f in files}
