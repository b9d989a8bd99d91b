"""KV-cache fake quantization: symmetric int4/int8, one scale per (token, head).

Applied to the outputs of the key and value projections (the cache's contents; K before RoPE,
which rotates pairs of channels within a head and keeps the per-head range close).
"""

import torch
import torch.nn as nn

from fptq.primitives import fake_quant_act_per_token


def head_dim(config) -> int:
    hd = getattr(config, "head_dim", None)
    return hd if hd else config.hidden_size // config.num_attention_heads


def fake_quant_heads(y: torch.Tensor, dim: int, bits: int) -> torch.Tensor:
    shape = y.shape
    return fake_quant_act_per_token(y.reshape(*shape[:-1], shape[-1] // dim, dim), bits).reshape(shape)


def _fused_kv_hook(config, dim: int, bits: int):
    """[q | k | v] from one projection: quantize the k and v parts per head."""
    q = config.num_attention_heads * dim
    kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    k = kv * dim

    def hook(module, args, out):
        qs, ks, vs = out.split([q, k, k], dim=-1)
        return torch.cat([qs, fake_quant_heads(ks, dim, bits), fake_quant_heads(vs, dim, bits)], -1)

    return hook


def add_kv_quant(block: nn.Module, arch, config, bits: int) -> None:
    if not (arch.k_proj and arch.v_proj) and not arch.qkv_proj:
        raise NotImplementedError(
            f"KV quantization needs k_proj/v_proj (or qkv_proj) names in the ArchSpec of {type(block).__name__}"
        )
    dim = head_dim(config)
    block.fptq_kv_bits = bits  # what a saved checkpoint or an export reads back
    if arch.qkv_proj:
        block.get_submodule(arch.qkv_proj).register_forward_hook(_fused_kv_hook(config, dim, bits))
        return
    for name in (arch.k_proj, arch.v_proj):
        block.get_submodule(name).register_forward_hook(lambda m, a, out: fake_quant_heads(out, dim, bits))
