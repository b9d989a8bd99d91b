"""Architecture differences as data: where the decoder blocks are, and which norm (or linear)
feeds which linears, so equalization scales can be folded exactly (LAE, SmoothQuant, AWQ).

Keyed by the HF model class name (llm-compressor's MAPPINGS_REGISTRY idea). Names are relative
to one decoder block.
"""

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch.nn as nn

NORM_KINDS = ("rmsnorm", "layernorm", "gemma_rmsnorm")
LINEAR_KINDS = ("linear", "attention")


@dataclass(frozen=True)
class FoldGroup:
    """`source` (a norm, or a linear) feeds every module in `linears` with the same input X.

    A per-input-channel scale s is folded as X' = X / s (into `source`) and W' = W * s (linears).
    kind: rmsnorm / layernorm (y = n(x) * w (+ b)), gemma_rmsnorm (y = n(x) * (1 + w)), linear
    (the source's output rows), attention (v_proj's rows -> o_proj through the attention average,
    one scale per kv-head channel; see fptq.quant.transforms.fold).
    """

    source: str
    linears: Tuple[str, ...]
    kind: str
    # a linear source whose output is `of` equal chunks, the consumers reading chunk `index`
    # (Phi-3's gate_up_proj: down_proj reads act(gate) * up, the second half); (0, 1) = all rows
    part: Tuple[int, int] = (0, 1)

    @property
    def norm_fed(self) -> bool:
        return self.kind in NORM_KINDS


@dataclass(frozen=True)
class ArchSpec:
    blocks: str  # attribute path of the ModuleList of decoder blocks
    # norm-fed groups first, then linear-fed ones (AWQ; LAE with act.lae_linear)
    groups: Tuple[FoldGroup, ...]
    # attention projections whose outputs are the KV cache (for KV fake quant); head_dim from config
    k_proj: str = ""
    v_proj: str = ""
    # or one fused projection whose output is [q | k | v] (Phi-3's qkv_proj)
    qkv_proj: str = ""
    # the attention module (post-RoPE KV quantization sits in its attention call)
    attention: str = "self_attn"
    # (config attribute, required value) for norm folding to be exact, e.g. pre-norm OPT only
    fold_requires: Tuple[Tuple[str, object], ...] = ()
    # the norm between the last block and the head (block-by-block evaluation runs it, then the head)
    final_norm: str = "model.norm"
    # a block's linears in forward order, as groups that read the same input tensor (true-sequential
    # calibration re-collects each group's statistics with the groups before it quantized)
    sequential: Tuple[Tuple[str, ...], ...] = ()
    # the residual stream, for rotations of it (QuaRot's R1): the token embedding and the head
    # (full names), the block's linears that write to it (their outputs are added to the residual),
    # and, for sandwich-norm blocks (Gemma-2/3), the norm between each writer and the residual add
    embed: str = "model.embed_tokens"
    head: str = "lm_head"
    o_proj: str = "self_attn.o_proj"
    down_proj: str = "mlp.down_proj"
    post_norms: Tuple[Tuple[str, str], ...] = ()  # (writer linear, the norm applied to its output)
    # queries' projection (SmoothAttention scales its rows), and per-head q/k norms applied before
    # RoPE where the family has them (Qwen3, Gemma-3): (q_norm, k_norm), their gains shared by heads
    q_proj: str = "self_attn.q_proj"
    qk_norms: Tuple[str, ...] = ()
    rope: bool = True  # keys are rotated by RoPE (SmoothAttention keeps its scale per rotary pair)

    def can_fold(self, config) -> bool:
        return all(getattr(config, k, v) == v for k, v in self.fold_requires)

    def norm_groups(self) -> Tuple[FoldGroup, ...]:
        return tuple(g for g in self.groups if g.norm_fed)

    def sequential_subsets(self, linears) -> List[List[str]]:
        """The block's linear names split into `sequential` order; any name the mapping does not
        list goes last."""
        names = list(linears)
        out = [[n for n in group if n in linears] for group in self.sequential]
        listed = {n for group in out for n in group}
        rest = [n for n in names if n not in listed]
        return [g for g in out + [rest] if g]

    def group_of(self, linear: str, linear_fed: bool = False):
        """The norm-fed group feeding `linear` (block-relative name), else (if linear_fed) the
        linear-fed one, or None."""
        for g in self.groups:
            if linear in g.linears and (g.norm_fed or linear_fed):
                return g
        return None


_ATTN_MLP = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)


def _llama_like(norm_kind: str, qk_norms: Tuple[str, ...] = ()) -> ArchSpec:
    return ArchSpec(
        qk_norms=qk_norms,
        blocks="model.layers",
        groups=(
            FoldGroup(
                "input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), norm_kind
            ),
            FoldGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), norm_kind),
            FoldGroup("mlp.up_proj", ("mlp.down_proj",), "linear"),
            FoldGroup("self_attn.v_proj", ("self_attn.o_proj",), "attention"),
        ),
        k_proj="self_attn.k_proj",
        v_proj="self_attn.v_proj",
        sequential=_ATTN_MLP,
    )


def _gemma2_like(qk_norms: Tuple[str, ...] = ()) -> ArchSpec:
    """Gemma-2/3: four norms with (1 + w) weights; pre_feedforward_layernorm feeds gate/up, while
    post_attention_layernorm and post_feedforward_layernorm normalise block outputs (no linear).
    Attention and final-logit soft-capping are left as they are."""
    return ArchSpec(
        qk_norms=qk_norms,
        blocks="model.layers",
        groups=(
            FoldGroup(
                "input_layernorm",
                ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                "gemma_rmsnorm",
            ),
            FoldGroup("pre_feedforward_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "gemma_rmsnorm"),
            FoldGroup("mlp.up_proj", ("mlp.down_proj",), "linear"),
            FoldGroup("self_attn.v_proj", ("self_attn.o_proj",), "attention"),
        ),
        k_proj="self_attn.k_proj",
        v_proj="self_attn.v_proj",
        sequential=_ATTN_MLP,
        post_norms=(
            ("self_attn.o_proj", "post_attention_layernorm"),
            ("mlp.down_proj", "post_feedforward_layernorm"),
        ),
    )


_PHI3 = ArchSpec(
    blocks="model.layers",
    groups=(
        FoldGroup("input_layernorm", ("self_attn.qkv_proj",), "rmsnorm"),
        FoldGroup("post_attention_layernorm", ("mlp.gate_up_proj",), "rmsnorm"),
        FoldGroup("mlp.gate_up_proj", ("mlp.down_proj",), "linear", part=(1, 2)),
    ),
    qkv_proj="self_attn.qkv_proj",
    sequential=(("self_attn.qkv_proj",), ("self_attn.o_proj",), ("mlp.gate_up_proj",), ("mlp.down_proj",)),
)

_OPT = ArchSpec(
    blocks="model.decoder.layers",
    groups=(
        FoldGroup(
            "self_attn_layer_norm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "layernorm"
        ),
        FoldGroup("final_layer_norm", ("fc1",), "layernorm"),
    ),
    k_proj="self_attn.k_proj",
    v_proj="self_attn.v_proj",
    fold_requires=(("do_layer_norm_before", True),),
    final_norm="model.decoder.final_layer_norm",
    embed="model.decoder.embed_tokens",
    rope=False,
    o_proj="self_attn.out_proj",
    down_proj="fc2",
    sequential=(
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        ("self_attn.out_proj",),
        ("fc1",),
        ("fc2",),
    ),
)

_BLOOM = ArchSpec(
    blocks="transformer.h",
    attention="",  # BLOOM's attention (ALiBi) does not go through transformers' attention interface
    groups=(
        FoldGroup("input_layernorm", ("self_attention.query_key_value",), "layernorm"),
        FoldGroup("post_attention_layernorm", ("mlp.dense_h_to_4h",), "layernorm"),
    ),
    fold_requires=(("apply_residual_connection_post_layernorm", False),),
    final_norm="transformer.ln_f",
    embed="transformer.word_embeddings",
    rope=False,
    q_proj="",
    o_proj="self_attention.dense",
    down_proj="mlp.dense_4h_to_h",
    sequential=(
        ("self_attention.query_key_value",),
        ("self_attention.dense",),
        ("mlp.dense_h_to_4h",),
        ("mlp.dense_4h_to_h",),
    ),
)

ARCHS: Dict[str, ArchSpec] = {
    "LlamaForCausalLM": _llama_like("rmsnorm"),
    "MistralForCausalLM": _llama_like("rmsnorm"),
    "Qwen2ForCausalLM": _llama_like("rmsnorm"),
    "Qwen3ForCausalLM": _llama_like("rmsnorm", ("self_attn.q_norm", "self_attn.k_norm")),
    "GemmaForCausalLM": _llama_like("gemma_rmsnorm"),
    "Gemma2ForCausalLM": _gemma2_like(),
    "Gemma3ForCausalLM": _gemma2_like(("self_attn.q_norm", "self_attn.k_norm")),
    "Phi3ForCausalLM": _PHI3,
    "OPTForCausalLM": _OPT,
    "BloomForCausalLM": _BLOOM,
}


def arch_of(model: nn.Module) -> ArchSpec:
    name = type(model).__name__
    if name not in ARCHS:
        raise NotImplementedError(
            f"no architecture mapping for {name}; known: {sorted(ARCHS)}. Add an ArchSpec to "
            "fptq.models.arch.ARCHS (blocks path and norm -> linears groups)."
        )
    return ARCHS[name]
