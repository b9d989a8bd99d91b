"""The GPU benchmarks stay runnable: their CPU smoke modes (Triton's interpreter) wire every variant
(bf16, torch._int_mm when on a GPU, our GEMM alone, with quantization, fused) and check it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["bench_gemm.py", "bench_e2e.py"])
def test_benchmark_smoke(script):
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "smoke ok" in out.stdout
    if script == "bench_gemm.py":
        for variant in ("triton_w4a8_g128_alone", "triton_w4a8_g128_quant", "triton_w4a8_g128_fused_static"):
            assert variant in out.stdout
