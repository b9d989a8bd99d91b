"""Pure quantization primitives over tensors: integer grids, quantize / dequantize, fake quant.

Conventions (the Triton kernels in `fptq.kernels` follow the same ones; tests check ties):
- rounding: half to even (`torch.round`, IEEE round-to-nearest-even; GPTQ's reference does the same)
- symmetric b-bit: q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1), s = absmax / (2^(b-1) - 1)
- asymmetric b-bit: q = clamp(round(x / s) + z, 0, 2^b - 1), s = (max - min) / (2^b - 1),
  z = round(-min / s); the range always includes 0 (as in GPTQ's reference quantizer).
Weights are quantized per (output channel, group of input columns): see `fptq.granularity`.
"""

from typing import Optional, Tuple

import torch

from fptq.granularity import GroupLayout

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
    q = torch.round_(x / scale)  # in place after the one new tensor: large weights, few temporaries
    if zero is not None:
        q.add_(zero)
    return q.clamp_(qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor]) -> torch.Tensor:
    return (q - zero) * scale if zero is not None else q * scale


# ---- weights: per (output channel, group) -------------------------------------------------------


def weight_qparams(
    W: torch.Tensor, bits: int, layout: GroupLayout, symmetric: bool, clip: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-(output channel, group) scales. W: (out, in) -> scale, zero: (out, n_groups).

    `clip` (out, n_groups) shrinks each group's range (AWQ-style clipping), 1.0 = no clipping.
    """
    mins, maxs = [], []
    for a, b in layout.bounds():
        mins.append(W[:, a:b].amin(dim=1))
        maxs.append(W[:, a:b].amax(dim=1))
    xmin, xmax = torch.stack(mins, 1), torch.stack(maxs, 1)
    if clip is not None:
        xmin, xmax = xmin * clip, xmax * clip
    return qparams(xmin, xmax, bits, symmetric)


def quantize_weight(
    W: torch.Tensor, bits: int, layout: GroupLayout, symmetric: bool, clip: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Round-to-nearest weight quantization. Returns integer codes (out, in) and qparams."""
    scale, zero = weight_qparams(W, bits, layout, symmetric, clip)
    z = layout.expand(zero) if zero is not None else None
    return quantize(W, layout.expand(scale), z, bits, symmetric), scale, zero


def dequantize_weight(
    q: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor], layout: GroupLayout
) -> torch.Tensor:
    z = layout.expand(zero) if zero is not None else None
    return dequantize(q, layout.expand(scale), z)


def fake_quant_weight(
    W: torch.Tensor, bits: int, layout: GroupLayout, symmetric: bool, clip: Optional[torch.Tensor] = None
) -> torch.Tensor:
    q, scale, zero = quantize_weight(W.float(), bits, layout, symmetric, clip)
    return dequantize_weight(q, scale, zero, layout).to(W.dtype)


# ---- activations: symmetric, per token (dynamic) or per tensor (static) -------------------------


def quantize_act_per_token(x: torch.Tensor, bits: int = 8) -> Tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-token (last dim) codes and scales: s = absmax / qmax, shape x.shape[:-1] + (1,)."""
    x = x.float()
    s = x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS) / (2 ** (bits - 1) - 1)
    return quantize(x, s, None, bits, True), s


def fake_quant_act_per_token(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    q, s = quantize_act_per_token(x, bits)
    return (q * s).to(x.dtype)


def fake_quant_act_per_tensor(x: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    return (quantize(x.float(), scale, None, bits, True) * scale).to(x.dtype)


def static_act_scale(absmax: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-tensor static scale from a calibration range: max|X| / qmax."""
    return absmax.max().clamp(min=EPS) / (2 ** (bits - 1) - 1)


def sqnr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(|ref|^2 / |ref - x|^2)."""
    ref, x = ref.double(), x.double()
    noise = (ref - x).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.pow(2).sum().clamp(min=1e-30) / noise))
