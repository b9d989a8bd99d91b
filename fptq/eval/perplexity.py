"""Perplexity in the GPTQ protocol (Frantar et al. 2022, `llama_eval`): the token stream is cut
into non-overlapping windows of `seqlen`; token-level perplexity exp(sum(nll_i * seqlen) /
(windows * seqlen)), each window's nll the mean over its seqlen - 1 predicted tokens. No BOS
unless `bos_id` is given (then it is prepended to each window and all seqlen tokens are scored).
`prefix_ids` (a fixed prompt, e.g. a shared system prompt) go before every window, after the BOS;
they are context, never scored: prompt-led windows, where a KV cache's first positions are the
prompt's (`quant.kv.keep_first`).
"""

import math
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fptq.files import DataError


@dataclass
class PerplexityResult:
    ppl: float
    windows: int
    total_windows: int
    seqlen: int
    seconds: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    ids: torch.Tensor,
    seqlen: int = 2048,
    max_windows: Optional[int] = None,
    bos_id: Optional[int] = None,
    progress: bool = True,
    desc: str = "ppl",
    prefix_ids: Optional[torch.Tensor] = None,
) -> PerplexityResult:
    t0 = time.perf_counter()
    total, n = _windows(ids, seqlen, max_windows)
    device = next(model.parameters()).device
    prefix = _prefix(bos_id, prefix_ids, device)
    nll_sum = 0.0
    for i in tqdm(range(n), desc=desc, disable=not progress):
        window, inp = _window(ids, i, seqlen, prefix, device)
        nll_sum += _window_nll(model(inp, use_cache=False).logits, window, prefix.numel(), i) * seqlen
    return PerplexityResult(math.exp(nll_sum / (n * seqlen)), n, total, seqlen, time.perf_counter() - t0)


def _windows(ids: torch.Tensor, seqlen: int, max_windows: Optional[int]):
    """(windows in the stream, windows evaluated)."""
    total = ids.numel() // seqlen
    if total == 0:
        raise DataError(f"the evaluation text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    return total, total if max_windows is None else min(total, max_windows)


def _prefix(bos_id: Optional[int], prefix_ids: Optional[torch.Tensor], device) -> torch.Tensor:
    """What goes before every window: the BOS (if any), then the fixed prompt (if any)."""
    parts = [] if bos_id is None else [torch.tensor([bos_id])]
    if prefix_ids is not None:
        parts.append(prefix_ids.reshape(-1).long().cpu())
    return (torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)).to(device)


def _window(ids, i, seqlen, prefix: torch.Tensor, device):
    window = ids[i * seqlen : (i + 1) * seqlen].unsqueeze(0).to(device)
    inp = torch.cat([prefix.unsqueeze(0), window], 1) if prefix.numel() else window
    return window, inp


def _window_nll(logits: torch.Tensor, window: torch.Tensor, n_prefix: int, i: int) -> float:
    """Mean nll of the window's tokens: all of them after a prefix, all but the first without."""
    logits = logits.float()[:, max(n_prefix - 1, 0) : -1]
    labels = window[:, 1:] if n_prefix == 0 else window
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss in window {i}: the quantized model diverged")
    return float(loss)


@torch.no_grad()
def perplexity_blockwise(
    model: torch.nn.Module,
    ids: torch.Tensor,
    loader,
    seqlen: int = 2048,
    max_windows: Optional[int] = None,
    bos_id: Optional[int] = None,
    progress: bool = True,
    desc: str = "ppl",
    prefix_ids: Optional[torch.Tensor] = None,
) -> PerplexityResult:
    """The same perplexity, one decoder block at a time (GPTQ's `llama_eval`): every window goes
    through block i, whose float weights `loader` reads from the checkpoint and drops afterwards.
    For a float model that does not fit: only one block and the windows' hidden states are resident.
    """
    from fptq.models.arch import arch_of
    from fptq.quant.calibration import (
        capture_block_inputs,
        capture_block_kwargs,
        run_block,
        with_block_kwargs,
    )

    t0 = time.perf_counter()
    total, n = _windows(ids, seqlen, max_windows)
    arch = arch_of(model)
    device = next(model.parameters()).device
    prefix = _prefix(bos_id, prefix_ids, device)
    windows = [_window(ids, i, seqlen, prefix, device) for i in range(n)]
    blocks = model.get_submodule(arch.blocks)
    inputs = torch.cat([inp for _, inp in windows])
    batches = capture_block_inputs(model, blocks[0], inputs, 1)
    kwargs = capture_block_kwargs(model, blocks, inputs, 1)
    for bi in tqdm(range(len(blocks)), desc=f"{desc} (block by block)", disable=not progress):
        loader.load(bi, blocks[bi])
        batches = run_block(blocks[bi], with_block_kwargs(batches, kwargs, bi))
        loader.unload(blocks[bi])
    norm, head = model.get_submodule(arch.final_norm), model.get_output_embeddings()
    nll_sum = sum(
        _window_nll(head(norm(h)), window, prefix.numel(), i) * seqlen
        for i, ((h, _, _), (window, _)) in enumerate(zip(batches, windows, strict=True))
    )
    return PerplexityResult(math.exp(nll_sum / (n * seqlen)), n, total, seqlen, time.perf_counter() - t0)
