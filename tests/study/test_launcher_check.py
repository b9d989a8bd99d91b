"""The Slurm launcher's timing, checked before a sweep submits anything (fptq/study/launcher_check)."""

from pathlib import Path

from hydra import compose, initialize_config_dir

from conftest import fptq_run
from fptq.study.config import register_configs
from fptq.study.launcher_check import launcher_timing_problem

register_configs()
CONF = Path(__file__).resolve().parents[2] / "conf"


def test_the_slurm_presets_and_the_slurm_test_timing_pass():
    for launcher in ("slurm", "slurm_local"):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True
            )
        lc = cfg.hydra.launcher
        assert launcher_timing_problem(lc.timeout_min, lc.signal_delay_s, lc.max_num_timeout) == ""
    assert launcher_timing_problem(2, 30, 3) == ""  # tests/study/test_slurm.py's time-limit job: 60 s
    assert launcher_timing_problem(None, 120, 3) == ""  # no time limit set
    assert launcher_timing_problem(1, 30, 0) == ""  # no requeue asked for


def test_a_signal_that_could_come_before_the_handler_is_refused_with_the_fix():
    p = launcher_timing_problem(1, 30, 3)  # stop 27's CI: the task died of USR2
    assert "0 s after a job starts" in p and "Use timeout_min >= 2" in p
    p = launcher_timing_problem(2, 120, 3)  # the preset's delay under a 2-minute limit
    assert "Use signal_delay_s <= 30 or a longer timeout_min" in p
    assert launcher_timing_problem(2, 31, 3)  # one second past the margin
    assert "gives the job no warning signal" in launcher_timing_problem(20, 0, 3)


def test_a_sweep_with_such_a_timing_submits_nothing(tmp_path):
    """Refused in the launching process, before the launcher is built: no cluster needed."""
    args = [
        "-m",
        "hydra/launcher=slurm_local",
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=30",
    ]
    proc = fptq_run([*args, f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, ok=False)
    assert proc.returncode == 2
    assert "Use timeout_min >= 2" in proc.stdout + proc.stderr
    assert not (tmp_path / "sweep" / ".submitit").exists()
