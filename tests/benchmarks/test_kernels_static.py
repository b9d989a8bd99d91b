"""The static performance model (benchmarks/kernels_static.py) against cases computed by hand: the
model's arithmetic, not its own output, is what these check. Its inputs from the sm_90a compile are
checked in tests/kernels/test_sm90.py."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ks():
    spec = importlib.util.spec_from_file_location("kernels_static", ROOT / "benchmarks" / "kernels_static.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def toy(ks):
    # 1 TB/s, 4 SMs at 1 GHz, 4 warp-instructions per clock per SM (1.6e10 / s), int8 2 POPS, 1 us launch
    return ks.Device("toy", hbm=1e12, sms=4, clock=1e9, bf16_peak=1e12, int8_peak=2e12, launch_s=1e-6)


def test_imbalance_is_the_busiest_sm_over_the_mean(ks):
    assert ks.imbalance(132, 132) == 1.0
    assert ks.imbalance(264, 132) == 1.0
    assert ks.imbalance(192, 132) == pytest.approx(1.375)  # 2 programs on the busiest SMs, 1.4545 mean
    assert ks.imbalance(66, 132) == pytest.approx(2.0)  # half the SMs idle
    assert ks.imbalance(6, 4) == pytest.approx(4 / 3)


def test_memory_bound_launch_by_hand(ks, toy):
    # 8 MB: 8 us of HBM. 2 x 10^6 x 2 ops: 2 us of MMA. 6 programs x 4 warps x (10 x 50) instructions
    # = 12000 warp-instructions: 0.75 us; with 100 outside the loop: 14400, 0.9 us. f = 2 x 4 / 6.
    launch = ks.Launch("k", bytes=8_000_000, programs=6, warps=4, loop_iters=10, loop_instr=50,
                       outside_instr=100, mma_ops=4e6)  # fmt: skip
    p = ks.project(launch, toy)
    assert p["t_mem"] == pytest.approx(8e-6)
    assert p["t_mma"] == pytest.approx(2e-6)
    assert p["t_issue"] == pytest.approx(0.75e-6)
    assert p["t_issue_all"] == pytest.approx(0.9e-6)
    assert p["upper"] == pytest.approx(8e-6) and p["bound"] == "memory"
    assert p["lower"] == pytest.approx(1e-6 + (4 / 3) * 8e-6)  # 11.67 us


def test_serialized_mma_and_issue_by_hand(ks, toy):
    # 1 us of HBM, 4 us of MMA, 0.75 us of loop issue (0.9 us with the outside instructions)
    launch = ks.Launch("k", bytes=1_000_000, programs=6, warps=4, loop_iters=10, loop_instr=50,
                       outside_instr=100, mma_ops=8e6)  # fmt: skip
    p = ks.project(launch, toy)
    assert p["upper"] == pytest.approx(4e-6) and p["bound"] == "tensor core"
    assert p["lower"] == pytest.approx(1e-6 + (4 / 3) * (4e-6 + 0.9e-6))  # 7.53 us


def test_launches_in_series_are_summed_not_maxed(ks, toy):
    a = ks.Launch("a", bytes=8_000_000, programs=4, warps=4, loop_iters=1, loop_instr=1)
    b = ks.Launch("b", bytes=2_000_000, programs=4, warps=4, loop_iters=1, loop_instr=1)
    both = ks.project_all([a, b], toy)
    assert both["upper"] == pytest.approx(10e-6)
    assert both["lower"] == pytest.approx(2e-6 + 10e-6)  # one launch cost each


def test_mma_sync_runs_at_its_fraction_of_the_peak(ks, toy):
    launch = ks.Launch("k", bytes=0, programs=4, warps=4, loop_iters=0, loop_instr=0, mma_ops=4e6,
                       mma_peak_fraction=0.5)  # fmt: skip
    assert ks.project(launch, toy)["t_mma"] == pytest.approx(4e-6)


def test_device_budgets(ks):
    # one SM's share of HBM per clock, and the warp-instructions per byte that fit in it
    assert ks.H100.bytes_per_clock_per_sm == pytest.approx(3.35e12 / 132 / 1.83e9)  # 13.87 B
    assert ks.H100.issue_per_byte == pytest.approx(0.2884, abs=1e-4)
    assert ks.H200.issue_per_byte == pytest.approx(0.2013, abs=1e-4)


def test_bf16_roofline_by_hand(ks):
    t, b = ks.bf16_time(1, 4096, 4096, ks.H100)
    assert b == 4096 * 4096 * 2 + 2 * 4096 * 2
    assert t == pytest.approx(b / 3.35e12)  # 10.02 us: memory-bound
    t, _ = ks.bf16_time(2048, 4096, 4096, ks.H100)
    assert t == pytest.approx(2 * 2048 * 4096 * 4096 / 989.4e12)  # 69.46 us: compute-bound


def test_gemm_launch_counts_by_hand(ks):
    """A decode GEMM with the static activation scale fused: 16x128x128 tiles, split 4, g128."""
    report = {"loop": {"instructions": 100, "outside": 300, "other_loops": 0}, "config": {"warps": 4}}
    g = ks.gemm_launch(1, 4096, 4096, (16, 128, 128), 4, report, 128, True, "static")
    assert g.bytes == 4096 * 4096 // 2 + 32 * 4096 * 2 + 4096 * 2 + 4096 * 2  # weights, scales, x, y
    assert g.programs == 32 * 4
    assert g.loop_iters == 8  # 32 K-tiles over 4 splits
    assert g.mma_ops == 2 * 16 * 4096 * 4096 and g.mma_peak_fraction == ks.MMA_SYNC_FRACTION
    assert g.outside_instr == 300 and g.other_instr == 0
    # per token, fused: every program re-reads its row in 1024-wide chunks (4), 50 instructions each
    report["loop"]["other_loops"] = 50
    g = ks.gemm_launch(1, 4096, 4096, (16, 128, 128), 4, report, 128, True, "token")
    assert g.other_instr == 1 * 4 * 50


def test_quant_act_launch_by_hand(ks):
    report = {"loop": {"outside": 120}, "config": {"num_warps": 8}}
    q = ks.quant_act_launch(2048, 4096, report)
    assert q.bytes == 2048 * 4096 * 3 + 2048 * 4  # fp16 in, int8 out, a float32 scale per row
    assert q.programs == 2048 and q.warps == 8 and q.loop_iters * q.loop_instr == 120
