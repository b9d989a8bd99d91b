"""Triton kernels against the torch reference; on CPU through TRITON_INTERPRET=1 (tests/conftest.py)."""

import pytest
import torch

from fptq.kernels.reference import gemm_ref, int_acc_ref, pack_int4, pack_weight, unpack_int4
from fptq.quant.granularity import GroupLayout
from fptq.quant.primitives import Grid, quantize, quantize_act_per_token, quantize_weight


def _layout(K, group):
    return GroupLayout(K, K if group is None else group)  # None: per output channel


def _weight(N, K, bits, group, sym, seed=0):
    W = torch.randn(N, K, generator=torch.Generator().manual_seed(seed))
    layout = _layout(K, group)
    q, s, z = quantize_weight(W, Grid(bits, sym), layout)
    return pack_weight(q, s, z, bits, layout.group_size), q


def _act_ref(x):
    """The kernels' activation reference is the library's quantizer: int8 codes, (M,) scales."""
    q, s = quantize_act_per_token(x)
    return q.to(torch.int8), s.squeeze(-1)


@pytest.mark.parametrize("K", [8, 7, 64, 130])
def test_pack_unpack_roundtrip(K):
    q = torch.randint(-8, 8, (5, K), generator=torch.Generator().manual_seed(K))
    packed = pack_int4(q)
    assert packed.shape == (5, 32 * -(-K // 64)) and packed.dtype == torch.int8
    assert torch.equal(unpack_int4(packed, K), q.to(torch.int8))


def test_pack_layout_golden():
    """Byte j of a 64-chunk holds code j (low nibble) and code 32 + j (high nibble)."""
    q = torch.zeros(1, 66, dtype=torch.int64)
    q[0, 0], q[0, 32], q[0, 1], q[0, 33], q[0, 64], q[0, 65] = 1, -2, 7, 3, 5, -1
    packed = pack_int4(q).view(torch.uint8).flatten().tolist()
    assert len(packed) == 64  # two chunks; the second is padded with zero codes
    # byte 0 = low 1 | high (-2 & 0xF = 0xE) << 4 = 0xE1; byte 1 = 7 | 3 << 4 = 0x37
    assert packed[:2] == [0xE1, 0x37] and packed[2:32] == [0] * 30
    # second chunk: codes 64 (5) and 65 (-1 -> 0xF) sit in the low nibbles of bytes 32, 33
    assert packed[32:34] == [0x05, 0x0F] and packed[34:] == [0] * 30


@pytest.mark.parametrize("M, K", [(1, 48), (5, 130), (16, 64)])
def test_quant_act_kernel(M, K):
    from fptq.kernels.quant_act import quant_act

    x = torch.randn(M, K, generator=torch.Generator().manual_seed(M)) * 3
    q, s = quant_act(x)
    rq, rs = _act_ref(x)
    torch.testing.assert_close(s, rs)
    assert torch.equal(q, rq)
    q2, s2 = quant_act(x, static_scale=0.05)
    rq2 = quantize(x, torch.tensor(0.05), None, 8, True).to(torch.int8)
    assert torch.equal(q2, rq2) and torch.all(s2 == 0.05)


def test_quant_act_rounds_ties_to_even_like_the_library():
    """Exact ties (x / scale = k + 0.5) round half to even in the kernel and in primitives."""
    from fptq.kernels.quant_act import quant_act

    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 126.5, -127.5, 0.49]])
    q, _ = quant_act(x, static_scale=1.0)
    expected = [0, 2, 2, 0, -2, -2, 4, 126, -128, 0]
    assert q.flatten().tolist() == expected
    assert quantize(x, torch.tensor(1.0), None, 8, True).flatten().tolist() == expected


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("M, N, K", [(1, 32, 64), (7, 40, 96), (3, 16, 50)])
def test_gemm_exact_int32_accumulators(bits, sym, M, N, K):
    from fptq.kernels.gemm import gemm

    w, _ = _weight(N, K, bits, None, sym, seed=M + N)
    a = torch.randint(-128, 128, (M, K), dtype=torch.int8, generator=torch.Generator().manual_seed(K))
    acc = gemm(a, torch.ones(M), w, raw=True)
    assert acc.dtype == torch.int32
    assert torch.equal(acc, int_acc_ref(a, w))


@pytest.mark.parametrize(
    "bits, group, sym", [(4, None, True), (4, 32, True), (4, 32, False), (8, None, True), (8, 64, True)]
)
@pytest.mark.parametrize("M, N, K", [(1, 32, 64), (9, 48, 160), (4, 16, 80)])  # 80: a ragged last group
def test_gemm_output_close_to_reference(bits, group, sym, M, N, K):
    from fptq.kernels.gemm import gemm

    w, _ = _weight(N, K, bits, group, sym, seed=3)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(1))
    a, s = _act_ref(x)
    bias = torch.randn(N)
    out = gemm(a, s, w, bias=bias, out_dtype=torch.float32)
    ref = gemm_ref(a, s, w, bias)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("group", [None, 32])
def test_split_k_matches_single_program(group):
    from fptq.kernels.gemm import gemm

    w, _ = _weight(32, 160, 4, group, True, seed=4)
    x = torch.randn(3, 160, generator=torch.Generator().manual_seed(2))
    a, s = _act_ref(x)
    bias = torch.randn(32)
    one = gemm(a, s, w, bias=bias, out_dtype=torch.float32, split_k=1)
    split = gemm(
        a, s, w, bias=bias, out_dtype=torch.float32, split_k=3
    )  # 160 = 5 blocks of 32 over 3 programs
    torch.testing.assert_close(split, one, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(split, gemm_ref(a, s, w, bias), rtol=1e-4, atol=1e-4)


def test_quantlinear_triton_backend_matches_reference():
    """A W4A8 QuantLinear gives the same output through the Triton path as the reference path
    (same int8 codes except on exact rounding ties, which random inputs do not hit)."""
    from fptq.quant.qlinear import QuantLinear, set_backend

    torch.manual_seed(0)
    W = torch.randn(48, 96)
    q, s, z = quantize_weight(W, Grid(4, True), GroupLayout(96, 32))
    for mode in ("dynamic", "static"):
        ql = QuantLinear.from_codes(
            q,
            s,
            z,
            bits=4,
            group_size=32,
            bias=torch.randn(48),
            act_mode=mode,
            act_scale=torch.tensor(0.03) if mode == "static" else None,
        )
        model = torch.nn.Sequential(ql)
        for shape in [(2, 5, 96), (1, 1, 96)]:  # M = 10: quant_act + GEMM; M = 1: fused (one launch)
            x = torch.randn(*shape)
            set_backend(model, "reference")
            ref = ql(x)
            assert set_backend(model, "triton") == 1
            out = ql(x)
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_triton_forward_never_reads_the_static_scale_to_the_host(monkeypatch):
    """The static activation scale stays a tensor all the way into the kernels: reading it back as a
    Python number (float(), .item(), .tolist()) would be a GPU-to-host sync in every linear on CUDA."""
    from fptq.quant.qlinear import QuantLinear, set_backend

    W = torch.randn(32, 128, generator=torch.Generator().manual_seed(1))
    q, s, z = quantize_weight(W, Grid(4, True), GroupLayout(128, 64))
    ql = QuantLinear.from_codes(
        q, s, z, bits=4, group_size=64, act_mode="static", act_scale=torch.tensor(0.05)
    )
    model = torch.nn.Sequential(ql)
    x_decode, x_prefill = torch.randn(1, 128), torch.randn(20, 128)
    set_backend(model, "reference")
    refs = [ql(x_decode), ql(x_prefill)]
    set_backend(model, "triton")

    def sync(*a, **k):
        raise AssertionError("the forward pass read a tensor back to the host")

    for name in ("__float__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    outs = [ql(x_decode), ql(x_prefill)]  # M = 1: gemm_fused; M = 20: quant_act + gemm
    monkeypatch.undo()
    for out, ref in zip(outs, refs, strict=True):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_triton_backend_rejects_weight_only():
    from fptq.quant.qlinear import QuantLinear, set_backend

    W = torch.randn(32, 64)
    q, s, z = quantize_weight(W, Grid(4, True), GroupLayout(64, 32))
    ql = QuantLinear.from_codes(q, s, z, bits=4, group_size=32, act_mode="none")
    with pytest.raises(ValueError, match="reference"):
        set_backend(torch.nn.Sequential(ql), "triton")


def test_quantized_model_runs_on_triton_backend(calib_ids):
    """A tiny LLaMA quantized with FPTQ W4A8 gives the same logits on both backends."""
    from conftest import tiny_model
    from fptq.quant.pipeline import quantize_model
    from fptq.quant.qlinear import set_backend
    from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec

    model = tiny_model("llama")
    quantize_model(
        model,
        QuantScheme("w4a8_fptq", WeightSpec(4, 32), ActSpec()),
        calib_ids,
        batch_size=4,
        progress=False,
    )
    ids = calib_ids[:2, :16]
    with torch.no_grad():
        ref = model(ids).logits
        assert set_backend(model, "triton") == 14
        out = model(ids).logits
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 1e-3, rel


# ---- every GPU config's block sizes, exact under the interpreter ---------------------------------


def _exact_weight(N, K, group, bits=4, sym=True, seed=0):
    """Codes with power-of-two scales: every product and partial sum is exact in float32, so the
    kernel's float output must equal the integer reference bit for bit, whatever the split-K."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if sym else (0, 2**bits)
    q = torch.randint(lo, hi, (N, K), generator=g)
    n_groups = -(-K // group)
    scale = 2.0 ** -torch.randint(0, 4, (N, n_groups), generator=g).float()
    zero = None if sym else torch.randint(0, 2**bits, (N, n_groups), generator=g).float()
    return pack_weight(q, scale, zero, bits, group)


def _tile_cases():
    from fptq.kernels import configs

    for tile in configs.GPU_TILES:
        bk = tile[2]
        yield tile, 0
        if not tile[5]:
            yield tile, 32 if bk == 64 else bk


@pytest.mark.parametrize("tile, group", list(_tile_cases()), ids=lambda v: str(v))
def test_every_gpu_tile_is_exact_with_split_k(tile, group):
    from fptq.kernels.gemm import gemm
    from fptq.kernels.reference import gemm_int_ref

    bm, bn, bk = tile[:3]
    K = 3 * bk + 32  # three whole K-tiles and a ragged tail
    M, N = 5, bn + 8  # a ragged row block and a ragged second column block
    w = _exact_weight(N, K, group or K, seed=bk + bn)
    a = torch.randint(-128, 128, (M, K), dtype=torch.int8, generator=torch.Generator().manual_seed(bm))
    a_s = torch.full((M,), 0.5)
    ref = gemm_int_ref(a, a_s, w)
    for split in (1, 2, 3):
        out = gemm(a, a_s, w, out_dtype=torch.float32, split_k=split, tile=tile)
        assert torch.equal(out, ref), (tile, group, split, (out - ref).abs().max())
    if group == 0:  # the raw int32 accumulators too
        assert torch.equal(gemm(a, a_s, w, raw=True, tile=tile), int_acc_ref(a, w))


@pytest.mark.parametrize("bits, sym, group", [(4, False, 128), (4, False, 32), (8, True, 0), (8, False, 64)])
def test_asymmetric_and_8bit_are_exact_with_split_k(bits, sym, group):
    from fptq.kernels import configs
    from fptq.kernels.gemm import gemm
    from fptq.kernels.reference import gemm_int_ref

    tile = configs.GPU_TILES[2] if group in (32, 64) else configs.GPU_TILES[0]  # BLOCK_K 64 / 128
    K = 3 * tile[2] + 32
    w = _exact_weight(40, K, group or K, bits=bits, sym=sym, seed=bits)
    a = torch.randint(-128, 128, (3, K), dtype=torch.int8, generator=torch.Generator().manual_seed(7))
    a_s = torch.full((3,), 0.25)
    ref = gemm_int_ref(a, a_s, w)
    for split in (1, 2, 3):
        out = gemm(a, a_s, w, out_dtype=torch.float32, split_k=split, tile=tile)
        assert torch.equal(out, ref), (bits, sym, group, split)


@pytest.mark.parametrize("group", [0, 128])
def test_fused_activation_quantization_matches_quantizing_first(group):
    """gemm_fused quantizes float activations inside the GEMM (static scale or per token) to the
    codes quant_act gives, so the output equals quantizing first."""
    from fptq.kernels import configs
    from fptq.kernels.gemm import gemm, gemm_fused
    from fptq.kernels.quant_act import quant_act

    tile = configs.GPU_TILES[0]
    K = 3 * tile[2] + 32
    w = _exact_weight(24, K, group or K, seed=11)
    s = 0.125
    x = torch.randn(2, K, generator=torch.Generator().manual_seed(3)) * 6
    a_q, a_s = quant_act(x, static_scale=s)
    bias = torch.randn(24)
    for split in (1, 2, 3):
        fused = gemm_fused(x, w, s, bias=bias, out_dtype=torch.float32, split_k=split, tile=tile)
        two = gemm(a_q, a_s, w, bias=bias, out_dtype=torch.float32, split_k=split, tile=tile)
        torch.testing.assert_close(fused, two, rtol=0, atol=1e-5)
        torch.testing.assert_close(fused, gemm_ref(a_q, a_s, w, bias), rtol=1e-5, atol=1e-4)
    # per token: the row scales are found inside the GEMM, as quant_act finds them
    a_q, a_s = quant_act(x)
    for split in (1, 3):
        fused = gemm_fused(x, w, None, bias=bias, out_dtype=torch.float32, split_k=split, tile=tile)
        two = gemm(a_q, a_s, w, bias=bias, out_dtype=torch.float32, split_k=split, tile=tile)
        torch.testing.assert_close(fused, two, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="float activations"):
        gemm_fused(a_q, w)


def test_quant_act_two_pass_fallback_matches_one_pass(monkeypatch):
    from fptq.kernels import quant_act as qa

    x = torch.randn(3, 300, generator=torch.Generator().manual_seed(5)) * 4
    one = qa.quant_act(x)
    monkeypatch.setattr(qa, "ONE_PASS_MAX", 64)  # rows wider than this take two passes of 64
    two = qa.quant_act(x, block_k=64)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_gemm_refuses_what_it_cannot_run():
    from fptq.kernels.gemm import MAX_K_PER_CHANNEL, gemm
    from fptq.kernels.reference import PackedWeight

    K = MAX_K_PER_CHANNEL + 1  # 131072: int32 partial sums could overflow per channel
    w = PackedWeight(torch.zeros(1, K // 2, dtype=torch.int8), torch.ones(1, 1), None, 4, K, K, 1)
    with pytest.raises(ValueError, match="overflow"):
        gemm(torch.zeros(1, K, dtype=torch.int8), torch.ones(1), w)
    w96 = _weight(8, 192, 4, 96, True)[0]  # 96 = 3 x 32: no K-tile fits it
    with pytest.raises(ValueError, match="32 or a multiple of 64"):
        gemm(torch.zeros(1, 192, dtype=torch.int8), torch.ones(1), w96)


def _qoq_weight(N, K, group=128, seed=0):
    from fptq.quant.weight.qoq import qoq_quantize

    W = torch.randn(N, K, generator=torch.Generator().manual_seed(seed))
    q4, s2, z, s1 = qoq_quantize(W, GroupLayout(K, group))
    return pack_weight(q4, s2, z, 4, group, channel_scale=s1)


@pytest.mark.parametrize("M, N, K", [(1, 40, 256), (5, 24, 320), (20, 72, 384)])
def test_qoq_weights_run_as_a_per_channel_int8_gemm(M, N, K):
    """The qoq format (QServe's progressive weights) through the GEMM: the int4 -> int8 step in
    integers inside the K loop, one int32 accumulator over all of K, the float per-channel scale in
    the epilogue. Equals the reference's integer pipeline (ragged N, a ragged last group at K = 320),
    alone, split along K, and with the activation quantization fused."""
    from fptq.kernels.gemm import gemm, gemm_fused
    from fptq.kernels.quant_act import quant_act
    from fptq.kernels.reference import gemm_int_ref

    w = _qoq_weight(N, K, seed=M)
    assert w.format == "qoq"
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(5)) * 4
    a_q, a_s = quant_act(x)
    ref = gemm_int_ref(a_q, a_s, w)
    for split in (1, 2):
        out = gemm(a_q, a_s, w, out_dtype=torch.float32, split_k=split)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    if M <= 16:
        fused = gemm_fused(x, w, None, out_dtype=torch.float32)
        torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    with pytest.raises(ValueError, match="raw int32"):
        gemm(a_q, a_s, w, raw=True)
