"""KV-cache fake quantization: symmetric int4/int8, one scale per (token, head).

Two positions:
- `pre_rope`: the outputs of the key and value projections (hooks on k_proj/v_proj, or on the
  k and v parts of a fused qkv_proj). K before RoPE, which rotates pairs of channels within a
  head and keeps the per-head range close.
- `post_rope`: what a serving engine stores (after QuaRot's R3 Hadamard on queries and keys, if any) in its cache: K after RoPE (and after Gemma-3's
  k_norm), V as projected, quantized inside the attention call. fptq registers an attention
  implementation `fptq_kv_<base>` that quantizes key and value (batch, kv_heads, seq, head_dim)
  per (token, head) and then calls the model's own implementation (`<base>`: its eager function,
  or sdpa/...), with the base's mask function; each attention module carries its bit width.
"""

import sys

import torch
import torch.nn as nn

from fptq.quant.primitives import fake_quant_act_per_token

KV_POSITIONS = ("pre_rope", "post_rope")
POST_ROPE_PREFIX = "fptq_kv_"


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


# ---- post-RoPE: an attention implementation that quantizes what the cache would hold -------------


def _base_attention(module: nn.Module, base: str):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if base == "eager":  # each model's own eager function (Gemma-2's soft-capping lives there)
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[base]


def _post_rope_attention(base: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        rot = getattr(module, "fptq_qk_rotation", None)
        if (
            rot is not None
        ):  # QuaRot's R3 (fptq.quant.rotation): q k^T unchanged, K rotated before its quantizer
            query, key = rot(query), rot(key)
        bits = getattr(module, "fptq_kv_bits", 0)
        if bits:  # (batch, kv_heads, seq, head_dim): one scale per (token, head)
            key = fake_quant_act_per_token(key, bits).to(key.dtype)
            value = fake_quant_act_per_token(value, bits).to(value.dtype)
        return _base_attention(module, base)(module, query, key, value, attention_mask, **kwargs)

    return attention


def use_post_rope_attention(model: nn.Module) -> None:
    """Switch the model to `fptq_kv_<its attention implementation>` (registered once per base)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    base = model.config._attn_implementation or "eager"
    if base.startswith(POST_ROPE_PREFIX):
        return
    name = POST_ROPE_PREFIX + base
    AttentionInterface.register(name, _post_rope_attention(base))
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    model.config._attn_implementation = name


def add_kv_quant(block: nn.Module, arch, config, bits: int, position: str = "pre_rope") -> None:
    """Fake-quantize block's KV at `position`; post_rope also needs `use_post_rope_attention(model)`."""
    if position not in KV_POSITIONS:
        raise ValueError(f"kv.position must be one of {KV_POSITIONS}, got {position!r}")
    block.fptq_kv_bits = bits  # what a saved checkpoint or an export reads back
    block.fptq_kv_position = position
    if position == "post_rope":
        if not arch.attention:
            raise NotImplementedError(
                f"post-RoPE KV quantization needs the attention module's name in {arch}"
            )
        block.get_submodule(arch.attention).fptq_kv_bits = bits
        return
    if not (arch.k_proj and arch.v_proj) and not arch.qkv_proj:
        raise NotImplementedError(
            f"KV quantization needs k_proj/v_proj (or qkv_proj) names in the ArchSpec of {type(block).__name__}"
        )
    dim = head_dim(config)
    if arch.qkv_proj:
        block.get_submodule(arch.qkv_proj).register_forward_hook(_fused_kv_hook(config, dim, bits))
        return
    for name in (arch.k_proj, arch.v_proj):
        block.get_submodule(name).register_forward_hook(lambda m, a, out: fake_quant_heads(out, dim, bits))
