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
    total = ids.numel() // seqlen
    if total == 0:
        raise ValueError(f"the evaluation text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    n = total if max_windows is None else min(total, max_windows)
    device = next(model.parameters()).device
    nll_sum = 0.0
    for i in tqdm(range(n), desc=desc, disable=not progress):
        window = ids[i * seqlen : (i + 1) * seqlen].unsqueeze(0).to(device)
        inp = window if bos_id is None else torch.cat([torch.tensor([[bos_id]], device=device), window], 1)
        logits = model(inp, use_cache=False).logits.float()
        if bos_id is None:
            logits, labels = logits[:, :-1], window[:, 1:]
        else:
            logits, labels = logits[:, :-1], window
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss in window {i}: the quantized model diverged")
        nll_sum += float(loss) * seqlen
    return PerplexityResult(math.exp(nll_sum / (n * seqlen)), n, total, seqlen, time.perf_counter() - t0)
