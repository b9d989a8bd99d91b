"""Layer-by-layer calibration (GPTQ's "sequential" pattern).

`capture_block_inputs` runs the model up to the first decoder block and keeps its inputs;
`collect_stats` runs one block on them with hooks on its linears. The pipeline quantizes that
block, runs it again to produce the next block's inputs, and frees the old ones: peak memory is
about one block plus the calibration activations.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

# what feeds block i+1 during calibration: block i's quantized outputs (GPTQ's sequential
# pattern, two passes per block) or its float outputs (one pass, about 2x faster)
PROPAGATE = ("quantized", "float")


@dataclass
class ChannelStats:
    """Statistics of one linear's input X (tokens, in_features) over the calibration set."""

    absmax: torch.Tensor  # (in,) max|X_j|
    tokens: int = 0
    H: Optional[torch.Tensor] = None  # (in, in) 2/n X^T X (GPTQ)
    sample: List[torch.Tensor] = field(default_factory=list)  # rows of X kept for AWQ / the report

    @property
    def v(self) -> float:
        """The layer's activation range v = max|X| (FPTQ's strategy selector)."""
        return float(self.absmax.max())

    def sample_tensor(self) -> torch.Tensor:
        return torch.cat(self.sample, 0)

    def rescale(self, s: torch.Tensor) -> None:
        """Statistics of X / s, after an equalization scale s was folded in."""
        self.absmax = self.absmax / s
        if self.H is not None:
            self.H = self.H / torch.outer(s, s)
        self.sample = [x / s for x in self.sample]


class _StopForward(Exception):
    pass


Batch = Tuple[torch.Tensor, tuple, dict]  # (hidden_states, other positional args, kwargs)


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, first_block: nn.Module, input_ids: torch.Tensor, batch_size: int
) -> List[Batch]:
    """Inputs (hidden states, args, kwargs) of the first decoder block, one entry per batch."""
    batches: List[Batch] = []

    def hook(module, args, kwargs):
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        batches.append((hidden, tuple(args[1:]), kwargs))
        raise _StopForward

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        _run_until_stopped(model, input_ids, batch_size)
    finally:
        handle.remove()
    return batches


def _run_until_stopped(model: nn.Module, input_ids: torch.Tensor, batch_size: int) -> None:
    """The model's forward on each batch, each stopped by a _StopForward from a hook or stand-in."""
    device = next(model.parameters()).device
    for i in range(0, input_ids.shape[0], batch_size):
        try:
            model(input_ids[i : i + batch_size].to(device), use_cache=False)
        except _StopForward:
            pass


class _Standin(nn.Module):
    """Takes block i's place for one pass: records its keyword inputs and returns its hidden input
    unchanged (stops the forward after the last block). Attributes the model's loop reads (e.g.
    `attention_type`) come from the real block."""

    def __init__(self, block: nn.Module, sink: List[dict], last: bool):
        super().__init__()
        self.block, self.sink, self.last = block, sink, last

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("block"), name)

    def forward(self, hidden, *args, **kwargs):
        self.sink.append(dict(kwargs))
        if self.last:
            raise _StopForward
        return hidden


def mixed_layer_types(model: nn.Module) -> bool:
    """Blocks of more than one kind (config.layer_types, e.g. Gemma-2/3's sliding-window and global
    layers), which the model feeds their own attention masks (and Gemma-3 its own rotary tables)."""
    types = getattr(model.config, "layer_types", None) or []
    return len(set(types)) > 1


@torch.no_grad()
def capture_block_kwargs(
    model: nn.Module, blocks: nn.ModuleList, input_ids: torch.Tensor, batch_size: int
) -> Optional[List[List[dict]]]:
    """Each block's own keyword inputs, per batch, when the blocks are of mixed kinds; None when
    every block takes block 0's (block-by-block passes then reuse those). Identical objects are
    shared, so this costs one mask (or rotary table) per kind and batch."""
    if not mixed_layer_types(model):
        return None
    sinks: List[List[dict]] = [[] for _ in blocks]
    originals = list(blocks)
    for i, b in enumerate(originals):
        blocks[i] = _Standin(b, sinks[i], last=i == len(originals) - 1)
    try:
        _run_until_stopped(model, input_ids, batch_size)
    finally:
        for i, b in enumerate(originals):
            blocks[i] = b
    return sinks


def with_block_kwargs(batches: List["Batch"], kwargs: Optional[List[List[dict]]], i: int) -> List["Batch"]:
    """`batches` with block i's own keyword inputs (from `capture_block_kwargs`), if it has any."""
    if kwargs is None:
        return batches
    return [(h, args, kw) for (h, args, _), kw in zip(batches, kwargs[i], strict=True)]


def block_output(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_block(block: nn.Module, batches: List[Batch]) -> List[Batch]:
    return [(block_output(block(h, *args, **kw)), args, kw) for h, args, kw in batches]


@torch.no_grad()
def collect_stats(
    block: nn.Module,
    linears: Dict[str, nn.Linear],
    batches: List[Batch],
    *,
    hessian: bool = False,
    sample_rows: int = 512,
    block_name: str = "",
    seed: int = 0,
    outputs: Optional[List[Batch]] = None,
) -> Dict[str, ChannelStats]:
    """Run `block` over the batches with input hooks on `linears` (names relative to the block).

    If `outputs` is a list, the block's (float) outputs are appended to it.
    """
    stats: Dict[str, ChannelStats] = {}
    state = {"offset": 0}
    n_batches = max(len(batches), 1)
    per_batch = max(1, sample_rows // n_batches)
    gen = torch.Generator().manual_seed(seed)

    def make_hook(name: str):
        def hook(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            amax = x.abs().amax(0)
            if not torch.isfinite(amax).all():  # NaN/inf propagate through max: one cheap check
                row = int((~torch.isfinite(x)).any(-1).nonzero()[0])
                seq = args[0].shape[-2] if args[0].dim() >= 3 else 1
                sample = state["offset"] + row // seq
                raise FloatingPointError(
                    f"NaN/inf in the calibration input of {block_name}.{name} (calibration sample {sample}); "
                    "check the model's dtype (fp16 overflow?) and the calibration data"
                )
            st = stats.get(name)
            if st is None:
                st = stats[name] = ChannelStats(
                    absmax=torch.zeros(x.shape[1], device=x.device),
                    H=torch.zeros(x.shape[1], x.shape[1], device=x.device) if hessian else None,
                )
            st.absmax = torch.maximum(st.absmax, amax)
            n_old, n_new = st.tokens, x.shape[0]
            st.tokens += n_new
            if st.H is not None:
                # running mean of 2 x x^T (GPTQ reference's add_batch)
                st.H.mul_(n_old / st.tokens).add_((2.0 / st.tokens) * (x.T @ x))
            idx = torch.randperm(x.shape[0], generator=gen)[: min(per_batch, x.shape[0])].to(x.device)
            st.sample.append(x[idx])  # statistics stay on the model's device

        return hook

    handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in linears.items()]
    try:
        for h, args, kw in batches:
            out = block(h, *args, **kw)
            if outputs is not None:
                outputs.append((block_output(out), args, kw))
            state["offset"] += h.shape[0]
    finally:
        for hd in handles:
            hd.remove()
    return stats
