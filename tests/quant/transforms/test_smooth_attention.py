"""SmoothAttention (QServe) leaves fp32 logits unchanged on every RoPE family, flattens the keys,
and is refused where the mapping cannot carry it."""

import pytest
import torch

from conftest import tiny_model
from fptq.quant.pipeline import quantize_model
from fptq.quant.rotation import RotationError
from fptq.quant.scheme import KVSpec, QuantScheme
from fptq.quant.transforms.smooth_attention import pair_lambda

IDS = torch.randint(0, 258, (4, 24), generator=torch.Generator().manual_seed(1))


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits.double()


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _outlier_keys(model):
    """A few large key channels (both of a rotary pair), as real models have."""
    with torch.no_grad():
        for layer in model.model.layers:
            attn = layer.self_attn
            if hasattr(attn, "k_proj"):
                attn.k_proj.weight[[1, 1 + 8]] *= 20
            else:  # Phi-3's fused qkv: the k rows start after the q heads
                start = model.config.num_attention_heads * (
                    model.config.hidden_size // model.config.num_attention_heads
                )
                attn.qkv_proj.weight[[start + 1, start + 1 + 8]] *= 20


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma", "gemma2", "gemma3", "phi3"])
def test_fp32_logits_unchanged(kind):
    model = tiny_model(kind, seed=3)
    _outlier_keys(model)
    ref = _logits(model)
    report = quantize_model(model, QuantScheme("sa", transforms=("smooth_attention",)), IDS, progress=False)
    assert report.transforms["smooth_attention"]["lambda_max"] > 1
    assert _rel(_logits(model), ref) < 1e-5  # observed ~1e-7


def test_pairs_share_lambda():
    lam = pair_lambda(torch.tensor([[4.0, 9.0]]), 0.5)
    assert lam.tolist() == [[2.0, 3.0, 2.0, 3.0]]


def test_kv4_error_drops_with_smooth_attention():
    errs = {}
    for t in ((), ("smooth_attention",)):
        model = tiny_model("llama", seed=3)
        _outlier_keys(model)
        ref = _logits(model)
        scheme = QuantScheme("kv4", transforms=t, kv=KVSpec(4, position="post_rope", symmetric=False))
        quantize_model(model, scheme, IDS, progress=False)
        errs[t] = _rel(_logits(model), ref)
    assert errs[("smooth_attention",)] < errs[()], errs


@pytest.mark.parametrize("kind", ["opt", "bloom"])
def test_refused_without_a_rotary_mapping(kind):
    model = tiny_model(kind)
    with pytest.raises(RotationError, match="rotary"):
        quantize_model(model, QuantScheme("sa", transforms=("smooth_attention",)), IDS, progress=False)
