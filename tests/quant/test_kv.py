"""KV-cache fake quantization: asymmetric per (token, head), prompt-KV precision (keep_first)."""

import pytest
import torch

from fptq.quant.kv import KVQuant
from fptq.quant.primitives import fake_quant_act_per_token_asym
from fptq.quant.scheme import KVSpec


def test_asymmetric_per_token_golden():
    """[0, 1, 2, 15] at 4 bits: range [0, 15], scale 1, zero 0: exact. [-1, 0, 2, 14]: scale 1, zero 1."""
    x = torch.tensor([[0.0, 1.0, 2.0, 15.0], [-1.0, 0.0, 2.0, 14.0]])
    assert torch.equal(fake_quant_act_per_token_asym(x, 4), x)
    y = torch.tensor([[0.0, 0.4, 0.6, 3.0]])  # scale 0.2: 0.4 -> 2 -> 0.4, 0.6 -> 3 -> 0.6
    torch.testing.assert_close(fake_quant_act_per_token_asym(y, 4), torch.tensor([[0.0, 0.4, 0.6, 3.0]]))


def test_asymmetric_beats_symmetric_on_one_sided_heads():
    x = torch.rand(64, 4, 16, generator=torch.Generator().manual_seed(0)) + 2.0  # all positive
    sym = KVQuant(4, "post_rope", True).quantize(x, seq_dim=-2)
    asym = KVQuant(4, "post_rope", False).quantize(x, seq_dim=-2)
    assert (asym - x).pow(2).sum() < 0.5 * (sym - x).pow(2).sum()


def test_keep_first_keeps_leading_positions():
    x = torch.randn(2, 3, 10, 16, generator=torch.Generator().manual_seed(1))  # (batch, heads, seq, dim)
    kvq = KVQuant(4, "post_rope", keep_first=4, keep_bits=16)
    y = kvq.quantize(x, seq_dim=-2)
    assert torch.equal(y[:, :, :4], x[:, :, :4])  # float
    assert torch.equal(y[:, :, 4:], KVQuant(4, "post_rope").quantize(x[:, :, 4:], seq_dim=-2))
    y8 = KVQuant(4, "post_rope", keep_first=4, keep_bits=8).quantize(x, seq_dim=-2)
    e8, e4 = (y8[:, :, :4] - x[:, :, :4]).abs().max(), (y[:, :, 4:] - x[:, :, 4:]).abs().max()
    assert 0 < e8 < e4
    # longer than the sequence: everything kept
    assert torch.equal(KVQuant(4, keep_first=50).quantize(x, seq_dim=-2), x)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(bits=0, keep_first=4), "needs kv.bits"),
        (dict(bits=8, keep_first=4, keep_bits=8), "above"),
        (dict(bits=4, keep_first=-1), ">= 0"),
    ],
)
def test_bad_kv_settings_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        KVSpec(**kw)


@pytest.mark.parametrize("position", ["pre_rope", "post_rope"])
def test_keep_first_through_the_pipeline_and_a_checkpoint(position, tmp_path):
    """keep_first covering every position: the float model's logits; fewer: in between; a saved
    checkpoint reloads the same cache settings."""
    from conftest import tiny_model
    from fptq.models.checkpoint import load_quantized, save_quantized
    from fptq.quant.pipeline import quantize_model
    from fptq.quant.scheme import QuantScheme

    ids = torch.randint(0, 258, (2, 24), generator=torch.Generator().manual_seed(0))
    ref = tiny_model("llama", seed=1)(ids).logits
    out = {}
    for keep in (0, 8, 24):
        model = tiny_model("llama", seed=1)
        kv = KVSpec(4, position=position, symmetric=False, keep_first=keep)
        quantize_model(model, QuantScheme("kv", kv=kv), ids, progress=False)
        with torch.no_grad():
            out[keep] = model(ids).logits
        if keep == 8:
            save_quantized(model, tmp_path / position, scheme=QuantScheme("kv", kv=kv))
            assert torch.equal(load_quantized(tmp_path / position)(ids).logits, out[8])
    err = {k: (v - ref).norm().item() for k, v in out.items()}
    assert err[24] < 1e-4 and err[24] < err[8] < err[0], err
