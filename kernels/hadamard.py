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

DOT_MIN = 16  # tl.dot's smallest tile side


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
    tl.store(Y + row * stride_y + offs, (x / norm).to(Y.dtype.element_ty), mask=mask)


def fwht(x: torch.Tensor, m: int, hm: torch.Tensor = None) -> torch.Tensor:
    """x (..., n) -> x H_n^T / sqrt(n) with H_n = H_m (x) H_{n/m}, n/m a power of two, `hm` the
    (m, m) +-1 base matrix (None for m = 1), in one Triton program per row. The orders and base
    matrices come from `fptq.quant.hadamard` (`fwht_triton` there factors n)."""
    n = x.shape[-1]
    p = n // m
    if n % m or p & (p - 1):
        raise ValueError(f"fwht (Triton): {n} is not {m} x a power of two")
    rows = x.reshape(-1, n).contiguous()
    y = torch.empty_like(rows)
    dense = m > 1
    m_pad = max(DOT_MIN, triton.next_power_of_2(m)) if dense else 1
    if dense and p < DOT_MIN:
        raise ValueError(f"fwht (Triton): order {n} = {m} x {p} needs a power-of-two part >= {DOT_MIN}")
    if dense:
        H = torch.zeros(m_pad, m_pad, dtype=torch.float32, device=x.device)
        H[:m, :m] = hm.to(device=x.device, dtype=torch.float32)
    else:
        H = rows  # unused
    _fwht_kernel[(rows.shape[0],)](
        rows,
        y,
        H,
        rows.stride(0),
        y.stride(0),
        math.sqrt(n),
        M=m,
        M_PAD=m_pad,
        P=p,
        LOG_P=p.bit_length() - 1,
        DENSE=dense,
    )
    return y.reshape(x.shape)
