"""Studies through a real Slurm scheduler (the local cluster of scripts/slurm-local): a sweep, a
cancelled job, a job requeued at its time limit that continues at its first unfinished block.

Marked `slurm`: they skip, saying why, where no cluster answers (not root, no apt, not started);
with FPTQ_REQUIRE_SLURM=1 (CI, after `scripts/slurm-local up`) a missing cluster fails them."""

import os
import shutil
import subprocess
import time

import pytest

from conftest import fptq_popen
from conftest import fptq_run as _fptq_run
from fptq.study.store import ResultStore

pytestmark = pytest.mark.slurm


def _cluster_problem() -> str:
    if shutil.which("sinfo") is None:
        return "no Slurm client (sinfo) on this machine; `scripts/slurm-local up` installs one (root, apt)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"sinfo failed: {e}"
    if out.returncode != 0 or "idle" not in out.stdout and "mix" not in out.stdout:
        return f"no idle Slurm node (sinfo: {(out.stdout + out.stderr).strip()[:200]}); run `scripts/slurm-local up`"
    return ""


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = _cluster_problem()
    if problem:
        if os.environ.get("FPTQ_REQUIRE_SLURM") == "1":
            pytest.fail(f"FPTQ_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


def _sweep(tmp_path, schemes, *extra):
    return [
        "-m",
        "hydra/launcher=slurm_local",
        f"quant={','.join(schemes)}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *extra,
    ]


def _rows(tmp_path):
    return {r["scheme"]: r for r in ResultStore(str(tmp_path / "results")).read()}


def _logs(tmp_path) -> str:
    return "".join(p.read_text(errors="replace") for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.*"))


def _sacct(job: str) -> str:
    return subprocess.run(
        ["sacct", "-n", "-X", "-j", job, "-o", "JobID%30,State%20"], capture_output=True, text=True
    ).stdout


def test_a_sweep_through_slurm_writes_one_row_per_job(tmp_path):
    schemes = ["fp", "w8a8_rtn", "w4a16_rtn_g128", "w4a8_rtn"]
    _fptq_run(_sweep(tmp_path, schemes), tmp_path)
    rows = _rows(tmp_path)
    assert sorted(rows) == sorted(schemes)
    (array,) = {
        p.name.split("_")[0] for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.name[0].isdigit()
    }
    for _ in range(60):  # the result is back before the job's epilog ends: let Slurm catch up
        states = _sacct(array)
        if states.count("COMPLETED") == 4:
            break
        time.sleep(1)
    assert states.count("COMPLETED") == 4, states


def _stall(tmp_path, scheme, seconds):
    return [
        "+hydra.callbacks.stall._target_=study_faults.StallAfterBlock",
        f"+hydra.callbacks.stall.scheme={scheme}",
        "+hydra.callbacks.stall.block=0",
        f"+hydra.callbacks.stall.marker={tmp_path / 'stalled'}",
        f"+hydra.callbacks.stall.seconds={seconds}",
    ]


def _wait_for(path, timeout=240):
    t = time.time()
    while not path.exists() or not path.read_text():
        assert time.time() - t < timeout, f"{path} never appeared"
        time.sleep(1)
    return path.read_text()


def test_a_cancelled_job_leaves_no_row_and_a_relaunch_runs_only_it(tmp_path):
    schemes = ["w8a8_rtn", "w4a8_rtn", "w4a16_rtn_g128"]
    proc = fptq_popen(_sweep(tmp_path, schemes, *_stall(tmp_path, "w4a8_rtn", 600)), tmp_path)
    job = _wait_for(tmp_path / "stalled")
    subprocess.run(["scancel", job], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "CANCELLED" in out.upper(), out[-3000:]  # the sweep reports it
    first = _rows(tmp_path)
    assert sorted(first) == ["w4a16_rtn_g128", "w8a8_rtn"]  # no row for the cancelled job
    assert "CANCELLED" in _sacct(job)
    shutil.rmtree(tmp_path / "sweep")
    _fptq_run(_sweep(tmp_path, schemes), tmp_path)
    second = _rows(tmp_path)
    assert sorted(second) == sorted(schemes)
    assert all(second[s]["run_id"] == first[s]["run_id"] for s in first)  # only the cancelled job ran
    logs = _logs(tmp_path)
    assert logs.count("skip tiny-llama/") == 2 and "resuming" in logs  # it continued at block 1


def test_a_job_at_its_time_limit_is_requeued_and_finishes_in_the_same_launch(tmp_path):
    """timeout_min=2 with signal_delay_s=30: Slurm signals USR2 60-90 s after the start, submitit
    requeues the job, which continues at block 1 from its block state.

    slurmctld checks time limits every 30 s and sends the signal up to one period early (measured on
    the local cluster: --time=2 --signal=USR2@30 signalled at 59 s; --time=1 --signal=USR2@30 at
    29 s, but with a time limit of 1 minute the signal is due at once, so it comes at the first check,
    0-30 s after the start). Stop 27's CI ran timeout_min=1 and the signal came before submitit had
    loaded the job and installed its handler: the task died of USR2 and was never requeued."""
    extra = [
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=30",
        *_stall(tmp_path, "w4a8_rtn", 600),
    ]
    t = time.time()
    proc = fptq_popen(_sweep(tmp_path, ["w4a8_rtn"], *extra), tmp_path)
    out, _ = proc.communicate(timeout=900)
    logs = _logs(tmp_path)
    assert proc.returncode == 0, out[-3000:] + "\n--- job logs ---\n" + logs[-4000:]
    assert time.time() - t < 400  # the 600 s stall was cut short by the requeue
    (row,) = _rows(tmp_path).values()
    assert "resuming" in logs and "at block 1 of 2" in logs, logs[-3000:]
    assert "requeu" in logs.lower(), logs[-3000:]
