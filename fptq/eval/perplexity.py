"""Perplexity in the GPTQ protocol (Frantar et al. 2022, `llama_eval`): the token stream is cut
into non-overlapping windows of `seqlen`; token-level perplexity exp(sum(nll_i * seqlen) /
(windows * seqlen)), each window's nll the mean over its seqlen - 1 predicted tokens. No BOS
unless `bos_id` is given (then it is prepended to each window and all seqlen tokens are scored).
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
) -> PerplexityResult:
    t0 = time.perf_counter()
    total, n = _windows(ids, seqlen, max_windows)
    device = next(model.parameters()).device
    nll_sum = 0.0
    for i in tqdm(range(n), desc=desc, disable=not progress):
        window, inp = _window(ids, i, seqlen, bos_id, device)
        nll_sum += _window_nll(model(inp, use_cache=False).logits, window, bos_id, i) * seqlen
    return PerplexityResult(math.exp(nll_sum / (n * seqlen)), n, total, seqlen, time.perf_counter() - t0)


def _windows(ids: torch.Tensor, seqlen: int, max_windows: Optional[int]):
    """(windows in the stream, windows evaluated)."""
    total = ids.numel() // seqlen
    if total == 0:
        raise DataError(f"the evaluation text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    return total, total if max_windows is None else min(total, max_windows)


def _window(ids, i, seqlen, bos_id, device):
    window = ids[i * seqlen : (i + 1) * seqlen].unsqueeze(0).to(device)
    inp = window if bos_id is None else torch.cat([torch.tensor([[bos_id]], device=device), window], 1)
    return window, inp


def _window_nll(logits: torch.Tensor, window: torch.Tensor, bos_id, i: int) -> float:
    logits = logits.float()[:, :-1]
    labels = window[:, 1:] if bos_id is None else window
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
    windows = [_window(ids, i, seqlen, bos_id, device) for i in range(n)]
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
        _window_nll(head(norm(h)), window, bos_id, i) * seqlen
        for i, ((h, _, _), (window, _)) in enumerate(zip(batches, windows, strict=True))
    )
    return PerplexityResult(math.exp(nll_sum / (n * seqlen)), n, total, seqlen, time.perf_counter() - t0)
