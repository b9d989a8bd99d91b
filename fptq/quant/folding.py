"""Equalization scales folded into one decoder block, with the calibration statistics kept in sync.

The pipeline's transform step: the scheme's activation-statistics transforms (SmoothQuant), then
the activation picker's equalizer (LAE) on the groups it chose, then weight-aware searches (AWQ).
Which groups a transform may use is data (`fptq.models.arch.FoldGroup`): norm-fed groups when the model's
norms can absorb a scale, linear-fed ones (up_proj -> down_proj, v_proj -> o_proj) for transforms
that say so, and for LAE with `act.lae_linear`.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from fptq.models.arch import ArchSpec, FoldGroup
from fptq.quant.calibration import ChannelStats
from fptq.quant.methods import TRANSFORMS
from fptq.quant.scheme import QuantScheme
from fptq.quant.transforms.fold import consumer_scale, fold_scale, kv_from_heads


class BlockFolder:
    def __init__(
        self,
        block: nn.Module,
        arch: ArchSpec,
        foldable: bool,
        linears: Dict[str, nn.Linear],
        stats: Dict[str, ChannelStats],
        scheme: QuantScheme,
        head_dim: Optional[int] = None,
    ):
        self.block, self.arch, self.foldable = block, arch, foldable
        self.linears, self.stats, self.scheme, self.head_dim = linears, stats, scheme, head_dim
        self.applied: Dict[str, str] = {}  # linear name -> the transform folded last into its input

    def eligible(self, g: FoldGroup, linear_fed: bool) -> bool:
        if not all(m in self.linears for m in g.linears):
            return False
        if g.norm_fed:
            return self.foldable
        return linear_fed and (g.kind == "linear" or self.head_dim is not None)

    def lae_groups(self) -> List[FoldGroup]:
        """Groups the activation picker's equalizer may fold into (act.lae_linear adds linear-fed)."""
        act = self.scheme.act
        linear_fed = act is not None and act.lae_linear
        return [g for g in self.arch.groups if self.eligible(g, linear_fed)]

    def scale(self, g: FoldGroup, tname: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Transform `tname`'s scale for group g: (in the source's output space, on the consumers'
        inputs). Attention groups compute it from kv-space statistics (max over the query heads
        sharing a kv head), so that one scale per kv-head channel serves them all."""
        members = [self.linears[m] for m in g.linears]
        st, weights = self.stats[g.linears[0]], [m.weight for m in members]
        rep = 1
        if g.kind == "attention":
            rep = members[0].in_features // self.block.get_submodule(g.source).out_features
            st = ChannelStats(kv_from_heads(st.absmax, rep, self.head_dim))
            weights = [kv_from_heads(w.abs(), rep, self.head_dim) for w in weights]
        s = TRANSFORMS.get(tname).scale(st, weights, self.scheme.transform_settings(tname), self.scheme)
        return s, consumer_scale(g.kind, s, rep, self.head_dim)

    def fold(self, g: FoldGroup, tname: str) -> None:
        s, s_in = self.scale(g, tname)
        members = [self.linears[m] for m in g.linears]
        fold_scale(self.block.get_submodule(g.source), members, s, g.kind, g.part, self.head_dim)
        for m in g.linears:
            self.stats[m].rescale(s_in)
            self.applied[m] = tname  # the last one (the report names one transform per layer)

    def apply(self, names: List[str]) -> None:
        """The scheme's transforms `names`, each on every group it is eligible for."""
        for tname in names:
            linear_fed = TRANSFORMS.get(tname).linear_fed
            for g in self.arch.groups:
                if g.kind != "attention" and self.eligible(g, linear_fed):
                    self.fold(g, tname)
