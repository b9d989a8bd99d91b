"""Round-to-nearest weight quantization (per channel or per group, ragged last group allowed)."""

from typing import Optional, Tuple

import torch

from fptq.primitives import quantize_weight


def rtn_quantize(
    W: torch.Tensor, bits: int, group_size: int, symmetric: bool, clip: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """W: (out, in) -> integer codes (out, in), scale (out, n_groups), zero (out, n_groups) | None."""
    return quantize_weight(W.float(), bits, group_size, symmetric, clip)
