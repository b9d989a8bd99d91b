"""`smooth_attention`: QServe's SmoothAttention (Lin et al. 2024, QoQ, arXiv 2405.04532, Sec. 4.3).

Keys have outlier channels that a 4-bit per-head KV quantizer cannot hold; queries do not. A
per-channel scale lambda moves them: K' = K / lambda, Q' = Q * lambda, so Q K^T is unchanged and
K' is flatter. lambda_j = max|K_j|^alpha (alpha = 0.5, QServe's), from calibration rows.

RoPE rotates channel pairs (j, j + d/2) of each head (transformers' rotate_half): a scale that is
equal on both channels of a pair commutes with the rotation, so lambda is folded before RoPE, into
k_proj's rows (1 / lambda) and q_proj's rows (lambda) - or, where the family normalises q and k per
head before RoPE (Qwen3, Gemma-3: q_norm, k_norm), into those norms' gains. The pair's statistic is
max over tokens of sqrt(k_j^2 + k_{j+d/2}^2), the largest value either channel can take after any
rotation. Under GQA lambda is per kv head, shared by the query heads that read it; the q/k norms'
gains are shared by every head, so there lambda is one per channel (the max over kv heads).
"""

from dataclasses import dataclass
from typing import Any, Dict

import torch

from fptq.quant.kv import head_dim
from fptq.quant.methods import TRANSFORMS, Needs, Transform, check
from fptq.quant.rotation import RotationError, norm_gain


@dataclass(frozen=True)
class SmoothAttentionSettings:
    alpha: float = 0.5  # lambda = max|K|^alpha (QServe's 0.5)
    samples: int = 8  # calibration rows read for the key statistics

    def __post_init__(self):
        check(0 < self.alpha <= 1, f"smooth_attention.alpha must be in (0, 1], got {self.alpha}")
        check(self.samples >= 1, f"smooth_attention.samples must be >= 1, got {self.samples}")


def check_arch(arch, config, what: str = "smooth_attention") -> None:
    name = type(config).__name__
    if not arch.rope or not (arch.q_proj and arch.k_proj) and not arch.qkv_proj:
        raise RotationError(
            f"{what}: {name}'s mapping names no rotary q/k projections (ArchSpec.q_proj, k_proj or "
            "qkv_proj, rope); SmoothAttention is mapped for RoPE families (LLaMA, Mistral, Qwen2/3, "
            "Gemma, Gemma-2/3, Phi-3)"
        )
    if getattr(config, "partial_rotary_factor", 1.0) not in (None, 1.0):
        raise RotationError(f"{what}: partial rotary embeddings ({name}) are not supported")


def pair_lambda(kmax_pair: torch.Tensor, alpha: float) -> torch.Tensor:
    """(..., d/2) pair statistics -> (..., d) lambda, equal on both channels of each rotary pair."""
    lam = kmax_pair.clamp(min=1e-5).pow(alpha)
    return torch.cat([lam, lam], -1)


@torch.no_grad()
def key_pair_max(model, arch, ids: torch.Tensor) -> list:
    """Per layer, the (kv_heads, d/2) max over calibration tokens of the pair norms of the keys as
    they enter RoPE (after k_norm where the family has one)."""
    cfg = model.config
    hd = head_dim(cfg)
    nh = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or nh
    blocks = model.get_submodule(arch.blocks)
    out = [torch.zeros(kv, hd // 2) for _ in blocks]
    hooks = []
    for i, block in enumerate(blocks):
        if arch.qk_norms:
            mod, take = block.get_submodule(arch.qk_norms[1]), lambda y: y
        elif arch.qkv_proj:
            mod = block.get_submodule(arch.qkv_proj)
            take = lambda y: y[..., nh * hd : (nh + kv) * hd]  # noqa: E731
        else:
            mod, take = block.get_submodule(arch.k_proj), lambda y: y

        def hook(m, a, y, i=i, take=take):
            k = take(y).float().reshape(-1, kv, hd)
            pair = (k[..., : hd // 2] ** 2 + k[..., hd // 2 :] ** 2).sqrt().amax(0)
            out[i] = torch.maximum(out[i], pair.cpu())

        hooks.append(mod.register_forward_hook(hook))
    try:
        for row in ids:
            model(row.unsqueeze(0).to(next(model.parameters()).device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return out


@torch.no_grad()
def fold(block, arch, config, lam: torch.Tensor) -> None:
    """Fold lambda ((kv_heads, d), or (d,) with q/k norms) into the block: K / lambda, Q * lambda."""
    hd = head_dim(config)
    nh = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or nh
    if arch.qk_norms:
        kind = arch.norm_groups()[0].kind
        for name, f in ((arch.qk_norms[0], lam), (arch.qk_norms[1], 1.0 / lam)):
            norm = block.get_submodule(name)
            g = norm_gain(norm, kind) * f.double().to(norm.weight.device)
            norm.weight.copy_((g - 1.0 if kind == "gemma_rmsnorm" else g).to(norm.weight.dtype))
        return
    q_rows = lam.repeat_interleave(nh // kv, dim=0).reshape(-1)  # query head h reads kv head h // (nh/kv)
    k_rows = 1.0 / lam.reshape(-1)
    if arch.qkv_proj:
        lin = block.get_submodule(arch.qkv_proj)
        parts = [(lin, 0, q_rows), (lin, nh * hd, k_rows)]
    else:
        parts = [(block.get_submodule(arch.q_proj), 0, q_rows), (block.get_submodule(arch.k_proj), 0, k_rows)]
    for lin, start, f in parts:
        f = f.double().to(lin.weight.device)
        rows = slice(start, start + f.numel())
        lin.weight[rows] = (lin.weight[rows].double() * f[:, None]).to(lin.weight.dtype)
        if lin.bias is not None:
            lin.bias[rows] = (lin.bias[rows].double() * f).to(lin.bias.dtype)


@TRANSFORMS.register
class SmoothAttention(Transform):
    name = "smooth_attention"
    kind = "model"
    Settings = SmoothAttentionSettings

    def needs(self, settings: SmoothAttentionSettings) -> Needs:
        return Needs(whole_model=True, ranges=True)

    def check_model(self, config, arch, settings: SmoothAttentionSettings) -> None:
        check_arch(arch, config, self.name)

    def apply_model(self, model, arch, settings: SmoothAttentionSettings, ctx) -> Dict[str, Any]:
        check_arch(arch, model.config, self.name)
        if ctx.calib_ids is None:
            raise ValueError("smooth_attention reads key statistics; it needs calibration ids")
        stats = key_pair_max(model, arch, ctx.calib_ids[: settings.samples])
        lams = []
        for block, m in zip(model.get_submodule(arch.blocks), stats, strict=True):
            lam = pair_lambda(m.amax(0) if arch.qk_norms else m, settings.alpha)
            fold(block, arch, model.config, lam)
            lams.append(lam)
        flat = torch.cat([x.reshape(-1) for x in lams])
        return {"lambda_max": flat.max().item(), "lambda_median": flat.median().item()}
