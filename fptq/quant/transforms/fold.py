"""Fold a per-input-channel scale s into a FoldGroup: X' = X / s (source), W' = W * s (linears).

Attention groups (v_proj -> o_proj): o_proj's input channel (h, d) is query head h's attention-
weighted average of v_proj's output channel (kv(h), d), with kv(h) = h // n_rep under grouped-query
attention (transformers' repeat_kv). Softmax weights sum over tokens and do not mix channels, so
dividing v_proj's row (c, d) by s_(c, d) divides every o_proj input (h, d) with kv(h) = c by the
same s_(c, d): the scale lives in kv space (one per kv-head channel, shared by the query heads that
read it), and o_proj's columns are multiplied by its expansion `heads_from_kv(s)`.
"""

from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn


def kv_from_heads(x: torch.Tensor, n_rep: int, head_dim: int) -> torch.Tensor:
    """(..., n_heads * head_dim) -> (..., n_kv * head_dim): the max over the query heads sharing each
    kv head (a kv-space statistic of o_proj's input channels, or of |W_o|'s columns)."""
    shape = x.shape[:-1]
    return x.reshape(*shape, -1, n_rep, head_dim).amax(-2).reshape(*shape, -1)


def heads_from_kv(s: torch.Tensor, n_rep: int, head_dim: int) -> torch.Tensor:
    """(n_kv * head_dim,) -> (n_heads * head_dim,): query head h gets kv head h // n_rep's scale."""
    return s.reshape(-1, 1, head_dim).expand(-1, n_rep, head_dim).reshape(-1)


def consumer_scale(kind: str, s: torch.Tensor, rep: int = 1, head_dim: Optional[int] = None) -> torch.Tensor:
    """The scale on the consumers' input channels for a scale `s` in the source's output space."""
    return heads_from_kv(s, rep, head_dim) if kind == "attention" else s


@torch.no_grad()
def fold_scale(
    source: nn.Module,
    linears: Sequence[nn.Linear],
    s: torch.Tensor,
    kind: str,
    part: Tuple[int, int] = (0, 1),
    head_dim: Optional[int] = None,
) -> None:
    """In place. `kind` and `part` as in `fptq.models.arch.FoldGroup`; s: positive, one per consumer input
    channel, or for kind `attention` one per v_proj output channel (kv space; needs head_dim)."""
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
    elif kind == "attention":  # v_proj rows in kv space, o_proj columns per query head
        source.weight.div_(s.to(source.weight.dtype).unsqueeze(1))
        if source.bias is not None:
            source.bias.div_(s.to(source.bias.dtype))
        s = heads_from_kv(s, linears[0].weight.shape[1] // s.numel(), head_dim)
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
