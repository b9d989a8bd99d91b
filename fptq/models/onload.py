"""Sequential onloading: a model whose float weights are never all in memory at once.

`skeleton` builds the model with every parameter on the meta device (accelerate's empty-weights
context; buffers such as rotary tables stay real) and loads only what lies outside the decoder
blocks (embeddings, final norm, head). `BlockLoader` then reads one block's float weights from
the checkpoint's safetensors files when that block's turn comes, and `release` puts a finished
float block's parameters back on meta. The same reader serves saved quantized checkpoints
(`fptq.models.checkpoint`). llm-compressor calls the pattern "sequential onloading"; GPTQ's `llama_eval`
runs evaluation the same way.
"""

import ctypes
import json
import logging
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn as nn

from fptq.models.arch import arch_of

log = logging.getLogger(__name__)

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read as asked (missing, truncated, other format)."""


class SafetensorsReader:
    """Tensor name -> file over a folder's safetensors (sharded with an index, or one file)."""

    def __init__(self, folder):

        self.folder = Path(folder)
        index = self.folder / SAFETENSORS_INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: not a safetensors index ({e})") from e
            files = sorted(set(weight_map.values()))
        elif (self.folder / SAFETENSORS_SINGLE).is_file():
            files, weight_map = [SAFETENSORS_SINGLE], None
        else:
            raise CheckpointError(
                f"{self.folder} holds no {SAFETENSORS_SINGLE} or {SAFETENSORS_INDEX}; sequential loading "
                "and saved checkpoints read safetensors (re-save a .bin model with save_pretrained)"
            )
        self.where: Dict[str, str] = {}
        self._meta: Dict[str, str] = {}
        for f in files:
            path = self.folder / f
            if not path.is_file():
                raise CheckpointError(f"{path} is listed in {SAFETENSORS_INDEX} but missing")
            with self._open(f) as h:
                self._meta = self._meta or (h.metadata() or {})
                for k in h.keys():
                    self.where[k] = f
        if weight_map is not None:
            missing = [k for k, f in weight_map.items() if self.where.get(k) != f]
            if missing:
                raise CheckpointError(
                    f"{index} lists {len(missing)} tensors not in their files, e.g. {missing[0]}"
                )

    def _open(self, f: str):
        from safetensors import safe_open

        path = self.folder / f
        try:
            return safe_open(str(path), framework="pt")
        except Exception as e:  # safetensors raises its own error type on a bad header
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({e}); it may be truncated or still being "
                "written: copy or save it again"
            ) from e

    def keys(self) -> List[str]:
        return list(self.where)

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def metadata(self) -> Dict[str, str]:
        return self._meta

    def get(self, name: str, dtype: Optional[torch.dtype] = None, device="cpu") -> torch.Tensor:
        return self.get_many([name], lambda n: dtype, device)[name]

    def get_many(self, names, dtype_of=lambda name: None, device="cpu") -> Dict[str, torch.Tensor]:
        """Read tensors; dtype_of(name): a float dtype to cast to, or None. Each tensor is copied out
        of the file's mapping, which is closed right after: no page read stays mapped, and at most
        one tensor is resident twice."""
        out = {}
        for n in names:
            if n not in self.where:
                raise CheckpointError(f"{self.folder}: no tensor named {n!r} in the checkpoint")
            with self._open(self.where[n]) as h:
                t = h.get_tensor(n)  # a view of the file's mapping
                dt = dtype_of(n)
                if dt is not None and t.is_floating_point() and t.dtype != dt:
                    t = t.to(dt)
                elif torch.device(device).type == "cpu":
                    t = t.clone()  # own memory: the mapping can go
                out[n] = t.to(device)
        return out


def _fill(module: nn.Module, prefix: str, reader: SafetensorsReader, dtype, device) -> None:
    """Assign every state_dict entry of `module` from the checkpoint (names under `prefix`)."""
    names = list(module.state_dict(keep_vars=True))
    got = reader.get_many([prefix + k for k in names], lambda n: dtype, device)
    module.load_state_dict({k: got[prefix + k] for k in names}, strict=True, assign=True)


def tied_aliases(model: nn.Module, reader_keys: Iterable[str]) -> Dict[str, str]:
    """Names of the model that share a tensor with another name and are absent from the checkpoint
    (a tied head): missing name -> the name to read."""
    keys = set(reader_keys)
    by_id: Dict[int, List[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        by_id.setdefault(id(t), []).append(name)
    aliases = {}
    for names in by_id.values():
        present = [n for n in names if n in keys]
        for n in names:
            if n not in keys and present:
                aliases[n] = present[0]
    return aliases


def retie(model: nn.Module) -> None:
    """Re-tie the output embedding to the input embedding when the config ties them."""
    if getattr(model.config, "tie_word_embeddings", False):
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
        if out is not None and inp is not None:
            out.weight = inp.weight


def empty_model(config, dtype: torch.dtype) -> nn.Module:
    """The model of `config` with every parameter on the meta device (buffers stay real)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    retie(model)  # so a tied head shows up as an alias of the embedding
    return model.eval()


def skeleton(folder, dtype: torch.dtype, device) -> nn.Module:
    """The model with meta parameters in the decoder blocks and everything else loaded on `device`."""
    from transformers import AutoConfig

    model = empty_model(AutoConfig.from_pretrained(folder), dtype)
    blocks_path = arch_of(model).blocks
    reader = SafetensorsReader(folder)
    aliases = tied_aliases(model, reader.keys())
    prefix = blocks_path + "."
    src = {n: aliases.get(n, n) for n in model.state_dict(keep_vars=True) if not n.startswith(prefix)}
    got = reader.get_many(set(src.values()), lambda n: dtype, device)
    model.load_state_dict({n: got[s] for n, s in src.items()}, strict=False, assign=True)
    retie(model)
    model._fptq_reader = reader  # the block loader reads the same files
    return model


def trim_host_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim): block after block, freed float
    weights and temporaries otherwise stay in the process as fragmented free heap."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


class BlockLoader:
    """Reads decoder block i's float weights from the checkpoint onto `device` at its turn."""

    def __init__(self, model: nn.Module, dtype, device):
        self.reader = model._fptq_reader
        self.blocks_path, self.dtype, self.device = arch_of(model).blocks, dtype, device

    def load(self, i: int, block: nn.Module) -> None:
        trim_host_memory()  # what the previous block freed
        _fill(block, f"{self.blocks_path}.{i}.", self.reader, self.dtype, self.device)

    @staticmethod
    def unload(block: nn.Module) -> None:
        """Put a float block's parameters back on meta (its memory is freed)."""
        for m in block.modules():
            for n, p in list(m._parameters.items()):
                if p is not None:
                    m._parameters[n] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
        trim_host_memory()


def is_materialized(module: nn.Module) -> bool:
    return not any(t.is_meta for t in module.state_dict().values())


def stream_blocks(blocks: Iterable[nn.Module], device: torch.device, home="cpu") -> List:
    """Evaluate with blocks kept on `home`: each moves to `device` for its forward and back after.
    Returns the hook handles (remove them to stop streaming)."""
    handles = []
    for b in blocks:
        handles.append(b.register_forward_pre_hook(lambda m, a: m.to(device)))
        handles.append(b.register_forward_hook(lambda m, a, o: m.to(home)))
    return handles
