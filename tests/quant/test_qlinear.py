"""QuantLinear stores only the packed format: sizes, no dense weight, skeleton + load_state_dict."""

import pytest
import torch

from fptq.quant.granularity import GroupLayout
from fptq.quant.modes import ActQuant
from fptq.quant.primitives import Grid, dequantize_weight, quantize_weight
from fptq.quant.qlinear import QuantLinear


def _layer(out_f, in_f, bits=4, group=128, sym=True, dtype=torch.float32, **kw):
    W = torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(0)).to(dtype)
    layout = GroupLayout(in_f, group)
    q, s, z = quantize_weight(W.float(), Grid(bits, sym), layout)
    return QuantLinear.from_codes(q, s, z, bits=bits, group_size=group, dtype=dtype, **kw), (q, s, z, layout)


@pytest.mark.parametrize("sym", [True, False])
def test_w4_g128_costs_at_most_0_53_bytes_per_weight(sym):
    ql, _ = _layer(
        512, 2048, sym=sym, dtype=torch.float16, act_mode=ActQuant.STATIC, act_scale=torch.tensor(0.1)
    )
    sd = ql.state_dict()
    per_weight = sum(t.numel() * t.element_size() for t in sd.values()) / (512 * 2048)
    # observed: 0.5156 symmetric (codes 0.5 + fp16 scales 2/128), 0.5234 asymmetric (+ int8 zeros)
    assert per_weight <= 0.53, per_weight
    assert ql.weight is None and not any(t.numel() >= 512 * 2048 for t in sd.values())
    assert ql.nbytes() == sum(t.numel() * t.element_size() for t in sd.values())


def test_reference_forward_uses_the_dequantized_packed_weight():
    ql, (q, s, z, layout) = _layer(16, 96, bits=4, group=32, bias=torch.randn(16))
    x = torch.randn(3, 96)
    expected = torch.nn.functional.linear(x, dequantize_weight(q, s, z, layout), ql.bias)
    assert torch.equal(ql(x), expected)


@pytest.mark.parametrize("bits, sym", [(4, True), (4, False), (8, False), (3, True)])
def test_skeleton_loads_a_state_dict_bit_exactly(bits, sym):
    ql, _ = _layer(
        24,
        80,
        bits=bits,
        group=32,
        sym=sym,
        bias=torch.randn(24),
        act_mode="static",
        act_scale=torch.tensor(0.05),
    )
    empty = QuantLinear(80, 24, bias=True, w_bits=bits, group_size=32, symmetric=sym, act_mode="static")
    assert empty.state_dict().keys() == ql.state_dict().keys()
    empty.load_state_dict(ql.state_dict())
    x = torch.randn(2, 80)
    assert torch.equal(empty(x), ql(x))


def test_float_weight_layer_keeps_its_weight():
    W = torch.randn(8, 16)
    ql = QuantLinear.from_float(W, None, act_mode="dynamic")
    assert ql.w_bits == 16 and torch.equal(ql.weight, W) and ql.qweight is None


def test_act_scale_only_with_static_mode():
    q, s, z = quantize_weight(torch.randn(4, 8), Grid(4, True), GroupLayout(8, 8))
    with pytest.raises(ValueError, match="needs act_scale"):
        QuantLinear.from_codes(q, s, z, bits=4, act_mode="static")
    with pytest.raises(ValueError, match="only used with act_mode='static'"):
        QuantLinear.from_codes(q, s, z, bits=4, act_mode="dynamic", act_scale=torch.tensor(1.0))
