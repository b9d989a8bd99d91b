"""The GPU check's rehearsal on the CPU: benchmarks/gpu/check.py's whole control flow (correctness,
timing and end to end) under TRITON_INTERPRET=1 on tiny shapes, so that a GPU window is not lost to a
typo. It checks the plumbing and the correctness section's verdicts, not speed."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_rehearses_every_section(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu" / "check.py"), str(tmp_path), "--rehearse"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["check.json", "check.md"]  # at most 8 files come back from the GPU machine
    res = json.loads((tmp_path / "check.json").read_text())
    assert res["errors"] == {}
    checks = {r["check"] for r in res["correctness"]}
    for name in ("gemm w4 per channel, exact int32", "gemm w4 g128 asym", "gemm w4 g32", "gemm w8 per channel",
                 "gemm w4 g128, split-K 3", "gemm_fused static g128", "gemm_fused per token g128",
                 "gemm w4 qoq g128 (integer second level, SWAR asm)", "gemm_fused static qoq g128",
                 "quant_act per token", "quant_act static", "gemm_fused static, exact rounding ties"):  # fmt: skip
        assert name in checks, name
    assert all(r["ok"] for r in res["correctness"])
    variants = {r["variant"] for r in res["timing"]["rows"]}
    assert {
        "bf16 matmul",
        "W4A8 g128 static (fused)",
        "W4A8 g128 dynamic",
        "W4A8 channel dynamic",
        "W4A8 qoq g128 dynamic",
    } <= variants
    assert all(r["us"] > 0 for r in res["timing"]["rows"])
    e2e = res["end_to_end"]
    assert e2e["logits_static"]["ok"] and e2e["logits_dynamic"]["ok"]
    assert {r["model"] for r in e2e["runs"]} == {"bf16", "W4A8 g128 static", "W4A8 g128 dynamic"}
    assert res["planned"]["gemm"] > 0 and res["planned"]["timings"] == 2 * 3 * 6
    # the table comes last in the output, the run's wall time inside the budget
    assert out.stdout.rstrip().endswith((tmp_path / "check.md").read_text().rstrip().splitlines()[-1])
    assert res["wall_s"] < 480


def test_gpu_check_refuses_to_run_without_a_gpu_or_the_interpreter(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu" / "check.py"), str(tmp_path), "--rehearse"],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode != 0 and "TRITON_INTERPRET=1" in out.stderr
