"""Fast Walsh-Hadamard transform in Triton: QuaRot's online R4/R3 rotation (arXiv 2404.00456).

y = x H_n^T / sqrt(n) per row, H_n = H_m (x) H_{2^k} (`fptq.quant.hadamard`): one program per row;
the row is loaded once as an (m, 2^k) tile, the k butterfly stages run in registers (reshape, split
into the pair halves, join sums and differences: O(n log n)), then, for a Paley order m > 1, one
(m, m) x (m, 2^k) product on the tensor cores (`tl.dot`, IEEE fp32), and the row is stored once.
Exact against `fptq.quant.hadamard.fwht` (same butterfly order; tests/kernels/test_hadamard_kernel.py).
A later step (the kernels issue) may fuse it into activation quantization. On CPU set
TRITON_INTERPRET=1 before importing this module.
"""

import math

import torch
import triton
import triton.language as tl

from .configs import row_warps

DOT_MIN = 16  # tl.dot's smallest tile side
_PADDED = {}  # (m, device) -> the (m_pad, m_pad) float32 base matrix on the device (made once: no
# host-to-device copy per call, which a CUDA graph capture would refuse)


def _padded_base(hm: torch.Tensor, m: int, m_pad: int, device) -> torch.Tensor:
    key = (m, m_pad, str(device))
    H = _PADDED.get(key)
    if H is None:
        H = torch.zeros(m_pad, m_pad, dtype=torch.float32, device=device)
        H[:m, :m] = hm.to(device=device, dtype=torch.float32)
        _PADDED[key] = H
    return H


@triton.jit
def _rotate(x, HM, rm, M_PAD: tl.constexpr, P: tl.constexpr, LOG_P: tl.constexpr, DENSE: tl.constexpr):
    """An (M_PAD, P) fp32 row tile times H_m (x) H_P, unnormalized: the butterflies, then the Paley factor."""
    for s in tl.static_range(LOG_P):  # Sylvester butterflies: pairs (j, j + h) in blocks of 2h
        x = tl.reshape(x, (M_PAD, P // (2 << s), 2, 1 << s))
        x = tl.permute(x, (0, 1, 3, 2))
        a, b = tl.split(x)
        x = tl.permute(tl.join(a + b, a - b), (0, 1, 3, 2))
        x = tl.reshape(x, (M_PAD, P))
    if DENSE:  # the Paley factor: y[i, :] = sum_j H_m[i, j] x[j, :]
        rk = tl.arange(0, M_PAD)
        h = tl.load(HM + rm[:, None] * M_PAD + rk[None, :])
        x = tl.dot(h, x, input_precision="ieee")
    return x


@triton.jit
def _fwht_kernel(
    X,
    Y,
    HM,
    stride_x,
    stride_y,
    norm,
    M: tl.constexpr,
    M_PAD: tl.constexpr,
    P: tl.constexpr,
    LOG_P: tl.constexpr,
    DENSE: tl.constexpr,
):
    row = tl.program_id(0)
    rm = tl.arange(0, M_PAD)
    rp = tl.arange(0, P)
    offs = rm[:, None] * P + rp[None, :]
    mask = (rm[:, None] < M) & (rp[None, :] < P)
    x = tl.load(X + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    x = _rotate(x, HM, rm, M_PAD, P, LOG_P, DENSE)
    tl.store(Y + row * stride_y + offs, (x / norm).to(Y.dtype.element_ty), mask=mask)


def _plan(n: int, m: int, hm, device, what: str):
    """(the padded base matrix or None, the row kernels' shape constexprs and warps) for order
    n = m x p, p a power of two."""
    p = n // m
    if n % m or p & (p - 1):
        raise ValueError(f"{what}: {n} is not {m} x a power of two")
    dense = m > 1
    m_pad = max(DOT_MIN, triton.next_power_of_2(m)) if dense else 1
    if dense and p < DOT_MIN:
        raise ValueError(f"{what}: order {n} = {m} x {p} needs a power-of-two part >= {DOT_MIN}")
    meta = dict(M=m, M_PAD=m_pad, P=p, LOG_P=p.bit_length() - 1, DENSE=dense, num_warps=row_warps(m_pad, p))
    return (_padded_base(hm, m, m_pad, device) if dense else None), meta


def fwht(x: torch.Tensor, m: int, hm: torch.Tensor = None) -> torch.Tensor:
    """x (..., n) -> x H_n^T / sqrt(n) with H_n = H_m (x) H_{n/m}, n/m a power of two, `hm` the
    (m, m) +-1 base matrix (None for m = 1), in one Triton program per row. The orders and base
    matrices come from `fptq.quant.hadamard` (`fwht_triton` there factors n)."""
    n = x.shape[-1]
    H, meta = _plan(n, m, hm, x.device, "fwht (Triton)")
    rows = x.reshape(-1, n).contiguous()
    y = torch.empty_like(rows)
    H = rows if H is None else H  # unused when not dense
    _fwht_kernel[(rows.shape[0],)](
        rows,
        y,
        H,
        rows.stride(0),
        y.stride(0),
        math.sqrt(n),
        **meta,
    )
    return y.reshape(x.shape)


@triton.jit
def _fwht_quant_kernel(
    X,
    Q,
    S,
    HM,
    SS,
    D,  # (n,) +-1 signs of a randomized Hadamard (HAS_D)
    stride_x,
    stride_q,
    norm,
    QMAX: tl.constexpr,
    STATIC: tl.constexpr,
    HAS_D: tl.constexpr,
    M: tl.constexpr,
    M_PAD: tl.constexpr,
    P: tl.constexpr,
    LOG_P: tl.constexpr,
    DENSE: tl.constexpr,
):
    """One row: the Hadamard rotation of `_fwht_kernel`, then int8 quantization of the rotated row
    (per token: absmax / QMAX; or the static scale at SS), rounded half to even as `quant_act` does.
    The rotated row never leaves registers: one read of x, one write of the codes."""
    row = tl.program_id(0)
    rm = tl.arange(0, M_PAD)
    rp = tl.arange(0, P)
    offs = rm[:, None] * P + rp[None, :]
    mask = (rm[:, None] < M) & (rp[None, :] < P)
    x = tl.load(X + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_D:
        x = x * tl.load(D + offs, mask=mask, other=0.0).to(x.dtype)  # x * D in the input's dtype
    x = _rotate(x.to(tl.float32), HM, rm, M_PAD, P, LOG_P, DENSE)
    # the rotated row in the input's dtype, as the unfused rotation stores it before quant_act reads it
    y = (x / norm).to(X.dtype.element_ty).to(tl.float32)
    if STATIC:
        scale = tl.load(SS)
    else:
        scale = tl.maximum(tl.max(tl.max(tl.abs(y), axis=1), axis=0), 1e-8) / QMAX
    tl.store(S + row, scale)
    v = y * (1.0 / scale)
    q = tl.floor(v + 0.5)
    odd = (q - 2.0 * tl.floor(q * 0.5)) != 0.0
    q = tl.where(((q - v) == 0.5) & odd, q - 1.0, q)
    q = tl.minimum(tl.maximum(q, -QMAX - 1), QMAX)
    tl.store(Q + row * stride_q + offs, q.to(tl.int8), mask=mask)


def fwht_quant(
    x: torch.Tensor,
    m: int,
    hm: torch.Tensor = None,
    static_scale=None,
    bits: int = 8,
    signs: torch.Tensor = None,
):
    """QuaRot's online rotation fused into the activation quantizer (the down_proj input, R4):
    x (M, n) float -> (codes (M, n) int8, scales (M,) float32) of x H_n^T / sqrt(n), H_n = H_m (x)
    H_{n/m}, in one launch: `quant_act(fwht(x * signs, m, hm), static_scale)` without the rotated
    row's round trip through memory (signs: a randomized Hadamard's +-1 diagonal, or None). Exact
    against that composition (tests/kernels/test_hadamard_kernel.py)."""
    from .gemm import _scale_tensor

    if x.dim() != 2:
        raise ValueError(f"fwht_quant expects (M, n), got {tuple(x.shape)}")
    n = x.shape[-1]
    H, meta = _plan(n, m, hm, x.device, "fwht_quant")
    rows = x.contiguous()
    q = torch.empty(rows.shape, dtype=torch.int8, device=x.device)
    s = torch.empty((rows.shape[0],), dtype=torch.float32, device=x.device)
    H = s if H is None else H  # unused when not dense
    _fwht_quant_kernel[(rows.shape[0],)](
        rows,
        q,
        s,
        H,
        _scale_tensor(static_scale, x.device, s),
        signs if signs is not None else s,
        rows.stride(0),
        q.stride(0),
        math.sqrt(n),
        QMAX=2 ** (bits - 1) - 1,
        STATIC=static_scale is not None,
        HAS_D=signs is not None,
        **meta,
    )
    return q, s
