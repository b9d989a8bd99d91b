"""Rotations of a model's hidden spaces, fused into its weights: the machinery QuaRot and SpinQuant
share (`fptq.quant.transforms.quarot`, `.spinquant`).

QuaRot (Ashkboos et al. 2024, arXiv 2404.00456, Sec. 4 and Fig. 4) names four rotations:
- R1 on the residual stream: x -> x Q. RMSNorm commutes with it (||x Q|| = ||x||) once its weight
  is folded into the linears it feeds, so Q is fused offline: the embedding E' = E Q, every linear
  reading a norm W' = W diag(g) Q, every linear writing the residual W' = Q^T W (b' = b Q), the
  head W' = W diag(g_final) Q. A tied head is untied first (E Q and W diag(g) Q differ).
- R2 per attention head, on v_proj's output and o_proj's input (offline): the attention average
  is linear in V per head, so W_v[h]' = Q2^T W_v[h] and W_o[:, h]' = W_o[:, h] Q2. One Q2 per layer,
  shared by every head, so under GQA each kv head and the query heads reading it agree.
- R3 on queries and keys after RoPE (online, in the attention call): q k^T = (q H)(k H)^T, so the
  cached K is rotated before KV quantization (`fptq.quant.kv`).
- R4 on down_proj's input (online, QuantLinear's input-transform slot; `fptq.quant.online`).

Sandwich norms (Gemma-2/3 normalise o_proj's and down_proj's outputs before the residual add):
n(y) * g does not commute with Q, so the writer is left unrotated and Q is applied online to the
norm's output (`RotatedOutput`; a fast Hadamard when Q is one, O(n log n) per token, not
quantized). QuaRot and SpinQuant do not cover these models; this is our departure.
LayerNorm (OPT, BLOOM) subtracts the mean, which a rotation does not preserve; R1 there needs a
SliceGPT-style rewrite that is not implemented, so R1 is refused on them.
"""

import json
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from fptq.models.arch import arch_of
from fptq.quant.hadamard import factor
from fptq.quant.kv import head_dim, use_post_rope_attention
from fptq.quant.online import Hadamard, OnlineOp, Orthogonal, op_from_config, random_orthogonal, random_signs

RMS_KINDS = ("rmsnorm", "gemma_rmsnorm")
# how a rotation of a given size is built: a (randomized) Hadamard, else a Haar-random orthogonal
# matrix if the user allowed it (`fallback`)
CONSTRUCTIONS = ("hadamard", "random", "none")
FALLBACKS = ("none", "random")


class RotationError(NotImplementedError):
    """A rotation this model cannot take (architecture or size); the message says what to do."""


def construction(n: int, kind: str, fallback: str, what: str) -> str:
    """What a rotation of order n gets: 'hadamard m x 2^k', 'random' or 'none'; refuses an order
    with no known Hadamard when no fallback was chosen."""
    if kind == "none":
        return "none"
    if kind == "hadamard":
        f = factor(n)
        if f is not None:
            return f"hadamard {f[0]}x{f[1]}" if f[0] > 1 else f"hadamard 2^{f[1].bit_length() - 1}"
        if fallback != "random":
            raise RotationError(
                f"{what}: no Hadamard matrix of order {n} is known here (n = m * 2^k with m a Sylvester "
                "or Paley order); set the transform's fallback=random for a random orthogonal matrix "
                "of this size, or turn this rotation off"
            )
    return "random"


def make_rotation(n: int, kind: str, fallback: str, seed: int, name: str, randomize: bool = True) -> OnlineOp:
    """The rotation of order n as an op (x -> x Q): a randomized Hadamard (random signs D, QuaRot's
    choice), or a Haar-random orthogonal matrix where no Hadamard is known and fallback=random."""
    if construction(n, kind, fallback, name) == "random":
        return Orthogonal(random_orthogonal(n, seed, name))
    return Hadamard(n, random_signs(n, seed, name) if randomize else None)


# ---- what an architecture allows ---------------------------------------------------------------


def check_arch(arch, config, *, r1: bool, r2: bool, r3: bool, r4: bool, what: str) -> None:
    """Refuse, before any work, a rotation the architecture's mapping cannot carry exactly."""
    name = type(config).__name__
    if r1:
        kinds = {g.kind for g in arch.norm_groups()}
        if not kinds or not kinds <= set(RMS_KINDS):
            raise RotationError(
                f"{what}: R1 (the residual rotation) needs RMSNorm blocks; {name} uses {sorted(kinds)} "
                "(LayerNorm subtracts the mean, which a rotation does not preserve; QuaRot's SliceGPT-style "
                "rewrite is not implemented). Turn R1 off (r1=none) or use a mapped RMSNorm family."
            )
        if not arch.can_fold(config):
            raise RotationError(f"{what}: norms of this {name} configuration cannot be folded")
    if r2 and not (arch.v_proj or arch.qkv_proj):
        raise RotationError(f"{what}: R2 needs v_proj (or qkv_proj) in the ArchSpec of {name}; set r2=none")
    if (r3 or r2) and not hasattr(config, "num_attention_heads"):
        raise RotationError(f"{what}: R2/R3 need num_attention_heads in the config of {name}")
    if r3 and not arch.attention:
        raise RotationError(
            f"{what}: R3 rotates queries and keys inside the attention call, which {name}'s mapping does "
            "not reach (ArchSpec.attention); set r3=false"
        )


def sizes(config) -> Dict[str, int]:
    """The orders each rotation needs: hidden (R1), head_dim (R2, R3), intermediate (R4)."""
    out = {"hidden": config.hidden_size}
    if hasattr(config, "num_attention_heads"):
        out["head_dim"] = head_dim(config)
    inter = getattr(config, "intermediate_size", None) or getattr(config, "ffn_dim", None)
    if inter:
        out["intermediate"] = inter
    return out


# ---- channels a norm erases ---------------------------------------------------------------------

ERASED_TAU = 1e-3  # a gain at most this fraction of the norm's median |gain| erases its channel


def erased_channels(model: nn.Module, arch, tau: float = ERASED_TAU) -> List[int]:
    """Residual channels that some norm feeding linears (or the final norm) multiplies by ~0.

    A model can park massive activations in such channels and rely on the zero gain to cancel them
    before a linear reads them (Gemma-3-270m: pre_feedforward_layernorm's gain is exactly 0 on the
    channels where its residual reaches 8.8e4 on the BOS token, 6e3 on others). Folded into the
    weights, that zero is a zero column, which round-to-nearest keeps; after a rotation it is a
    direction of a dense matrix, and any weight error leaks the massive activation back. Kept out
    of R1, the channels stay erased exactly. Measured on Gemma-3-270m (WikiText-2, 2 windows of
    512 after BOS; fp 44): R1 + W8 RTN 274, with these 3 channels kept 58; R1 + W4 RTN diverges
    either way (another leak, open). SmolLM2-135M has 2 such channels (247, 507).
    Data-free: read from the norms' gains."""
    kind = arch.norm_groups()[0].kind
    norms = [model.get_submodule(arch.final_norm)]
    for block in model.get_submodule(arch.blocks):
        norms += [block.get_submodule(g.source) for g in arch.norm_groups()]
    out = set()
    for norm in norms:
        g = norm_gain(norm, kind).abs()
        out |= set(torch.nonzero(g <= tau * g.median().clamp(min=1e-12)).flatten().tolist())
    return sorted(out)


def partial_rotation(n: int, keep: List[int], kind: str, fallback: str, seed: int, name: str):
    """An (n, n) orthogonal op that leaves the channels `keep` alone and rotates the others: a
    randomized Hadamard of their count if one is known, else a Haar-random orthogonal matrix (the
    count is the model's, not the user's choice). Returns (op, construction)."""
    rest = [c for c in range(n) if c not in set(keep)]
    m = len(rest)
    what = construction(m, kind, "random", name)
    R = make_rotation(m, kind, "random", seed, name).matrix()
    Q = torch.eye(n, dtype=torch.float64)
    idx = torch.tensor(rest)
    Q[idx.unsqueeze(1), idx.unsqueeze(0)] = R
    return Orthogonal(Q), f"{what} on {m} + {len(keep)} erased channels kept"


# ---- norm fusion and untying -------------------------------------------------------------------


def norm_gain(norm: nn.Module, kind: str) -> torch.Tensor:
    """The elementwise gain a norm applies after normalising (float64): w, or 1 + w (Gemma)."""
    w = norm.weight.detach().double()
    return 1.0 + w if kind == "gemma_rmsnorm" else w


def reset_norm(norm: nn.Module, kind: str) -> None:
    """Make the norm's gain 1 (w = 1; Gemma's (1 + w): w = 0)."""
    with torch.no_grad():
        norm.weight.fill_(0.0 if kind == "gemma_rmsnorm" else 1.0)


def _scale_inputs(lin: nn.Linear, g: torch.Tensor) -> None:
    with torch.no_grad():
        lin.weight.copy_((lin.weight.double() * g.to(lin.weight.device)).to(lin.weight.dtype))


def untie(model: nn.Module) -> int:
    """Give a tied head its own weight (a copy of the embedding); the bytes it adds (0 if untied)."""
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None or inp is None or out.weight is not inp.weight:
        return 0
    out.weight = nn.Parameter(inp.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    text = getattr(model.config, "text_config", None)
    if text is not None:
        text.tie_word_embeddings = False
    return out.weight.numel() * out.weight.element_size()


def fuse_norms(model: nn.Module, arch) -> None:
    """Fold every norm that feeds linears into them (W' = W diag(g)) and the final norm into the head,
    leaving each such norm a pure normalisation (gain 1). Call `untie` first if the head is tied."""
    blocks = model.get_submodule(arch.blocks)
    for block in blocks:
        for grp in arch.norm_groups():
            norm = block.get_submodule(grp.source)
            g = norm_gain(norm, grp.kind)
            for ln in grp.linears:
                _scale_inputs(block.get_submodule(ln), g)
            reset_norm(norm, grp.kind)
    kind = arch.norm_groups()[0].kind
    final = model.get_submodule(arch.final_norm)
    head = model.get_submodule(arch.head)
    if head.weight is model.get_submodule(arch.embed).weight:
        raise ValueError("fuse_norms: the head is tied to the embedding; untie(model) first")
    _scale_inputs(head, norm_gain(final, kind))
    reset_norm(final, kind)


# ---- the offline fusions -----------------------------------------------------------------------


def _in_side(lin: nn.Module, Q: torch.Tensor) -> None:
    """W' = W Q: the linear now reads x Q."""
    with torch.no_grad():
        lin.weight.copy_((lin.weight.double() @ Q.to(lin.weight.device)).to(lin.weight.dtype))


def _out_side(lin: nn.Linear, Q: torch.Tensor) -> None:
    """W' = Q^T W, b' = b Q: the linear now writes y Q."""
    Q = Q.to(lin.weight.device)
    with torch.no_grad():
        lin.weight.copy_((Q.T @ lin.weight.double()).to(lin.weight.dtype))
        if lin.bias is not None:
            lin.bias.copy_((lin.bias.double() @ Q).to(lin.bias.dtype))


class RotatedOutput(nn.Module):
    """A module whose output is rotated online: y -> op(module(y)). Wraps a sandwich post-norm whose
    output joins the rotated residual stream (see the module docstring)."""

    def __init__(self, inner: nn.Module, op: OnlineOp):
        super().__init__()
        self.inner, self.op = inner, op

    def forward(self, x, *args, **kwargs):
        return self.op(self.inner(x, *args, **kwargs))


def rotate_residual(model: nn.Module, arch, op: OnlineOp) -> List[str]:
    """R1: fuse Q (= op.matrix()) into the embedding, every norm-fed linear, every residual writer and
    the head. Norms must be fused first. Returns the full names of post-norms rotated online."""
    Q = op.matrix()
    emb = model.get_submodule(arch.embed)
    with torch.no_grad():
        emb.weight.copy_((emb.weight.double() @ Q.to(emb.weight.device)).to(emb.weight.dtype))
    post = dict(arch.post_norms)
    online: List[str] = []
    blocks = model.get_submodule(arch.blocks)
    for bi, block in enumerate(blocks):
        for grp in arch.norm_groups():
            for ln in grp.linears:
                _in_side(block.get_submodule(ln), Q)
        for writer in (arch.o_proj, arch.down_proj):
            if writer in post:
                block.set_submodule(post[writer], RotatedOutput(block.get_submodule(post[writer]), op))
                online.append(f"{arch.blocks}.{bi}.{post[writer]}")
            else:
                _out_side(block.get_submodule(writer), Q)
    _in_side(model.get_submodule(arch.head), Q)
    return online


def rotate_heads(block: nn.Module, arch, config, Q2: torch.Tensor) -> None:
    """R2: v_proj's output and o_proj's input rotated per head by Q2 (head_dim, head_dim)."""
    hd = head_dim(config)
    nh = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or nh
    if arch.qkv_proj:
        lin, start = block.get_submodule(arch.qkv_proj), (nh + kv) * hd
    else:
        lin, start = block.get_submodule(arch.v_proj), 0
    Q2 = Q2.to(lin.weight.device)
    with torch.no_grad():
        Wv = lin.weight[start : start + kv * hd].double().reshape(kv, hd, -1)
        lin.weight[start : start + kv * hd] = torch.einsum("ji,hjk->hik", Q2, Wv).reshape(kv * hd, -1)
        if lin.bias is not None:
            bv = lin.bias[start : start + kv * hd].double().reshape(kv, hd)
            lin.bias[start : start + kv * hd] = (bv @ Q2).reshape(-1)
        o = block.get_submodule(arch.o_proj)
        Wo = o.weight.double().reshape(o.weight.shape[0], nh, hd)
        o.weight.copy_((Wo @ Q2).reshape(o.weight.shape).to(o.weight.dtype))


def enable_qk_rotation(model: nn.Module, arch, op: OnlineOp) -> None:
    """R3: queries and keys rotated (a Hadamard of head_dim) after RoPE, in the attention call and
    before KV quantization (`fptq.quant.kv`). One op object shared by every layer."""
    use_post_rope_attention(model)
    for block in model.get_submodule(arch.blocks):
        block.get_submodule(arch.attention).fptq_qk_rotation = op


# ---- what a checkpoint records and reloads -----------------------------------------------------


@dataclass
class ModelRotations:
    """The structural (non-weight) part of a rotated model: online output rotations and R3."""

    outputs: Dict[str, Dict]  # module name -> op config (RotatedOutput wrappers)
    qk_rotation: Optional[Dict]  # the R3 op's config, None if none

    @classmethod
    def of(cls, model: nn.Module) -> "ModelRotations":
        outputs = {n: m.op.to_config() for n, m in model.named_modules() if isinstance(m, RotatedOutput)}
        qk = next((m.fptq_qk_rotation for m in model.modules() if hasattr(m, "fptq_qk_rotation")), None)
        return cls(outputs, None if qk is None else {**qk.to_config(), "n": head_dim(model.config)})

    @property
    def empty(self) -> bool:
        return not self.outputs and not self.qk_rotation

    def to_config(self) -> Dict:
        return {"outputs": self.outputs, "qk_rotation": self.qk_rotation}

    @staticmethod
    def restore(model: nn.Module, cfg: Optional[Dict], device=None) -> None:
        """Rebuild the wrappers (with empty buffers, filled by load_state_dict) and R3 on a skeleton."""
        if not cfg:
            return
        shared: Dict[str, OnlineOp] = {}  # one R1 op for every wrapper, as when it was saved
        for name, op_cfg in (cfg.get("outputs") or {}).items():
            key = json.dumps(op_cfg, sort_keys=True)
            if key not in shared:
                shared[key] = op_from_config(op_cfg, op_cfg.get("n") or model.config.hidden_size, device)
            model.set_submodule(name, RotatedOutput(model.get_submodule(name), shared[key]))
        qk = cfg.get("qk_rotation")
        if qk:
            enable_qk_rotation(model, arch_of(model), op_from_config(qk, qk["n"], device))
