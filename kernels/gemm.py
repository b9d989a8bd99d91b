"""W4A8 and W8A8 GEMM: C = (A_q * a_scale) @ dequant(W)^T, int8 x int8 -> int32 on the tensor cores.

int4 weights are loaded packed (kernels/reference.py documents the layout) and unpacked to int8
in registers: low nibbles multiply A's even columns, high nibbles its odd columns (two int8 dots
of BLOCK_K/2 each). Per-channel: one int32 accumulator over all of K, scaled once in the
epilogue. Per-group: each K-block lies inside one group (BLOCK_K divides the group size), so its
int32 partial sum is scaled by that group's scale and added to a float32 accumulator.
Asymmetric weights subtract zero * rowsum(A) per group.
On CPU set TRITON_INTERPRET=1 before importing this module (one config, no autotuning).
"""

import os

import torch
import triton
import triton.language as tl

from .reference import PackedWeight, storage_bits

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=1)]
    cfgs = []
    for bm, bn, bk, w, s in [
        # decode (M <= 16)
        (16, 64, 128, 4, 4),
        (16, 128, 128, 4, 4),
        (16, 64, 256, 4, 3),
        (16, 32, 128, 4, 5),
        (16, 128, 64, 4, 5),
        # mid
        (32, 128, 128, 4, 4),
        (64, 128, 128, 4, 4),
        (64, 64, 128, 4, 4),
        # prefill
        (128, 128, 128, 8, 3),
        (128, 256, 128, 8, 3),
        (256, 128, 128, 8, 3),
        (128, 128, 64, 4, 4),
    ]:
        cfgs.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s))
    return cfgs


def _prune(configs, named_args, **kwargs):
    group = kwargs.get("GROUP", named_args.get("GROUP", 0))
    M = named_args["M"]
    out = [c for c in configs if group <= 0 or group % c.kwargs["BLOCK_K"] == 0]
    small = [c for c in out if c.kwargs["BLOCK_M"] <= max(16, triton.next_power_of_2(M))]
    return small or out


@triton.autotune(
    configs=_configs(),
    key=["M_BUCKET", "N", "K", "GROUP", "W_BITS", "SPLIT_K"],
    prune_configs_by={"early_config_prune": _prune},
    reset_to_zero=["C"],
)
@triton.jit
def _gemm_kernel(
    A,
    B,
    C,
    AS,
    WS,
    WZ,
    BIAS,
    M,
    N,
    K,
    M_BUCKET,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    stride_sg,
    stride_sn,
    GROUP: tl.constexpr,
    W_BITS: tl.constexpr,
    ASYM: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RAW: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    # split-K (decode): program pid_k covers a BLOCK_K-aligned slice of K and atomically adds its
    # scaled partial result into a zeroed float32 output
    k_per = tl.cdiv(K, SPLIT_K * BLOCK_K) * BLOCK_K
    k_lo = pid_k * k_per
    k_hi = tl.minimum(k_lo + k_per, K)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < N
    acc_f = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_i = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    rowsum = tl.zeros((BLOCK_M,), dtype=tl.int32)
    HALF: tl.constexpr = BLOCK_K // 2
    for k0 in range(k_lo, k_hi, BLOCK_K):
        if W_BITS == 4:
            rk2 = k0 // 2 + tl.arange(0, HALF)
            ke = 2 * rk2
            ko = ke + 1
            a_e = tl.load(
                A + rm[:, None] * stride_am + ke[None, :] * stride_ak,
                mask=m_ok[:, None] & (ke[None, :] < K),
                other=0,
            )
            a_o = tl.load(
                A + rm[:, None] * stride_am + ko[None, :] * stride_ak,
                mask=m_ok[:, None] & (ko[None, :] < K),
                other=0,
            )
            b = tl.load(
                B + rk2[:, None] * stride_bk + rn[None, :] * stride_bn,
                mask=(ke[:, None] < K) & n_ok[None, :],
                other=0,
            )
            if ASYM:
                lo = (b & 0xF).to(tl.int8)
                hi = ((b >> 4) & 0xF).to(tl.int8)
            else:
                lo = ((b << 4).to(tl.int8) >> 4).to(tl.int8)
                hi = (b >> 4).to(tl.int8)
            part = tl.dot(a_e, lo, out_dtype=tl.int32) + tl.dot(a_o, hi, out_dtype=tl.int32)
            if ASYM:
                bsum = tl.sum(a_e.to(tl.int32), axis=1) + tl.sum(a_o.to(tl.int32), axis=1)
        else:
            rk = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(
                A + rm[:, None] * stride_am + rk[None, :] * stride_ak,
                mask=m_ok[:, None] & (rk[None, :] < K),
                other=0,
            )
            b = tl.load(
                B + rk[:, None] * stride_bk + rn[None, :] * stride_bn,
                mask=(rk[:, None] < K) & n_ok[None, :],
                other=0,
            )
            part = tl.dot(a, b, out_dtype=tl.int32)
            if ASYM:
                bsum = tl.sum(a.to(tl.int32), axis=1)
        if GROUP > 0:
            g = k0 // GROUP
            ws = tl.load(WS + g * stride_sg + rn * stride_sn, mask=n_ok, other=0.0)
            if ASYM:
                z = tl.load(WZ + g * stride_sg + rn * stride_sn, mask=n_ok, other=0)
                part = part - bsum[:, None] * z[None, :]
            acc_f += part.to(tl.float32) * ws[None, :]
        else:
            acc_i += part
            if ASYM:
                rowsum += bsum
    if GROUP <= 0:
        if ASYM:
            z = tl.load(WZ + rn * stride_sn, mask=n_ok, other=0)
            acc_i = acc_i - rowsum[:, None] * z[None, :]
    c_ptrs = C + rm[:, None] * stride_cm + rn[None, :] * stride_cn
    c_mask = m_ok[:, None] & n_ok[None, :]
    if RAW:
        tl.store(c_ptrs, acc_i, mask=c_mask)
    else:
        if GROUP <= 0:
            ws = tl.load(WS + rn * stride_sn, mask=n_ok, other=0.0)
            acc_f = acc_i.to(tl.float32) * ws[None, :]
        a_s = tl.load(AS + rm, mask=m_ok, other=0.0)
        out = acc_f * a_s[:, None]
        if HAS_BIAS:
            bias = tl.load(BIAS + rn, mask=n_ok, other=0.0).to(tl.float32)
            out += tl.where(pid_k == 0, bias, 0.0)[None, :]  # added once across the K splits
        if SPLIT_K > 1:
            tl.atomic_add(c_ptrs, out, mask=c_mask)
        else:
            tl.store(c_ptrs, out.to(C.dtype.element_ty), mask=c_mask)


def _bucket(M: int) -> int:
    return min(triton.next_power_of_2(max(M, 1)), 4096)


def default_split_k(M: int, N: int, K: int) -> int:
    """Decode shapes give too few (M, N) tiles to fill the GPU: split K across programs."""
    if INTERPRET or M > 16:
        return 1
    return max(1, min(8, K // 1024))


def gemm(
    a_q: torch.Tensor,
    a_scale: torch.Tensor,
    w: PackedWeight,
    bias=None,
    out_dtype=torch.float16,
    raw: bool = False,
    split_k=None,
):
    """a_q: (M, K) int8, a_scale: (M,) float32 -> (M, N) out_dtype, or int32 accumulators if raw.

    raw=True (per-channel weights only) returns the exact int32 accumulators sum_k a * (q - z).
    split_k: programs along K (None: a heuristic, >1 only for decode-sized M on a GPU).
    """
    if a_q.dtype != torch.int8 or a_q.dim() != 2:
        raise ValueError("a_q must be a 2-D int8 tensor")
    M, K = a_q.shape
    if K != w.in_features:
        raise ValueError(f"K mismatch: activations have {K}, weight has {w.in_features}")
    if raw and not w.per_channel:
        raise ValueError("raw int32 accumulators are defined for per-channel weights only")
    N = w.out_features
    split = 1 if raw else (default_split_k(M, N, K) if split_k is None else int(split_k))
    if split > 1:
        c = torch.zeros((M, N), dtype=torch.float32, device=a_q.device)
    else:
        c = torch.empty((M, N), dtype=torch.int32 if raw else out_dtype, device=a_q.device)
    group = 0 if w.per_channel else w.group_size  # GROUP=0: one int32 accumulator over all of K
    if group > 0 and group % 32:
        raise ValueError(f"kernel group size must be a multiple of 32, got {group}")
    if w.zero is not None and w.zero.is_floating_point():
        raise ValueError("float zero points run on the reference only (kernels/reference.py gemm_ref)")
    zero = w.zero if w.zero is not None else w.scale  # dummy pointer when symmetric
    bias_t = bias if bias is not None else w.scale

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]), split)

    _gemm_kernel[grid](
        a_q,
        w.data,
        c,
        a_scale,
        w.scale,
        zero,
        bias_t,
        M,
        N,
        K,
        _bucket(M),
        a_q.stride(0),
        a_q.stride(1),
        w.data.stride(0),
        w.data.stride(1),
        c.stride(0),
        c.stride(1),
        w.scale.stride(0),
        w.scale.stride(1),
        GROUP=group,
        W_BITS=storage_bits(w.bits),
        ASYM=w.zero is not None,
        HAS_BIAS=bias is not None,
        RAW=raw,
        SPLIT_K=split,
    )
    return c.to(out_dtype) if split > 1 else c
