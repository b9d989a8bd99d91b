"""Pure-torch reference of the W4A8 / W8A8 kernels: the test oracle and THE packed weight format.

One format, read by the Triton kernels and by `fptq.quant.qlinear.QuantLinear` (whose buffers are these
tensors) and written as-is into saved checkpoints (`fptq.models.checkpoint`):

- codes, 2..4-bit (stored in nibbles), K-contiguous: (N, 32 * ceil(K / 64)) int8. Along K the
  codes are cut into chunks of PAIR = 64; byte [n, 32 c + j] holds W[n, 64 c + j] in its low nibble
  and W[n, 64 c + 32 + j] in its high nibble (two's complement; K is padded with zero codes to a
  multiple of 64). A K-tile of the GEMM loads one contiguous (BLOCK_N, BLOCK_K / 2) slice of each
  row; its low nibbles multiply A's columns {64 c + j} and its high nibbles {64 c + 32 + j}: both
  halves of A are runs of 32 contiguous bytes (no byte gathers), and each half is an int8 dot of
  K = 32 (the int8 MMA's K). Unpacking is one AND for the high nibbles and a shift for the low
  ones: the kernel keeps 16 x code and folds 1/16 into the scale. K-contiguous B is what the int8
  wgmma of Hopper reads (K-major); a group of 32 is one half-chunk, so g32 runs too.
- codes, 5..8-bit: (N, K) int8, the weight's own layout (K-contiguous).
- asymmetric codes of every width are stored centred, q - 2^(b-1), and so are their zero points:
  (q - 2^(b-1)) - (z - 2^(b-1)) = q - z, so codes 0..2^b - 1 never wrap, one signed unpack serves
  both, and the GEMM needs no special case.
- scales: (n_groups, N), a float dtype (the model's, or float32 by option).
- zeros: None (symmetric); (n_groups, N) int8 (integer zero points, centred as the codes are);
  or (n_groups, N) float (a float zero point: the range is exactly [min, max]).
  Dequantized weight: (q - z) * s, per (output channel, group).
`group_size` is the resolved group size along K: group_size == K is per output channel. A ragged
last group (K not a multiple of group_size) is shorter.

Format "qoq" (QServe's progressive group quantization, Lin et al. 2024, arXiv 2405.04532, Sec. 4.1):
the same codes and zeros (4-bit, asymmetric, centred), but the group scales are small integers
(int8, 1..16) and a float scale per output channel (`channel_scale`, (N,) float32) comes on top.
The int4 -> int8 step is integer only: w8 = (q - z) * s_g lies in [-127, 127] (the first level is
per-channel int8 inside the protective range [-119, 119], so a group's rounding cannot overflow),
and the GEMM is a per-channel int8 GEMM with s_x * s_channel in its epilogue. Dequantized weight:
channel_scale * (q - z) * s_g.

The activation quantizer's reference is `fptq.quant.primitives.quantize_act_per_token` (the kernels
round half to even, as it does); this package imports nothing from the rest of fptq.
"""

from dataclasses import dataclass
from typing import Optional

import torch

FORMAT_VERSION = 2  # bump when the layout above changes; saved checkpoints record it
# 1: int4 (ceil(K/2), N) with adjacent K pairs, asymmetric int4 codes unsigned. 2: the layout above.
PAIR = 64  # K-chunk whose halves share bytes (int4)


def storage_bits(bits: int) -> int:
    """Bits per stored code: nibbles for 2..4-bit weights, bytes for 5..8-bit ones."""
    if not 2 <= bits <= 8:
        raise ValueError(f"packed weights have 2..8 bits, got {bits}")
    return 4 if bits <= 4 else 8


def code_offset(bits: int, symmetric: bool) -> int:
    """What is subtracted from asymmetric codes (and zeros) before storing: they are kept centred."""
    return 0 if symmetric else 2 ** (bits - 1)


@dataclass
class PackedWeight:
    data: torch.Tensor  # (N, 32 * ceil(K/64)) int8 for <= 4-bit, (N, K) int8 for 5..8-bit
    scale: torch.Tensor  # (n_groups, N) float
    zero: Optional[torch.Tensor]  # (n_groups, N) int8 or float, or None (symmetric)
    bits: int
    group_size: int  # columns of K per scale; == in_features: per output channel
    in_features: int
    out_features: int
    # format "qoq": (N,) float32 per-channel scale over integer group scales (`scale` int8)
    channel_scale: Optional[torch.Tensor] = None

    @property
    def format(self) -> str:
        """ "int": float group scales (every scheme but QoQ); "qoq": integer group scales under a
        float per-channel scale."""
        return "int" if self.channel_scale is None else "qoq"

    @property
    def per_channel(self) -> bool:
        return self.group_size >= self.in_features

    @property
    def zero_kind(self) -> Optional[str]:
        """None (symmetric), "int" (int8 zero points) or "float" (float zeros in the scale dtype):
        the one place a layer's zero-point kind is read from its buffers."""
        if self.zero is None:
            return None
        return "float" if self.zero.is_floating_point() else "int"

    @property
    def float_zero(self) -> bool:
        return self.zero_kind == "float"


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """q: (N, K) integer codes in [-8, 7] -> (N, 32 * ceil(K / 64)) int8 (the layout above).
    (int8 arithmetic: a left shift wraps in two's complement, as a nibble should.)"""
    N, K = q.shape
    q = q.to(torch.int8)
    pad = -K % PAIR
    if pad:
        q = torch.cat([q, torch.zeros(N, pad, dtype=torch.int8, device=q.device)], 1)
    c = q.reshape(N, -1, 2, PAIR // 2)  # (N, chunks, half, 32)
    byte = (c[:, :, 0] & 0x0F) | torch.bitwise_left_shift(c[:, :, 1], 4)
    return byte.reshape(N, -1).contiguous()


def unpack_int4(packed: torch.Tensor, K: int) -> torch.Tensor:
    """Inverse of pack_int4: (N, 32 * ceil(K / 64)) int8 -> (N, K) int8 codes (arithmetic shifts
    sign-extend each nibble; int8 arithmetic throughout)."""
    N = packed.shape[0]
    b = packed.reshape(N, -1, PAIR // 2)
    lo, hi = torch.bitwise_left_shift(b, 4) >> 4, b >> 4
    return torch.stack([lo, hi], 2).reshape(N, -1)[:, :K]


def packed_shape(out_features: int, in_features: int, bits: int) -> tuple:
    """Shape of the stored codes of an (out, in) weight."""
    cols = (PAIR // 2) * -(-in_features // PAIR) if storage_bits(bits) == 4 else in_features
    return (out_features, cols)


def pack_weight(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero: Optional[torch.Tensor],
    bits: int,
    group_size: int,
    *,
    scale_dtype: Optional[torch.dtype] = None,
    float_zero: bool = False,
    channel_scale: Optional[torch.Tensor] = None,
) -> PackedWeight:
    """From the quantizer's output: q (N, K) codes, scale/zero (N, n_groups); group_size in [1, K].

    scale_dtype: the stored scales' dtype (default float32). float_zero: keep the zero points as
    floats (scale_dtype) instead of integers. channel_scale (N,): the "qoq" format, whose group
    scales are integers (stored int8) under this float per-channel scale.
    """
    N, K = q.shape
    if not 1 <= group_size <= K:
        raise ValueError(f"group_size must be in [1, K={K}], got {group_size}")
    if channel_scale is not None:
        check_qoq(q, scale, zero, bits)
        z = (torch.round(zero.T.float()) - code_offset(bits, False)).to(torch.int8).contiguous()
        centred = (q.to(torch.int32) - code_offset(bits, False)).to(torch.int8)
        s = scale.T.round().to(torch.int8).contiguous()
        return PackedWeight(
            pack_int4(centred), s, z, bits, group_size, K, N, channel_scale.float().contiguous()
        )
    symmetric = zero is None
    off = code_offset(bits, symmetric)
    centred = (q.to(torch.int32) - off).to(torch.int8)
    data = pack_int4(centred) if storage_bits(bits) == 4 else centred.contiguous()
    sdt = scale_dtype or torch.float32
    z = None
    if zero is not None:
        zt = zero.T.contiguous()
        z = (zt.to(sdt) - off) if float_zero else (torch.round(zt.float()) - off).to(torch.int8)
    return PackedWeight(data, scale.T.contiguous().to(sdt), z, bits, group_size, K, N)


QOQ_BITS = 4
QOQ_MAX_GROUP_SCALE = 16  # ceil(238 / 15): the widest group of the protective range [-119, 119]


def check_qoq(q: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor], bits: int) -> None:
    """The "qoq" format holds 4-bit asymmetric codes with integer group scales in [1, 16]."""
    if bits != QOQ_BITS or zero is None:
        raise ValueError(
            f"the qoq format holds 4-bit asymmetric codes, got bits={bits}, zero={zero is not None}"
        )
    if scale.is_floating_point() and not torch.equal(scale, scale.round()):
        raise ValueError("the qoq format's group scales are integers")
    if scale.min() < 1 or scale.max() > QOQ_MAX_GROUP_SCALE:
        raise ValueError(f"the qoq format's group scales lie in [1, {QOQ_MAX_GROUP_SCALE}]")


def int8_weight(w: PackedWeight) -> torch.Tensor:
    """The "qoq" format's integer int4 -> int8 step: (N, K) int8 w8 = (q - z) * s_g (no float)."""
    if w.format != "qoq":
        raise ValueError("int8_weight reads the qoq format")
    q = weight_codes(w).to(torch.int16)
    idx = group_index(w)
    w8 = (q - w.zero.to(torch.int16)[idx].T) * w.scale.to(torch.int16)[idx].T
    if w8.numel() and (w8.min() < -128 or w8.max() > 127):
        raise ValueError("qoq weight overflows int8: the first level left the protective range")
    return w8.to(torch.int8)


def weight_codes(w: PackedWeight) -> torch.Tensor:
    """(N, K) stored integer codes of a packed weight (asymmetric codes stay centred)."""
    if storage_bits(w.bits) == 4:
        return unpack_int4(w.data, w.in_features)
    return w.data


def group_index(w: PackedWeight) -> torch.Tensor:
    return torch.arange(w.in_features, device=w.data.device) // w.group_size


def dequantize_packed(w: PackedWeight, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """(N, K) float weight (q - z) * s, computed in the scales' dtype, returned in `dtype`.
    Whole groups broadcast their scale over a (N, n_groups, group) view (no expanded copy)."""
    if w.format == "qoq":
        W = int8_weight(w).to(torch.float32) * w.channel_scale[:, None]
        return W if dtype is None else W.to(dtype)
    q = weight_codes(w)
    sdt = w.scale.dtype
    N, K, g = w.out_features, w.in_features, w.group_size
    if K % g == 0:
        qg = q.view(N, K // g, g).to(sdt)
        if w.zero is not None:
            qg = qg - w.zero.T.to(sdt).unsqueeze(-1)
        W = (qg * w.scale.T.unsqueeze(-1)).view(N, K)
    else:  # a ragged last group: index the groups per column
        idx = group_index(w)
        W = q.to(sdt)
        if w.zero is not None:
            W = W - w.zero[idx].T.to(sdt)
        W = W * w.scale[idx].T
    return W if dtype is None else W.to(dtype)


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
    if w.format == "qoq":
        out = (a_q.double() * a_scale.double()[:, None]) @ (
            int8_weight(w).double() * w.channel_scale.double()[:, None]
        ).T
        return (out if bias is None else out + bias.double()).float()
    q = weight_codes(w).double()
    idx = group_index(w)
    s = w.scale.double()[idx].T  # (N, K)
    z = 0 if w.zero is None else w.zero.double()[idx].T
    Wd = (q - z) * s
    out = (a_q.double() * a_scale.double()[:, None]) @ Wd.T
    if bias is not None:
        out = out + bias.double()
    return out.float()


def gemm_int_ref(
    a_q: torch.Tensor, a_scale: torch.Tensor, w: PackedWeight, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """The integer pipeline of a W4A8 GEMM, in the offset form that also runs float zero points:
    per group g, an exact integer dot D_g = sum_k a_q[m, k] q[n, k] and the row sum R_g = sum_k a_q[m, k];
    y = s_x[m] sum_g (s_g[n] D_g + m_g[n] R_g), with the offset m_g = -s_g z_g (a weight value is
    s q + m). Integer and float zero points take the same path; float32 out. The qoq format is a
    per-channel int8 GEMM: y = s_x[m] s_channel[n] sum_k a_q[m, k] w8[n, k] (w8 = (q - z) s_g, integer)."""
    if w.format == "qoq":
        acc = a_q.to(torch.int64) @ int8_weight(w).to(torch.int64).T  # exact
        out = acc.double() * w.channel_scale.double()[None, :] * a_scale.double().reshape(-1, 1)
        return (out if bias is None else out + bias.double()).float()
    q = weight_codes(w).to(torch.int64)
    a = a_q.to(torch.int64)
    out = torch.zeros(a.shape[0], w.out_features, dtype=torch.float64, device=a.device)
    for g, k0 in enumerate(range(0, w.in_features, w.group_size)):
        k1 = min(k0 + w.group_size, w.in_features)
        dot = (a[:, k0:k1] @ q[:, k0:k1].T).double()  # exact int64
        s = w.scale[g].double()
        out += dot * s
        if w.zero is not None:
            rowsum = a[:, k0:k1].sum(1, keepdim=True).double()
            out += rowsum * (-s * w.zero[g].double())
    out = out * a_scale.double().reshape(-1, 1)
    if bias is not None:
        out = out + bias.double()
    return out.float()
