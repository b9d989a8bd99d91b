"""A Hydra callback for the study tests: make one job of a sweep fail once, in the middle of its
work (after loading and the fp baseline, when quantization starts), by raising or by SIGKILL.
Used as `+hydra.callbacks.fault._target_=study_faults.FailOnce` with tests/ on PYTHONPATH."""

import os
import signal
from pathlib import Path

from hydra.experimental.callback import Callback


class FailOnce(Callback):
    def __init__(self, scheme: str, marker: str, mode: str = "raise"):
        self.scheme, self.marker, self.mode = scheme, Path(marker), mode

    def on_job_start(self, config, **kwargs) -> None:
        if config.quant.name != self.scheme or self.marker.exists():
            return
        self.marker.write_text("failed once")
        import fptq.study.runner as runner

        original = runner.quantize

        def quantize(*args, **kw):
            runner.quantize = original  # once per process
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected failure in quantize")

        runner.quantize = quantize


class KillAfterBlock(Callback):
    """SIGKILL the job (no warning, no cleanup) right after block `block`'s state is written, once
    (the marker file says it happened)."""

    def __init__(self, block: int, marker: str):
        self.block, self.marker = int(block), Path(marker)

    def on_job_start(self, config, **kwargs) -> None:
        if self.marker.exists():
            return
        from fptq.quant.blockstate import BlockState

        original = BlockState.save
        block, marker = self.block, self.marker

        def save(state, bi, *args, **kw):
            original(state, bi, *args, **kw)
            if bi == block:
                marker.write_text("killed once")
                os.kill(os.getpid(), signal.SIGKILL)

        BlockState.save = save


class StallAfterBlock(Callback):
    """Once (marker file), after block `block`'s state is written: write the Slurm job id of this
    job to `marker` and sleep `seconds`, so a test can scancel it or let its time limit pass."""

    def __init__(self, scheme: str, block: int, marker: str, seconds: float = 600):
        self.scheme, self.block, self.marker, self.seconds = scheme, int(block), Path(marker), float(seconds)

    def on_job_start(self, config, **kwargs) -> None:
        if config.quant.name != self.scheme or self.marker.exists():
            return
        import time

        from fptq.quant.blockstate import BlockState

        original = BlockState.save
        block, marker, seconds = self.block, self.marker, self.seconds

        def save(state, bi, *args, **kw):
            original(state, bi, *args, **kw)
            if bi == block and not marker.exists():
                job = (
                    os.environ.get("SLURM_ARRAY_JOB_ID", "") + "_" + os.environ.get("SLURM_ARRAY_TASK_ID", "")
                )
                marker.write_text(job if job != "_" else os.environ.get("SLURM_JOB_ID", ""))
                time.sleep(seconds)

        BlockState.save = save
