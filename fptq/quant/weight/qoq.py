"""`qoq`: QServe's progressive group quantization (Lin et al. 2024, QServe / QoQ, arXiv 2405.04532,
Sec. 4.1), the weight side of W4A8KV4.

Level 1: each output channel to symmetric int8 with a float scale s1 = max|W_row| / 119, inside the
protective range [-119, 119]. Level 2: each group (128 columns) of those int8 values to unsigned
4-bit with an integer scale s2 = ceil((max - min) / 15) and an integer zero point z. Then the int4 ->
int8 step (q - z) * s2 is integer only and never leaves [-127, 127] (|round(v / s2) s2 - v| <= s2 / 2 <=
8), so the W4A8 GEMM runs as a per-channel int8 GEMM with s_x * s1 in its epilogue. Stored in the
packed format's "qoq" variant (`fptq.kernels.reference`): 4-bit codes, int8 group scales and zeros,
a float32 scale per channel.

Departures from QServe: its level-1 scale may be searched (an SmoothQuant-like clipping on the
per-channel range, "QoQ w/ progressive + clipping"); here round to nearest on the raw range, the
`weight.mse` option off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import torch

from fptq.quant.granularity import GroupLayout
from fptq.quant.methods import WEIGHT_METHODS, Needs, WeightMethod, check

if TYPE_CHECKING:
    from fptq.quant.calibration import ChannelStats
    from fptq.quant.scheme import WeightSpec

PROTECT = 119  # the protective range of level 1 (QServe Sec. 4.1)
LEVELS = 15  # uint4: codes 0..15
EPS = 1e-8


def qoq_quantize(
    W: torch.Tensor, layout: GroupLayout, protect: int = PROTECT
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """W (out, in) -> q4 (out, in) in 0..15, s2 (out, n_groups) integers in 1..16, z (out, n_groups)
    integers in 0..15, s1 (out,) float: W ~ s1 * (q4 - z) * s2."""
    W = W.float()
    s1 = W.abs().amax(1).clamp(min=EPS) / protect
    q1 = torch.round(W / s1[:, None]).clamp(-protect, protect)
    mins = torch.stack([q1[:, a:b].amin(1) for a, b in layout.bounds()], 1).clamp(max=0)
    maxs = torch.stack([q1[:, a:b].amax(1) for a, b in layout.bounds()], 1).clamp(min=0)
    s2 = torch.ceil((maxs - mins) / LEVELS).clamp(min=1)
    z = torch.round(-mins / s2).clamp(0, LEVELS)
    idx = torch.arange(W.shape[1], device=W.device) // layout.group_size
    q4 = (torch.round(q1 / s2[:, idx]) + z[:, idx]).clamp(0, LEVELS)
    return q4, s2, z, s1


def qoq_dequantize(q4, s2, z, s1, layout: GroupLayout) -> torch.Tensor:
    idx = torch.arange(q4.shape[1], device=q4.device) // layout.group_size
    return s1[:, None] * (q4 - z[:, idx]) * s2[:, idx]


@WEIGHT_METHODS.register
class QoQ(WeightMethod):
    name = "qoq"
    NEEDS = Needs()
    format = "qoq"

    def check_spec(self, spec: WeightSpec) -> None:
        check(spec.bits == 4, f"weight.algo=qoq is 4-bit (uint4 over int8), got weight.bits={spec.bits}")
        check(
            spec.group_size > 0,
            "weight.algo=qoq quantizes groups of the int8 level (QServe: 128); group_size=0 (per channel) "
            "is QServe's other W4A8 path, which is plain int4 per channel: use weight.algo=rtn",
        )
        check(
            not spec.symmetric,
            "weight.algo=qoq is asymmetric (uint4 with a zero point): set weight.symmetric=false",
        )
        check(spec.zero_point == "int", "weight.algo=qoq keeps integer zero points (weight.zero_point=int)")
        check(not spec.mse, "weight.algo=qoq rounds to nearest (weight.mse=false)")

    def quantize(
        self, W: torch.Tensor, layout: GroupLayout, spec: WeightSpec, stats: Optional[ChannelStats], name: str
    ):
        return qoq_quantize(W, layout)
