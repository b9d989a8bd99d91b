"""Pure-torch reference of the W4A8 / W8A8 kernels: the test oracle and the packed format.

Packed int4 layout (chosen for the GEMM's loads, C = A @ W^T with A (M, K) int8):
  packed: (ceil(K / 2), N) int8, row-major; byte [k2, n] holds W[n, 2*k2] in its low nibble and
  W[n, 2*k2 + 1] in its high nibble (two's complement int4 if symmetric, unsigned 0..15 with a
  zero point if asymmetric). A K-tile of the GEMM loads a contiguous (BLOCK_K / 2, BLOCK_N) tile
  and multiplies its low nibbles with A's even columns and its high nibbles with the odd ones.
  Scales: (n_groups, N) float32 (n_groups = 1 per-channel); zeros: (n_groups, N) int32.
int8 layout (W8A8): (K, N) int8 = W^T.
`group_size` is the resolved group size along K: group_size == K is per output channel.

The activation quantizer's reference is `fptq.primitives.quantize_act_per_token` (the kernels
round half to even, as it does); this package imports nothing from the rest of fptq.
"""

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class PackedWeight:
    data: torch.Tensor  # (ceil(K/2), N) int8 for 4-bit, (K, N) int8 for 8-bit
    scale: torch.Tensor  # (n_groups, N) float32
    zero: Optional[torch.Tensor]  # (n_groups, N) int32, or None (symmetric)
    bits: int
    group_size: int  # columns of K per scale; == in_features: per output channel
    in_features: int
    out_features: int

    @property
    def per_channel(self) -> bool:
        return self.group_size >= self.in_features


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """q: (N, K) integer codes in [-8, 7] (symmetric) or [0, 15] (asymmetric) -> (ceil(K/2), N) int8."""
    N, K = q.shape
    q = q.to(torch.int32)
    if K % 2:
        q = torch.cat([q, torch.zeros(N, 1, dtype=torch.int32, device=q.device)], 1)
    lo, hi = q[:, 0::2] & 0xF, q[:, 1::2] & 0xF
    byte = (lo | (hi << 4)).to(torch.uint8).view(torch.int8)
    return byte.T.contiguous()


def unpack_int4(packed: torch.Tensor, K: int, signed: bool = True) -> torch.Tensor:
    """Inverse of pack_int4: (ceil(K/2), N) int8 -> (N, K) int8 codes."""
    b = packed.T.to(torch.int32) & 0xFF
    lo, hi = b & 0xF, (b >> 4) & 0xF
    if signed:
        lo = torch.where(lo >= 8, lo - 16, lo)
        hi = torch.where(hi >= 8, hi - 16, hi)
    out = torch.stack([lo, hi], -1).reshape(b.shape[0], -1)[:, :K]
    return out.to(torch.int8)


def pack_weight(
    q: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor], bits: int, group_size: int
) -> PackedWeight:
    """From the quantizer's output: q (N, K) codes, scale/zero (N, n_groups); group_size in [1, K]."""
    N, K = q.shape
    if not 1 <= group_size <= K:
        raise ValueError(f"group_size must be in [1, K={K}], got {group_size}")
    if bits == 4:
        data = pack_int4(q)
    elif bits == 8:
        data = q.to(torch.int8).T.contiguous()
    else:
        raise ValueError(f"packed kernels support 4- and 8-bit weights, got {bits}")
    z = None if zero is None else zero.T.contiguous().to(torch.int32)
    return PackedWeight(data, scale.T.contiguous().float(), z, bits, group_size, K, N)


def weight_codes(w: PackedWeight) -> torch.Tensor:
    """(N, K) integer codes of a packed weight."""
    if w.bits == 4:
        return unpack_int4(w.data, w.in_features, signed=w.zero is None)
    return w.data.T.contiguous()


def int_acc_ref(a_q: torch.Tensor, w: PackedWeight) -> torch.Tensor:
    """Exact int32 accumulators sum_k a[m, k] * (q[n, k] - z[n]) for a per-channel weight."""
    q = weight_codes(w).double()
    if w.zero is not None:
        q = q - w.zero[0].double()[:, None]
    return (a_q.double() @ q.T).to(torch.int32)


def gemm_ref(
    a_q: torch.Tensor, a_scale: torch.Tensor, w: PackedWeight, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Dequantized output in float32: (a_q * a_scale) @ dequant(W)^T (+ bias)."""
    q = weight_codes(w).double()
    idx = torch.arange(w.in_features, device=q.device) // w.group_size
    s = w.scale.double()[idx].T  # (N, K)
    z = 0 if w.zero is None else w.zero.double()[idx].T
    Wd = (q - z) * s
    out = (a_q.double() * a_scale.double()[:, None]) @ Wd.T
    if bias is not None:
        out = out + bias.double()
    return out.float()
