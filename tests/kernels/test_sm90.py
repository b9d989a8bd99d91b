"""The sm_90a tier: every GPU autotune config of the GEMM (and the activation quantizer) compiled
for H100 on the CPU, and held to what an H100 needs (issue: W4A8 kernels that would be fast on an
H100). `python -m fptq.kernels.sm90` does the compiling, in a process without TRITON_INTERPRET;
the numbers are tabulated in benchmarks/kernels_static.md.

Budget: at H100 HBM rate one SM receives 3.35 TB/s / 132 SMs / 1.83 GHz = 13.9 bytes per clock
and issues 4 warp-instructions per clock, so a decode loop that streams packed weights must issue at
most 4 / 13.9 = 0.29 warp-instructions per weight byte, or it is issue-bound below bandwidth.
"""

import pytest

from fptq.kernels import configs

pytestmark = pytest.mark.sm90

ISSUE_PER_BYTE = 4 / (3.35e12 / 132 / 1.83e9)  # 0.288


@pytest.fixture(scope="module")
def reports():
    from fptq.kernels import sm90

    rows = sm90.collect()
    assert len(rows) == len(configs.all_sm90_cases())
    return rows


def _gemm(reports):
    return [r for r in reports if r["kernel"] == "gemm"]


def test_triton_is_the_pinned_version():
    import triton

    assert triton.__version__ == "3.9.0", "the sm90 budgets were measured on Triton 3.9.0 (pyproject pins it)"


def test_every_config_compiles_without_spills(reports):
    for r in reports:
        assert r["error"] is None, (r["config"], r["error"])
        assert r["spill_bytes"] == 0, (r["config"], r["registers"], r["spill_bytes"])
        assert 0 < r["registers"] <= 255


def test_wide_tiles_use_wgmma(reports):
    for r in _gemm(reports):
        if r["config"]["BLOCK_M"] >= 64:
            assert r["loop"]["wgmma"] > 0, r["config"]
        else:  # M = 16 tiles: mma.sync (wgmma's M is 64)
            assert r["loop"]["mma"] > 0, r["config"]


def test_k_loop_has_no_byte_gathers_and_copies_asynchronously(reports):
    for r in _gemm(reports):
        loop = r["loop"]
        assert loop["found"], r["config"]
        # qoq: the group's int8 scale and zero per output channel are byte loads (2-4 per thread per
        # K-tile, observed), not gathers of A or B
        assert loop["byte_loads"] <= (4 if r["config"].get("qoq") else 0), r["config"]
        assert loop["async_copies"] >= 2, r["config"]  # A and B through cp.async


def test_decode_loop_within_the_issue_budget(reports):
    """Observed (Triton 3.9.0): 0.05-0.27 across the int4 decode tiles; the old kernel: 0.40-0.65.
    The qoq format's loops also run its integer second level (4 weights per 32-bit op): 0.18-0.34,
    issue-bound at decode with the static scale fused (over 0.288); held to their observed ceiling."""
    for r in _gemm(reports):
        c = r["config"]
        if c["BLOCK_M"] == 16 and c["bits"] == 4:
            budget = 0.35 if c.get("qoq") else ISSUE_PER_BYTE
            assert r["warp_instr_per_weight_byte"] <= budget, (c, r["warp_instr_per_weight_byte"])


def test_every_supported_group_size_has_a_compiled_config(reports):
    compiled = {
        (r["config"]["BLOCK_M"], r["config"]["BLOCK_N"], r["config"]["BLOCK_K"], r["config"]["group"])
        for r in _gemm(reports)
        if r["error"] is None and r["config"]["bits"] == 4 and r["config"]["fuse"] == "none"
    }
    for group in (0, 32, 64, 128, 256):
        assert configs.supported_group(group)
        for M in (1, 16, 2048):
            pruned = configs.prune(
                configs.gemm_configs(gpu=True), {"M": M, "N": 4096, "K": 4096, "GROUP": group}
            )
            assert pruned, (group, M)
            for c in pruned:
                k = c.kwargs
                assert (k["BLOCK_M"], k["BLOCK_N"], k["BLOCK_K"], group) in compiled, (group, M, k)
    assert not configs.supported_group(96) and not configs.supported_group(16)


@pytest.mark.parametrize("K, N", [(k, n) for k, n in configs.TARGET_SHAPES])
def test_decode_fills_the_gpu(K, N):
    """At M = 1 every config the autotuner may pick launches at least 132 programs."""
    for fuse in (False, True):
        pruned = configs.prune(
            configs.gemm_configs(gpu=True), {"M": 1, "N": N, "K": K, "GROUP": 128, "FUSE": fuse}
        )
        for c in pruned:
            k = c.kwargs
            programs = -(-1 // k["BLOCK_M"]) * -(-N // k["BLOCK_N"]) * k["SPLIT_K"]
            assert programs >= configs.H100_SMS, (K, N, k, programs)


def _static_model():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels_static.py"
    spec = importlib.util.spec_from_file_location("kernels_static", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_static_model_bounds_hold_their_floors(reports):
    """The projected LOWER bounds of the issue's goals (benchmarks/kernels_static.md) do not fall below
    what this code reaches; the model's arithmetic is checked by hand in
    tests/benchmarks/test_kernels_static.py. Observed (Triton 3.9.0), worst shape: prefill g128 0.76x,
    g128 as qoq 0.95x and per channel 1.14x (7B, H100; goals 1.3x and 1.6x, missed), decode M = 1 on an H200 3.04x for
    70B (goal 3x) and 1.66x for 7B (goal 2.5x, missed: o_proj's 7 us bf16 GEMV against a 2 us
    launch cost and 1.24x imbalance)."""
    ks = _static_model()
    floors = {"prefill g128 as qoq": 0.93, "prefill g128": 0.74, "prefill per channel": 1.12,
              "decode g128, 70B": 3.0, "decode g128, 7B": 1.6}  # fmt: skip
    for g in ks.goals(reports):
        key = next(k for k in floors if g["goal"].startswith(k))
        assert g["lower"] >= floors[key], g
    for _, K, N in ks.SHAPES:
        for M, act, group, fmt in ks.ROWS:
            lo, hi, _ = ks.ratio_bounds(reports, M, N, K, act, group, ks.H200, fmt)
            assert 0 < lo <= hi, (K, N, M, act, group, fmt)
    text = ks.render(reports)
    assert "Projections, not timings" in text and "speedup" not in text.lower()


def test_triton_pipelines_fp16_wgmma_but_not_int8():
    """The compiler probe (kernels/wgmma_probe.py): the canonical TMA matmul keeps one wgmma group in
    flight in fp16 (a 0x1 wait in the loop) but waits for all of them in int8 (0x0 only), Triton 3.9.0.
    This is why the int8 prefill loops serialize tensor cores and issue (the lower bound of
    benchmarks/kernels_static.md); if a Triton upgrade pipelines int8, this fails: re-measure then."""
    from fptq.kernels import sm90

    (row,) = sm90.collect(args=["--probe"])
    waits = row["wgmma_waits"]
    assert "0x1" in waits["fp16"], waits
    assert waits["i8"] and set(waits["i8"]) == {"0x0"}, waits
