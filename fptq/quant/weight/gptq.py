"""GPTQ (Frantar et al. 2022, arXiv 2210.17323, Algorithm 1), written from the paper.

Columns are quantized one at a time; each column's error, scaled by the inverse Hessian's
Cholesky factor, is spread over the not-yet-quantized columns ("lazy batch" blocks of
`block_size`). H = 2 X^T X / n from calibration inputs.

Groups: without act-order, a group's scale is computed when its first column is reached, from
the already-updated weights (the reference's behaviour). With act-order the group scales are
computed up front from the original weights ("static groups"), so that group g always covers
columns [g*G, (g+1)*G) and packed kernels need no g_idx.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

import torch

from fptq.quant.granularity import GroupLayout
from fptq.quant.methods import WEIGHT_METHODS, Needs, WeightMethod, check
from fptq.quant.primitives import Grid, dequantize, fit_qparams, quantize
from fptq.quant.weight.rtn import Codes

if TYPE_CHECKING:
    from fptq.quant.calibration import ChannelStats
    from fptq.quant.scheme import WeightSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GPTQSettings:
    damp: float = 0.01  # fraction of mean(diag(H)) added to the diagonal
    block_size: int = 128  # lazy-batch block of columns
    act_order: bool = False  # quantize columns by decreasing diag(H); groups stay static
    # calibrate each sub-layer group of a block (q/k/v, o, gate/up, down) on the outputs of the
    # groups before it already quantized (GPTQ's --true-sequential), not on the float block
    true_sequential: bool = False

    def __post_init__(self):
        check(0.0 < self.damp < 1.0, f"weight.gptq.damp must be in (0, 1), got {self.damp}")
        check(self.block_size >= 1, f"weight.gptq.block_size must be >= 1, got {self.block_size}")


def hessian_inverse_cholesky(H: torch.Tensor, damp: float, retries: int = 4, name: str = "") -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) I)^-1, retrying with 10x more damping."""
    n = H.shape[0]
    mean_diag = torch.diag(H).mean().clamp(min=1e-8)
    for attempt in range(retries + 1):
        Hd = H.clone()
        Hd.diagonal().add_(damp * mean_diag)
        try:
            L = torch.linalg.cholesky(Hd)
            Hinv = torch.cholesky_inverse(L)
            return torch.linalg.cholesky(Hinv, upper=True)
        except torch.linalg.LinAlgError:
            if attempt == retries:
                raise RuntimeError(
                    f"GPTQ: Hessian of {name or 'layer'} ({n}x{n}) is not positive definite even with "
                    f"damp={damp}; use more calibration data or a larger quant.weight.gptq.damp"
                ) from None
            log.warning("GPTQ: Cholesky failed for %s with damp=%g; retrying with %g", name, damp, damp * 10)
            damp *= 10
    raise AssertionError("unreachable")


@torch.no_grad()
def gptq_quantize(
    W: torch.Tensor,
    H: torch.Tensor,
    grid: Grid,
    layout: GroupLayout,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
    name: str = "",
    mse: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """W: (out, in), H: (in, in) -> codes (out, in), scale (out, n_groups), zero (out, n_groups)|None.

    mse: each group's range is the MSE-best shrink of its weights as they stand when the group's
    scale is fixed (`fptq.quant.primitives.mse_clip`; the reference's `mse` option).
    """
    bits, symmetric = grid.bits, grid.symmetric
    W = W.detach().clone().float()
    H = H.detach().clone().float()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    bounds = layout.bounds()
    n_groups = layout.n_groups
    scale = torch.empty(rows, n_groups, device=W.device)
    zero = None if symmetric else torch.empty(rows, n_groups, device=W.device)
    static = act_order and n_groups > 1
    if static or n_groups == 1:
        scale, zero = fit_qparams(W, grid, layout, mse)
    S = layout.expand(scale)
    Z = layout.expand(zero) if zero is not None else None
    group_start = {a: (g, b) for g, (a, b) in enumerate(bounds)}

    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
        S = S[:, perm]
        Z = Z[:, perm] if Z is not None else None
    U = hessian_inverse_cholesky(H, damp, name=name)

    Q = torch.zeros_like(W)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if not static and n_groups > 1 and col in group_start:
                g, b = group_start[col]
                # this group's columns as they stand now: updated block part, pending rest
                cur = torch.cat([W1[:, i:], W[:, i2:]], 1)[:, : b - col]
                sg, zg = fit_qparams(cur, grid, GroupLayout(b - col, b - col), mse)
                sg = sg[:, 0]
                zg = None if zg is None else zg[:, 0]
                scale[:, g] = sg
                S[:, col:b] = sg.unsqueeze(1)
                if zg is not None:
                    zero[:, g] = zg
                    Z[:, col:b] = zg.unsqueeze(1)
            w = W1[:, i]
            s = S[:, col]
            z = Z[:, col] if Z is not None else None
            q = quantize(w, s, z, bits, symmetric)
            Q[:, col] = q
            err = (w - dequantize(q, s, z)) / U1[i, i]
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]

    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return Q, scale, zero


@WEIGHT_METHODS.register
class GPTQ(WeightMethod):
    name = "gptq"
    Settings = GPTQSettings

    def needs(self, s: GPTQSettings) -> Needs:
        return Needs(ranges=True, hessian=True, sequential=s.true_sequential)

    def quantize(
        self, W: torch.Tensor, layout: GroupLayout, spec: WeightSpec, stats: Optional[ChannelStats], name: str
    ) -> Codes:
        if stats is None or stats.H is None:
            raise ValueError(f"{name}: GPTQ needs the layer's Hessian from calibration")
        s = spec.settings
        return gptq_quantize(W, stats.H, spec.grid, layout, s.damp, s.block_size, s.act_order, name, spec.mse)
