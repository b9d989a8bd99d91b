"""`act.strategy=auto`: per layer, the cheapest activation mode whose output error stays within a
budget of per-token dynamic's (beyond the paper: FPTQ's rule picks modes from v = max|X| alone).

For every linear of a block, on its calibration rows X (the sample kept by calibration) and its
weight quantized round-to-nearest on the scheme's grid, measure the output SQNR
10 log10(|X W^T|^2 / |X W^T - Q(X) Q(W)^T|^2) with per-token dynamic, per-tensor static, and, where an
eligible fold group can absorb it, LAE + per-tensor static (X / s, W * s). With budget delta
(`quant.act.auto.budget_db`), a layer is static if SQNR_static >= SQNR_dynamic - delta; else LAE + static if
that passes; else dynamic. LAE is folded into a group when it lifts at least one member that static
alone could not; the group's other members then take LAE + static if it passes, else dynamic.
Cost order: static < LAE + static (the same runtime; weights rescaled) < dynamic (a reduction per
token at run time). `act.overrides` still apply last (the pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional

import torch

from fptq.quant.methods import ACT_STRATEGIES, ActStrategy, Needs, check
from fptq.quant.modes import LayerMode
from fptq.quant.primitives import (
    fake_quant_act_per_tensor,
    fake_quant_act_per_token,
    fake_quant_weight,
    sqnr_db,
)

if TYPE_CHECKING:
    from fptq.quant.scheme import QuantScheme


@dataclass(frozen=True)
class AutoSettings:
    # a layer goes static (or LAE + static) if its output SQNR on calibration rows is within this
    # many dB of per-token dynamic's; per-layer budgets add up over a model's layers
    budget_db: float = 1.0

    def __post_init__(self):
        check(self.budget_db >= 0, f"act.auto.budget_db must be >= 0, got {self.budget_db}")


def _rtn_weight(W: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """W fake-quantized round-to-nearest on the scheme's weight grid (as is for float weights)."""
    w = scheme.weight
    return W if w is None else fake_quant_weight(W, w.grid, w.layout(W.shape[1]))


def output_sqnr(
    X: torch.Tensor, W: torch.Tensor, mode: LayerMode, scheme: QuantScheme, Wq: Optional[torch.Tensor] = None
) -> float:
    """Output SQNR (dB) of one linear on rows X with RTN weights and activation mode `mode`
    (Wq: W already quantized, when the caller measures several modes on the same weights)."""
    act = scheme.act
    if Wq is None:
        Wq = _rtn_weight(W, scheme)
    if mode == LayerMode.DYNAMIC:
        Xq = fake_quant_act_per_token(X, act.bits, act.scale_rule)
    else:
        scale = act.static_scale(X.abs().amax(0), X)
        Xq = fake_quant_act_per_tensor(X, scale, act.bits)
    return sqnr_db(X @ W.T, Xq @ Wq.T)


@ACT_STRATEGIES.register
class Auto(ActStrategy):
    name = "auto"
    Settings = AutoSettings
    NEEDS = Needs(ranges=True, sample_rows=True)

    @torch.no_grad()
    def plan(self, block) -> Dict[str, LayerMode]:
        scheme, folder, linears, groups = block.scheme, block.folder, block.linears, block.groups
        act, budget = scheme.act, scheme.act.settings.budget_db
        sq: Dict[str, Dict[LayerMode, float]] = {}
        for n, lin in linears.items():
            X, W = folder.stats[n].sample_tensor().float(), lin.weight.float()
            Wq = _rtn_weight(W, scheme)  # once for both modes
            sq[n] = {m: output_sqnr(X, W, m, scheme, Wq) for m in (LayerMode.DYNAMIC, LayerMode.STATIC)}
        for g in groups:
            _, s_in = folder.scale(g, act.equalizer)
            for n in g.linears:
                X, W = folder.stats[n].sample_tensor().float(), linears[n].weight.float()
                sq[n][LayerMode.LAE] = output_sqnr(X / s_in, W * s_in, LayerMode.LAE, scheme)

        def passes(n: str, mode: LayerMode) -> bool:
            return mode in sq[n] and sq[n][mode] >= sq[n][LayerMode.DYNAMIC] - budget

        folded = set()
        for g in groups:
            if any(not passes(n, LayerMode.STATIC) and passes(n, LayerMode.LAE) for n in g.linears):
                folded.update(g.linears)
        modes = {}
        for n in linears:
            first = LayerMode.LAE if n in folded else LayerMode.STATIC
            modes[n] = first if passes(n, first) else LayerMode.DYNAMIC
        return modes
