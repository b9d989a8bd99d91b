"""fptq.study.claim: one run per job key; a dead owner is taken over, a live one waited for."""

import json
import os
import subprocess
import sys

from fptq.study.claim import OWNER, Claim, alive, me


def test_claim_is_exclusive_and_released(tmp_path):
    a = Claim(tmp_path / "k")
    assert a.acquire(lambda: None) is None and a.held
    assert json.loads((tmp_path / "k" / OWNER).read_text())["pid"] == os.getpid()
    a.release()
    assert not (tmp_path / "k").exists()  # an empty work folder goes with the claim


def test_a_dead_owner_is_taken_over(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / OWNER).write_text(json.dumps(dict(me(), pid=p.pid, started=None, slurm=None)))
    assert not alive(json.loads((tmp_path / "k" / OWNER).read_text()))
    c = Claim(tmp_path / "k")
    assert c.acquire(lambda: None, poll_s=0.01) is None and c.held


def test_a_reused_pid_is_not_the_owner(tmp_path):
    assert not alive(dict(me(), pid=1, started=-5))  # pid 1 lives, but started at another time


def test_a_live_owner_is_waited_for_until_its_row(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "k").mkdir()
        from fptq.study.claim import _started

        (tmp_path / "k" / OWNER).write_text(
            json.dumps(dict(me(), pid=p.pid, started=_started(p.pid), slurm=None))
        )
        calls = []

        def done():
            calls.append(1)
            return {"row": 1} if len(calls) >= 3 else None

        assert Claim(tmp_path / "k").acquire(done, poll_s=0.01) == {"row": 1} and len(calls) == 3
    finally:
        p.kill()
        p.wait()
