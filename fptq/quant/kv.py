"""KV-cache fake quantization: symmetric int4/int8, one scale per (token, head).

Two positions:
- `pre_rope`: the outputs of the key and value projections (hooks on k_proj/v_proj, or on the
  k and v parts of a fused qkv_proj). K before RoPE, which rotates pairs of channels within a
  head and keeps the per-head range close.
- `post_rope`: what a serving engine stores (after QuaRot's R3 Hadamard on queries and keys, if any) in its cache: K after RoPE (and after Gemma-3's
  k_norm), V as projected, quantized inside the attention call. fptq registers an attention
  implementation `fptq_kv_<base>` that quantizes key and value (batch, kv_heads, seq, head_dim)
  per (token, head) and then calls the model's own implementation (`<base>`: its eager function,
  or sdpa/...), with the base's mask function; each attention module carries its `KVQuant`.

Symmetric (absmax) or asymmetric (min/max, QServe's KV4: per head, dynamic, asymmetric, after
RoPE). Prompt-KV precision (BiSup, arXiv 2405.15346, its post-training half): the first
`keep_first` positions of every sequence (a shared system prompt, the attention-sink tokens) are
kept at `keep_bits` (16: float), the rest at `bits`.
"""

import sys
from dataclasses import dataclass

import torch
import torch.nn as nn

from fptq.quant.primitives import fake_quant_act_per_token, fake_quant_act_per_token_asym

KV_POSITIONS = ("pre_rope", "post_rope")
POST_ROPE_PREFIX = "fptq_kv_"


def head_dim(config) -> int:
    hd = getattr(config, "head_dim", None)
    return hd if hd else config.hidden_size // config.num_attention_heads


@dataclass(frozen=True)
class KVQuant:
    """How one attention layer's cache is fake-quantized (what `QuantScheme.kv` resolves to)."""

    bits: int
    position: str = "pre_rope"
    symmetric: bool = True
    keep_first: int = 0  # leading positions kept at keep_bits
    keep_bits: int = 16  # 16: float

    def quantize(self, x: torch.Tensor, seq_dim: int) -> torch.Tensor:
        """x with the last dim one head's channels: one scale (and zero) per (token, head); the
        first `keep_first` positions along seq_dim at keep_bits."""
        n = min(self.keep_first, x.shape[seq_dim])
        if n == 0:
            return self._q(x, self.bits)
        head, rest = x.split([n, x.shape[seq_dim] - n], dim=seq_dim)
        head = head if self.keep_bits >= 16 else self._q(head, self.keep_bits)
        return torch.cat([head, self._q(rest, self.bits)], dim=seq_dim)

    def _q(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        fq = fake_quant_act_per_token if self.symmetric else fake_quant_act_per_token_asym
        return fq(x, bits).to(x.dtype)

    def to_config(self) -> dict:
        return dict(self.__dict__)


def fake_quant_heads(y: torch.Tensor, dim: int, kvq: KVQuant) -> torch.Tensor:
    """(batch, seq, heads * dim) -> per (token, head) fake quantization."""
    shape = y.shape
    return kvq.quantize(y.reshape(*shape[:-1], shape[-1] // dim, dim), seq_dim=-3).reshape(shape)


def _fused_kv_hook(config, dim: int, kvq: KVQuant):
    """[q | k | v] from one projection: quantize the k and v parts per head."""
    q = config.num_attention_heads * dim
    kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    k = kv * dim

    def hook(module, args, out):
        qs, ks, vs = out.split([q, k, k], dim=-1)
        return torch.cat([qs, fake_quant_heads(ks, dim, kvq), fake_quant_heads(vs, dim, kvq)], -1)

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
        kvq = getattr(module, "fptq_kv", None)
        if kvq is not None:  # (batch, kv_heads, seq, head_dim): one scale per (token, head)
            key, value = kvq.quantize(key, seq_dim=-2), kvq.quantize(value, seq_dim=-2)
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


def add_kv_quant(block: nn.Module, arch, config, kvq: KVQuant) -> None:
    """Fake-quantize block's KV as `kvq` says; post_rope also needs `use_post_rope_attention(model)`."""
    if kvq.position not in KV_POSITIONS:
        raise ValueError(f"kv.position must be one of {KV_POSITIONS}, got {kvq.position!r}")
    block.fptq_kv_bits = kvq.bits  # what a saved checkpoint or an export reads back
    block.fptq_kv_position = kvq.position
    block.fptq_kv = kvq
    if kvq.position == "post_rope":
        if not arch.attention:
            raise NotImplementedError(
                f"post-RoPE KV quantization needs the attention module's name in {arch}"
            )
        block.get_submodule(arch.attention).fptq_kv = kvq
        return
    if not (arch.k_proj and arch.v_proj) and not arch.qkv_proj:
        raise NotImplementedError(
            f"KV quantization needs k_proj/v_proj (or qkv_proj) names in the ArchSpec of {type(block).__name__}"
        )
    dim = head_dim(config)
    if arch.qkv_proj:
        block.get_submodule(arch.qkv_proj).register_forward_hook(_fused_kv_hook(config, dim, kvq))
        return
    for name in (arch.k_proj, arch.v_proj):
        block.get_submodule(name).register_forward_hook(lambda m, a, out: fake_quant_heads(out, dim, kvq))
