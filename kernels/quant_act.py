"""Fused int8 activation quantization: one program per row (token), one pass over it.

The whole row is loaded once into registers (rows up to ONE_PASS_MAX wide: every LLaMA-2/3
width), its absmax taken and the codes stored: one read and one write of the activations. Wider
rows fall back to two passes (absmax, then quantize).

Per-token dynamic: absmax over the row, scale = absmax / 127, q = round(x / scale).
Per-tensor static: the given scale. Rounds half to even, as `torch.round` and
`fptq.quant.primitives.quantize_act_per_token` do (the tests check ties).
On CPU set TRITON_INTERPRET=1 before importing this module.
"""

import torch
import triton
import triton.language as tl

from .configs import QUANT_ACT_ONE_PASS_MAX, quant_act_params
from .gemm import _scale_tensor

ONE_PASS_MAX = QUANT_ACT_ONE_PASS_MAX


@triton.jit
def _quantize(x, inv, QMAX: tl.constexpr):
    """int8 codes of x * inv, rounded half to even: floor(y + 0.5), minus one where y sat exactly on
    a tie and the result is odd (portable: no libdevice, runs in the interpreter too)."""
    y = x * inv
    q = tl.floor(y + 0.5)
    odd = (q - 2.0 * tl.floor(q * 0.5)) != 0.0
    q = tl.where(((q - y) == 0.5) & odd, q - 1.0, q)
    q = tl.minimum(tl.maximum(q, -QMAX - 1), QMAX)
    return q.to(tl.int8)


@triton.jit
def _quant_act_kernel(
    X,
    Q,
    S,
    K,
    stride_xm,
    stride_qm,
    SS,  # (1,) float32: the static per-tensor scale (STATIC)
    QMAX: tl.constexpr,
    STATIC: tl.constexpr,
    ONE_PASS: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    row = tl.program_id(0)
    x_row = X + row * stride_xm
    q_row = Q + row * stride_qm
    if ONE_PASS:
        rk = tl.arange(0, BLOCK_K)
        x = tl.load(x_row + rk, mask=rk < K, other=0.0).to(tl.float32)
        if STATIC:
            scale = tl.load(SS)
        else:
            scale = tl.maximum(tl.max(tl.abs(x), axis=0), 1e-8) / QMAX
        tl.store(S + row, scale)
        tl.store(q_row + rk, _quantize(x, 1.0 / scale, QMAX), mask=rk < K)
    else:
        if STATIC:
            scale = tl.load(SS)
        else:
            amax = tl.zeros((BLOCK_K,), tl.float32)
            for k0 in range(0, K, BLOCK_K):
                rk = k0 + tl.arange(0, BLOCK_K)
                x = tl.load(x_row + rk, mask=rk < K, other=0.0).to(tl.float32)
                amax = tl.maximum(amax, tl.abs(x))
            scale = tl.maximum(tl.max(amax, axis=0), 1e-8) / QMAX
        tl.store(S + row, scale)
        inv = 1.0 / scale
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_row + rk, mask=rk < K, other=0.0).to(tl.float32)
            tl.store(q_row + rk, _quantize(x, inv, QMAX), mask=rk < K)


def quant_act(x: torch.Tensor, static_scale=None, bits: int = 8, block_k: int = 1024):
    """x: (M, K) float -> (q (M, K) int8, scale (M,) float32). static_scale: per tensor (a float, or a
    one-element tensor that stays on the device), or None (per token)."""
    if x.dim() != 2:
        raise ValueError(f"quant_act expects (M, K), got {tuple(x.shape)}")
    x = x.contiguous()
    M, K = x.shape
    q = torch.empty((M, K), dtype=torch.int8, device=x.device)
    s = torch.empty((M,), dtype=torch.float32, device=x.device)
    one_pass, block, warps = quant_act_params(K, block_k, ONE_PASS_MAX)
    _quant_act_kernel[(M,)](
        x,
        q,
        s,
        K,
        x.stride(0),
        q.stride(0),
        _scale_tensor(static_scale, x.device, s),
        QMAX=2 ** (bits - 1) - 1,
        STATIC=static_scale is not None,
        ONE_PASS=one_pass,
        BLOCK_K=block,
        num_warps=warps,
    )
    return q, s
