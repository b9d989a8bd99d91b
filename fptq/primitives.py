"""Pure quantization primitives over tensors: integer grids, quantize / dequantize, fake quant.

Conventions (shared with the Triton kernels in `fptq.kernels`):
- symmetric b-bit: q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1), s = absmax / (2^(b-1) - 1)
- asymmetric b-bit: q = clamp(round(x / s) + z, 0, 2^b - 1), s = (max - min) / (2^b - 1),
  z = round(-min / s); the range always includes 0 (as in GPTQ's reference quantizer).
"""

from typing import Optional, Tuple

import torch

EPS = 1e-8


def int_range(bits: int, symmetric: bool) -> Tuple[int, int]:
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def qparams(
    xmin: torch.Tensor, xmax: torch.Tensor, bits: int, symmetric: bool
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Scale (and zero point if asymmetric) from a range, elementwise over the given stats."""
    qmin, qmax = int_range(bits, symmetric)
    if symmetric:
        absmax = torch.maximum(xmin.abs(), xmax.abs())
        return absmax.clamp(min=EPS) / qmax, None
    xmin = torch.minimum(xmin, torch.zeros_like(xmin))
    xmax = torch.maximum(xmax, torch.zeros_like(xmax))
    scale = (xmax - xmin).clamp(min=EPS) / (qmax - qmin)
    zero = torch.round(-xmin / scale).clamp(qmin, qmax)
    return scale, zero


def quantize(
    x: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor], bits: int, symmetric: bool
) -> torch.Tensor:
    qmin, qmax = int_range(bits, symmetric)
    q = torch.round(x / scale)
    if zero is not None:
        q = q + zero
    return q.clamp(qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor]) -> torch.Tensor:
    return (q - zero) * scale if zero is not None else q * scale


def group_bounds(in_features: int, group_size: int) -> list:
    """Column ranges of the groups; -1 is one group. A ragged last group is kept (GPTQ style)."""
    if group_size == -1 or group_size >= in_features:
        return [(0, in_features)]
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1 or -1, got {group_size}")
    return [(g, min(g + group_size, in_features)) for g in range(0, in_features, group_size)]


def weight_qparams(
    W: torch.Tensor, bits: int, group_size: int, symmetric: bool, clip: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-(output channel, group) scales. W: (out, in) -> scale, zero: (out, n_groups).

    `clip` (out, n_groups) shrinks each group's range (AWQ-style clipping), 1.0 = no clipping.
    """
    mins, maxs = [], []
    for a, b in group_bounds(W.shape[1], group_size):
        mins.append(W[:, a:b].amin(dim=1))
        maxs.append(W[:, a:b].amax(dim=1))
    xmin, xmax = torch.stack(mins, 1), torch.stack(maxs, 1)
    if clip is not None:
        xmin, xmax = xmin * clip, xmax * clip
    return qparams(xmin, xmax, bits, symmetric)


def expand_groups(p: torch.Tensor, in_features: int, group_size: int) -> torch.Tensor:
    """(out, n_groups) -> (out, in) by repeating each group's value over its columns."""
    sizes = [b - a for a, b in group_bounds(in_features, group_size)]
    return torch.repeat_interleave(p, torch.tensor(sizes, device=p.device), dim=1)


def quantize_weight(
    W: torch.Tensor, bits: int, group_size: int, symmetric: bool, clip: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Round-to-nearest weight quantization. Returns integer codes (out, in) and qparams."""
    scale, zero = weight_qparams(W, bits, group_size, symmetric, clip)
    s = expand_groups(scale, W.shape[1], group_size)
    z = expand_groups(zero, W.shape[1], group_size) if zero is not None else None
    return quantize(W, s, z, bits, symmetric), scale, zero


def dequantize_weight(
    q: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor], group_size: int
) -> torch.Tensor:
    s = expand_groups(scale, q.shape[1], group_size)
    z = expand_groups(zero, q.shape[1], group_size) if zero is not None else None
    return dequantize(q, s, z)


def fake_quant_weight(
    W: torch.Tensor, bits: int, group_size: int, symmetric: bool, clip: Optional[torch.Tensor] = None
) -> torch.Tensor:
    q, scale, zero = quantize_weight(W.float(), bits, group_size, symmetric, clip)
    return dequantize_weight(q, scale, zero, group_size).to(W.dtype)


def act_scale_per_token(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Symmetric per-token (last dim) scale: absmax / qmax, shape x.shape[:-1] + (1,)."""
    qmax = 2 ** (bits - 1) - 1
    return x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS) / qmax


def fake_quant_act_per_token(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    s = act_scale_per_token(x.float(), bits)
    return (quantize(x.float(), s, None, bits, True) * s).to(x.dtype)


def fake_quant_act_per_tensor(x: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    return (quantize(x.float(), scale, None, bits, True) * scale).to(x.dtype)


def sqnr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(|ref|^2 / |ref - x|^2)."""
    ref, x = ref.double(), x.double()
    noise = (ref - x).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.pow(2).sum().clamp(min=1e-30) / noise))
