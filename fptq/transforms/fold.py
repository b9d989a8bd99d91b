"""Fold a per-input-channel scale s into a FoldGroup: X' = X / s (source), W' = W * s (linears)."""

from typing import Sequence, Tuple

import torch
import torch.nn as nn


@torch.no_grad()
def fold_scale(
    source: nn.Module,
    linears: Sequence[nn.Linear],
    s: torch.Tensor,
    kind: str,
    part: Tuple[int, int] = (0, 1),
) -> None:
    """In place. `kind` and `part` as in `fptq.arch.FoldGroup`; s: (in_features,), positive."""
    if not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError("equalization scale must be finite and positive")
    if kind in ("rmsnorm", "layernorm"):
        w = source.weight
        w.div_(s.to(w.dtype))
        if getattr(source, "bias", None) is not None:
            source.bias.div_(s.to(source.bias.dtype))
    elif kind == "gemma_rmsnorm":  # y = n(x) * (1 + w)  ->  1 + w' = (1 + w) / s
        w = source.weight
        w.copy_(((1.0 + w.float()) / s - 1.0).to(w.dtype))
    elif kind == "linear":  # the source's output rows (its chunk `part`) are the consumers' inputs
        index, of = part
        n = source.weight.shape[0] // of
        rows = slice(index * n, (index + 1) * n)
        source.weight[rows].div_(s.to(source.weight.dtype).unsqueeze(1))
        if source.bias is not None:
            source.bias[rows].div_(s.to(source.bias.dtype))
    else:
        raise ValueError(f"unknown fold kind {kind!r}")
    for lin in linears:
        lin.weight.mul_(s.to(lin.weight.dtype).unsqueeze(0))
