"""A sweep's Slurm timing checked before any job is submitted (a Hydra callback, conf/config.yaml).

Slurm sends submitit's requeue signal (USR2) `signal_delay_s` before the time limit, and since
slurmctld looks at time limits every 30 s it may send it up to one period early (measured on
scripts/slurm-local: --time=1 --signal=USR2@30 signalled 29 s after the start). submitit installs
its handler only once the job has started Python and loaded its pickle; a signal before that kills
the task, which is then neither requeued nor recorded. So the time limit must leave the job a
startup margin before the earliest signal."""

import logging
import math
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("fptq")

SLURM_CHECK_PERIOD_S = 30  # slurmctld's time-limit check (PERIODIC_TIMEOUT)
STARTUP_MARGIN_S = 60  # Python, torch and the job pickle before submitit's handler exists


def launcher_timing_problem(timeout_min: Any, signal_delay_s: Any, max_num_timeout: Any) -> str:
    """Why a Slurm launcher's timing cannot work, or "" when it can."""
    if timeout_min is None or not max_num_timeout:
        return ""  # no time limit set here, or no requeue asked for
    if signal_delay_s is None or signal_delay_s <= 0:
        return (
            f"hydra.launcher.max_num_timeout={max_num_timeout} asks for requeues at the time limit, "
            f"but hydra.launcher.signal_delay_s={signal_delay_s} gives the job no warning signal; "
            "set signal_delay_s to a few minutes (the slurm preset uses 120)"
        )
    earliest = timeout_min * 60 - signal_delay_s - SLURM_CHECK_PERIOD_S
    if earliest >= STARTUP_MARGIN_S:
        return ""
    longest_delay = timeout_min * 60 - SLURM_CHECK_PERIOD_S - STARTUP_MARGIN_S
    if longest_delay > 0:
        fix = f"Use signal_delay_s <= {longest_delay} or a longer timeout_min"
    else:
        fix = (
            f"Use timeout_min >= {math.ceil((signal_delay_s + SLURM_CHECK_PERIOD_S + STARTUP_MARGIN_S) / 60)}"
        )
    return (
        f"hydra.launcher.timeout_min={timeout_min} with signal_delay_s={signal_delay_s}: Slurm may send "
        f"the requeue signal {max(earliest, 0)} s after a job starts (it checks every "
        f"{SLURM_CHECK_PERIOD_S} s and may signal one check early), before submitit can catch it (allow "
        f"{STARTUP_MARGIN_S} s to start); the job would die without a requeue. {fix}"
    )


class LauncherCheck(Callback):
    """Refuses a multirun whose launcher timing cannot requeue a job (see the module docstring).
    Hydra turns a callback's exception into a warning and goes on, so it exits (status 2) instead."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        problem = launcher_timing_problem(
            launcher.get("timeout_min"), launcher.get("signal_delay_s"), launcher.get("max_num_timeout")
        )
        if problem:
            log.error("%s", problem)
            sys.exit(2)
