"""Pure quantization primitives over tensors: integer grids, quantize / dequantize, fake quant.

Conventions (the Triton kernels in `fptq.kernels` follow the same ones; tests check ties):
- rounding: half to even (`torch.round`, IEEE round-to-nearest-even; GPTQ's reference does the same)
- symmetric b-bit: q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1), with the scale rule
  `max`: s = absmax / (2^(b-1) - 1) (nothing clamps; GPTQ's reference), or
  `half_range`: s = absmax / ((2^b - 1) / 2), a finer grid using all 2^b codes where only the
  top value clamps (+absmax -> 2^(b-1) - 1; as in GGML's Q4_0 and llama.cpp's k-quants).
- asymmetric b-bit: q = clamp(round(x / s) + z, 0, 2^b - 1), s = (max - min) / (2^b - 1), and
  `int` zero point: z = round(-min / s), the range always includes 0 (GPTQ's reference quantizer);
  `float` zero point: z = -min / s unrounded, the range is exactly [min, max]: value = s q + m with
  m = -s z (GGML's Q4_1). A W4A8 GEMM keeps integer products: y = s int_dot(q, x_q) s_x
  + m rowsum(x_q) s_x (`fptq.kernels.reference.gemm_int_ref`).
Weights are quantized per (output channel, group of input columns): see `fptq.quant.granularity`.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from fptq.quant.granularity import GroupLayout

EPS = 1e-8
SCALE_RULES = ("max", "half_range")
ZERO_POINTS = ("int", "float")


def int_range(bits: int, symmetric: bool) -> Tuple[int, int]:
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def sym_divisor(bits: int, scale_rule: str = "max") -> float:
    """What absmax is divided by for a symmetric scale (see the module docstring)."""
    if scale_rule not in SCALE_RULES:
        raise ValueError(f"scale rule must be one of {SCALE_RULES}, got {scale_rule!r}")
    return 2 ** (bits - 1) - 1 if scale_rule == "max" else (2**bits - 1) / 2


@dataclass(frozen=True)
class Grid:
    """An integer grid: bits, symmetric or not, the symmetric scale rule, the zero point's kind."""

    bits: int
    symmetric: bool = True
    scale_rule: str = "max"  # symmetric only: max | half_range
    zero_point: str = "int"  # asymmetric only: int | float

    def __post_init__(self):
        int_range(self.bits, self.symmetric)  # validates bits
        sym_divisor(self.bits, self.scale_rule)  # validates the rule
        if self.zero_point not in ZERO_POINTS:
            raise ValueError(f"zero point must be one of {ZERO_POINTS}, got {self.zero_point!r}")

    @property
    def float_zero(self) -> bool:
        return not self.symmetric and self.zero_point == "float"


def qparams(
    xmin: torch.Tensor, xmax: torch.Tensor, grid: Grid
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Scale (and zero point if asymmetric) from a range, elementwise over the given stats."""
    qmin, qmax = int_range(grid.bits, grid.symmetric)
    if grid.symmetric:
        absmax = torch.maximum(xmin.abs(), xmax.abs())
        return absmax.clamp(min=EPS) / sym_divisor(grid.bits, grid.scale_rule), None
    if grid.float_zero:  # exactly [min, max]; z need not be an integer nor in [qmin, qmax]
        scale = (xmax - xmin).clamp(min=EPS) / (qmax - qmin)
        return scale, -xmin / scale
    xmin = torch.minimum(xmin, torch.zeros_like(xmin))
    xmax = torch.maximum(xmax, torch.zeros_like(xmax))
    scale = (xmax - xmin).clamp(min=EPS) / (qmax - qmin)
    zero = torch.round(-xmin / scale).clamp(qmin, qmax)
    return scale, zero


def quantize(
    x: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor], bits: int, symmetric: bool
) -> torch.Tensor:
    qmin, qmax = int_range(bits, symmetric)
    q = x / scale  # then in place: large weights, few temporaries
    if zero is None:
        return q.round_().clamp_(qmin, qmax)
    # round(x / s + z): an integer zero's round(x / s) + z (GPTQ's reference, same ties), and a
    # float zero's fractional part goes inside the rounding
    n = torch.round(zero)
    return q.add_(zero - n).round_().add_(n).clamp_(qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor]) -> torch.Tensor:
    return (q - zero) * scale if zero is not None else q * scale


# ---- weights: per (output channel, group) -------------------------------------------------------


def group_ranges(W: torch.Tensor, layout: GroupLayout) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-(output channel, group) min and max: (out, n_groups) each."""
    if layout.in_features % layout.group_size == 0:
        Wg = W.reshape(W.shape[0], layout.n_groups, layout.group_size)
        return Wg.amin(-1), Wg.amax(-1)
    mins = [W[:, a:b].amin(dim=1) for a, b in layout.bounds()]
    maxs = [W[:, a:b].amax(dim=1) for a, b in layout.bounds()]
    return torch.stack(mins, 1), torch.stack(maxs, 1)


def weight_qparams(
    W: torch.Tensor, grid: Grid, layout: GroupLayout, clip: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-(output channel, group) scales. W: (out, in) -> scale, zero: (out, n_groups).

    `clip` (out, n_groups) shrinks each group's range (AWQ-style clipping), 1.0 = no clipping.
    """
    xmin, xmax = group_ranges(W, layout)
    if clip is not None:
        xmin, xmax = xmin * clip, xmax * clip
    return qparams(xmin, xmax, grid)


def quantize_weight(
    W: torch.Tensor, grid: Grid, layout: GroupLayout, clip: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Round-to-nearest weight quantization. Returns integer codes (out, in) and qparams."""
    scale, zero = weight_qparams(W, grid, layout, clip)
    z = layout.expand(zero) if zero is not None else None
    return quantize(W, layout.expand(scale), z, grid.bits, grid.symmetric), scale, zero


@torch.no_grad()
def mse_clip(
    W: torch.Tensor,
    grid: Grid,
    layout: GroupLayout,
    points: int = 100,
    max_shrink: float = 0.8,
    norm: float = 2.4,
) -> torch.Tensor:
    """Per-(output channel, group) range shrink p in (1 - max_shrink, 1] minimising sum |W - Q(W)|^norm:
    (out, n_groups), 1.0 = the full range. The grid search of GPTQ's reference quantizer (`mse=True`:
    p = 1 - i / points for i < max_shrink * points, error |.|^2.4; github.com/IST-DASLab/gptq, quant.py).
    """
    W = W.float()
    xmin, xmax = group_ranges(W, layout)
    best_err = torch.full_like(xmin, float("inf"))
    best = torch.ones_like(xmin)
    sizes = torch.tensor([b - a for a, b in layout.bounds()], device=W.device)
    group_of = torch.repeat_interleave(torch.arange(layout.n_groups, device=W.device), sizes)
    for i in range(int(max_shrink * points)):
        p = 1.0 - i / points
        scale, zero = qparams(xmin * p, xmax * p, grid)
        S = layout.expand(scale)
        Z = layout.expand(zero) if zero is not None else None
        D = (W - dequantize(quantize(W, S, Z, grid.bits, grid.symmetric), S, Z)).abs_().pow_(norm)
        err = torch.zeros_like(xmin).index_add_(1, group_of, D)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, torch.full_like(best, p), best)
    return best


def dequantize_weight(
    q: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor], layout: GroupLayout
) -> torch.Tensor:
    z = layout.expand(zero) if zero is not None else None
    return dequantize(q, layout.expand(scale), z)


def fit_qparams(
    W: torch.Tensor, grid: Grid, layout: GroupLayout, mse: bool = False
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-(output channel, group) qparams from the full range, or from the MSE-best shrunk range."""
    return weight_qparams(W, grid, layout, mse_clip(W, grid, layout) if mse else None)


def fake_quant_weight(
    W: torch.Tensor, grid: Grid, layout: GroupLayout, clip: Optional[torch.Tensor] = None
) -> torch.Tensor:
    q, scale, zero = quantize_weight(W.float(), grid, layout, clip)
    return dequantize_weight(q, scale, zero, layout).to(W.dtype)


# ---- activations: symmetric, per token (dynamic) or per tensor (static) -------------------------


def quantize_act_per_token(
    x: torch.Tensor, bits: int = 8, scale_rule: str = "max"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-token (last dim) codes and scales: s = absmax / qmax (`max` rule), shape
    x.shape[:-1] + (1,)."""
    x = x.float()
    s = x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS) / sym_divisor(bits, scale_rule)
    return quantize(x, s, None, bits, True), s


def fake_quant_act_per_token(x: torch.Tensor, bits: int = 8, scale_rule: str = "max") -> torch.Tensor:
    q, s = quantize_act_per_token(x, bits, scale_rule)
    return (q * s).to(x.dtype)


def fake_quant_act_per_token_asym(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Asymmetric per-token (last dim) fake quantization: codes 0..2^b - 1 over [min, max] of each
    token, an integer zero point (QServe's KV4 quantizer, per head)."""
    xf = x.float()
    lo, hi = xf.amin(-1, keepdim=True).clamp(max=0), xf.amax(-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / (2**bits - 1)).clamp(min=EPS)
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(xf / scale) + zero, 0, 2**bits - 1)
    return ((q - zero) * scale).to(x.dtype)


def fake_quant_act_per_tensor(x: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    return (quantize(x.float(), scale, None, bits, True) * scale).to(x.dtype)


def static_act_scale(absmax: torch.Tensor, bits: int = 8, scale_rule: str = "max") -> torch.Tensor:
    """Per-tensor static scale from a calibration range: max|X| / qmax (`max` rule)."""
    return absmax.max().clamp(min=EPS) / sym_divisor(bits, scale_rule)


# how a per-tensor static activation range is calibrated (act.static_range)
STATIC_RANGES = ("max", "mse", "percentile")
MSE_CLIP_GRID = 100  # clip ratios 1.00, 0.99, ..., 0.01 of max|X|


@torch.no_grad()
def search_static_scale(
    absmax: torch.Tensor,
    X: Optional[torch.Tensor],
    bits: int = 8,
    scale_rule: str = "max",
    how: str = "max",
    percentile: float = 99.99,
) -> torch.Tensor:
    """A per-tensor static scale: the raw range max|X| (`max`), the range clipped to the ratio r of
    max|X| that minimises |X - Q(X)|^2 on the calibration rows X (`mse`; the MSE calibrator of
    TensorRT and of Nagel et al. 2021, "A White Paper on Neural Network Quantization", Sec. 3.4), or
    the `percentile` of |X| over the rows (never above max|X|). X: (rows, in) sample rows."""
    if how not in STATIC_RANGES:
        raise ValueError(f"static range must be one of {STATIC_RANGES}, got {how!r}")
    top = absmax.max().clamp(min=EPS).float()
    div = sym_divisor(bits, scale_rule)
    if how == "max" or X is None or X.numel() == 0:
        return top / div
    A = X.float().abs().flatten()
    if how == "percentile":
        k = max(1, min(A.numel(), int(round(A.numel() * percentile / 100.0))))
        return torch.minimum(A.kthvalue(k).values, top).clamp(min=EPS) / div
    Xf = X.float()
    best, best_err = top / div, float("inf")
    for i in range(MSE_CLIP_GRID):
        s = top * (1.0 - i / MSE_CLIP_GRID) / div
        err = (fake_quant_act_per_tensor(Xf, s, bits) - Xf).pow(2).sum().item()
        if err < best_err:
            best, best_err = s, err
    return best


def sqnr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(|ref|^2 / |ref - x|^2)."""
    ref, x = ref.double(), x.double()
    noise = (ref - x).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.pow(2).sum().clamp(min=1e-30) / noise))
