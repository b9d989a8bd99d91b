"""One run per job key at a time: identical jobs of one sweep run once.

Two jobs of a parallel sweep (submitit, Slurm) can have the same job key: the same overrides twice,
or two spellings of one config. Both used to run and the last writer won. Now a job claims its key
before any work by creating `<results_dir>/work/<job key>/owner.json` with O_EXCL (atomic on POSIX
filesystems and NFSv3+). A job that finds a live owner waits for the owner's row and then reports
that row as its own result; an owner that is gone (a dead PID on this host, a Slurm job that is no
longer queued or running, or its own earlier attempt after a requeue) is taken over. The claim is
dropped when the job ends, however it ends short of SIGKILL; a SIGKILLed owner is found dead by the
next launch.
"""

import json
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

log = logging.getLogger(__name__)
OWNER = "owner.json"


def _slurm_id() -> Optional[str]:
    """This process's Slurm job (array tasks as <array job>_<task>), or None outside Slurm."""
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if job and task:
        return f"{job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _started(pid: int) -> Optional[int]:
    """A process's start time in clock ticks since boot (Linux), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def me() -> Dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _started(os.getpid()),
        "slurm": _slurm_id(),
        "since": time.time(),
    }


def _slurm_alive(job: str) -> bool:
    try:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%T", "-j", job], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return True  # cannot tell: assume it lives (waiting is safe, a second writer is not)
    return any(s in out for s in ("RUNNING", "PENDING", "CONFIGURING", "COMPLETING", "REQUEUED", "SUSPENDED"))


def alive(owner: Dict[str, Any]) -> bool:
    """Whether a claim's owner may still be running."""
    mine = me()
    if owner.get("slurm") and owner["slurm"] == mine["slurm"]:
        return False  # this Slurm job's earlier attempt (requeued after a time limit or preemption)
    if owner.get("host") == mine["host"]:
        if owner.get("pid") == mine["pid"]:
            return False
        try:
            os.kill(int(owner["pid"]), 0)
        except (ProcessLookupError, ValueError, TypeError, KeyError):
            return False
        except PermissionError:
            pass
        if owner.get("started") is not None and _started(int(owner["pid"])) != owner["started"]:
            return False  # the PID now belongs to another process
        if not owner.get("slurm"):
            return True
    if owner.get("slurm"):
        return _slurm_alive(str(owner["slurm"]))
    return True  # another host, no scheduler to ask


class Claim:
    def __init__(self, folder: Path):
        self.file = Path(folder) / OWNER
        self.held = False

    def _read(self) -> Optional[Dict[str, Any]]:
        try:
            return json.loads(self.file.read_text())
        except (OSError, ValueError):
            return None

    def _create(self) -> bool:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(me(), f)
        self.held = True
        return True

    def acquire(self, done: Callable[[], Optional[Dict[str, Any]]], poll_s: float = 2.0, what: str = ""):
        """Claim the key, or wait: returns None once this process holds the claim, or the row that
        `done()` finds while a live owner runs the same job."""
        said = False
        while True:
            if self._create():
                return None
            owner = self._read()
            if owner is None:  # being written right now, or torn by a kill while writing
                time.sleep(poll_s)
                owner = self._read()
                if owner is None:
                    self.file.unlink(missing_ok=True)
                    continue
            if not alive(owner):
                log.info("%s: taking over the claim of a job that is gone (%s)", what, owner)
                self.file.unlink(missing_ok=True)
                continue
            row = done()
            if row is not None:
                return row
            if not said:
                log.info(
                    "%s: an identical job is running (%s); waiting for its row instead of running it twice",
                    what,
                    ", ".join(f"{k} {v}" for k, v in owner.items() if k != "since" and v),
                )
                said = True
            time.sleep(poll_s)

    def release(self) -> None:
        if self.held:
            owner = self._read()
            if (
                owner is not None
                and owner.get("pid") == os.getpid()
                and owner.get("host") == socket.gethostname()
            ):
                self.file.unlink(missing_ok=True)
            self.held = False
            try:
                self.file.parent.rmdir()  # only if empty: a block state stays for the next launch
            except OSError:
                pass
