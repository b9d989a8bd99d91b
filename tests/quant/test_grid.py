"""Grid conventions: the symmetric scale rule (max | half_range), integer or float zero points,
MSE range search; golden values and the Q4_1-like grid that a float zero point returns exactly."""

import pytest
import torch

from fptq.kernels.reference import dequantize_packed, gemm_int_ref, gemm_ref, pack_weight
from fptq.quant.granularity import GroupLayout
from fptq.quant.primitives import (
    Grid,
    dequantize_weight,
    fake_quant_weight,
    mse_clip,
    quantize_act_per_token,
    quantize_weight,
    static_act_scale,
)
from fptq.quant.qlinear import QuantLinear
from fptq.quant.scheme import WeightSpec


def test_half_range_rule_golden():
    """s = absmax / 7.5: +absmax rounds to 8 and clamps to 7, -absmax is -8 (all 16 codes used)."""
    W = torch.tensor([[7.5, -7.5, 1.0, 0.49]])
    q, s, z = quantize_weight(W, Grid(4, scale_rule="half_range"), GroupLayout(4, 4))
    assert z is None and s.item() == 1.0
    assert q.tolist() == [[7, -8, 1, 0]]
    q_max, s_max, _ = quantize_weight(W, Grid(4), GroupLayout(4, 4))
    assert s_max.item() == pytest.approx(7.5 / 7) and q_max.tolist() == [[7, -7, 1, 0]]


def test_half_range_rule_has_smaller_error_on_gaussian_weights():
    W = torch.randn(256, 512, generator=torch.Generator().manual_seed(0))
    layout = GroupLayout(512, 64)
    err = {
        r: float((W - fake_quant_weight(W, Grid(4, scale_rule=r), layout)).pow(2).mean())
        for r in ("max", "half_range")
    }
    # observed: max 0.01162, half_range 0.01060 (8.7% less)
    assert err["half_range"] < 0.95 * err["max"]


def test_activation_half_range_rule():
    q, s = quantize_act_per_token(torch.tensor([[2.55, -2.55, 1.0]]), 8, "half_range")
    assert s.item() == pytest.approx(0.02) and q.tolist() == [[127, -128, 50]]
    assert static_act_scale(torch.tensor([2.55]), 8, "half_range").item() == pytest.approx(0.02)


def q4_1_weights(rows=16, blocks=4, seed=0):
    """Weights exactly on a GGUF Q4_1-like grid: value = d q + m, q in 0..15 (0 and 15 used), blocks
    of 32, with dyadic d and m so every product is exact in float32."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (rows, blocks, 32), generator=g)
    q[..., 0], q[..., 1] = 0, 15
    d = torch.randint(1, 64, (rows, blocks, 1), generator=g).float() / 1024
    # float offsets, not multiples of d: an integer zero point cannot express them
    m = torch.randint(-2048, 0, (rows, blocks, 1), generator=g).float() / 4096
    return (d * q + m).reshape(rows, blocks * 32), q.reshape(rows, blocks * 32)


def test_float_zero_point_returns_a_q4_1_grid_exactly():
    W, codes = q4_1_weights()
    layout = GroupLayout(W.shape[1], 32)
    q, s, z = quantize_weight(W, Grid(4, symmetric=False, zero_point="float"), layout)
    assert torch.equal(q, codes.float())
    back = dequantize_weight(q, s, z, layout)
    torch.testing.assert_close(back, W, rtol=0, atol=1e-6)  # observed max error 6e-8 (float32 round-off)
    p = pack_weight(q, s, z, 4, 32, float_zero=True)
    torch.testing.assert_close(dequantize_packed(p), W, rtol=0, atol=1e-6)
    # an integer zero point includes 0 in the range and rounds z: the same weights do not come back
    qi, si, zi = quantize_weight(W, Grid(4, symmetric=False), layout)
    assert (dequantize_weight(qi, si, zi, layout) - W).abs().max() > 1e-2  # observed 0.028


@pytest.mark.parametrize("zero", [None, "int", "float"])
@pytest.mark.parametrize("K, group", [(96, 32), (80, 32), (64, 64)])
def test_gemm_offset_form_matches_the_dequantized_product(zero, K, group):
    """y = s_x (s int_dot(q, x_q) + m rowsum(x_q)), m = -s z: the integer pipeline handles the offset."""
    W = torch.randn(8, K, generator=torch.Generator().manual_seed(K))
    grid = Grid(4, symmetric=zero is None, zero_point=zero or "int")
    q, s, z = quantize_weight(W, grid, GroupLayout(K, group))
    p = pack_weight(q, s, z, 4, group, float_zero=grid.float_zero)
    a = torch.randint(-128, 128, (5, K), dtype=torch.int8, generator=torch.Generator().manual_seed(1))
    a_s = torch.rand(5) / 100
    torch.testing.assert_close(gemm_int_ref(a, a_s, p), gemm_ref(a, a_s, p), rtol=1e-5, atol=1e-5)


def test_quantlinear_with_float_zero_points():
    W, _ = q4_1_weights(rows=8, blocks=2)
    spec = WeightSpec(bits=4, group_size=32, symmetric=False, zero_point="float", scale_dtype="float32")
    q, s, z = quantize_weight(W, spec.grid, GroupLayout(64, 32))
    ql = QuantLinear.from_codes(q, s, z, bits=4, group_size=32, float_zero=True, scale_dtype=torch.float32)
    assert ql.w_zero.dtype == torch.float32
    x = torch.randn(3, 64)
    torch.testing.assert_close(ql(x), x @ W.T, rtol=1e-5, atol=1e-5)


def test_mse_clip_never_loses_to_the_full_range():
    W = torch.randn(32, 128, generator=torch.Generator().manual_seed(3))
    W[0, 5] = 12.0  # an outlier: its group is best clipped
    layout = GroupLayout(128, 64)
    grid = Grid(4)
    clip = mse_clip(W, grid, layout)
    assert clip.shape == (32, 2) and (clip <= 1).all() and (clip > 0.2).all()
    assert clip[0, 0] < 1.0
    err = lambda c: (W - fake_quant_weight(W, grid, layout, c)).abs().pow(2.4).sum()  # noqa: E731
    assert err(clip) <= err(torch.ones_like(clip))


def test_grid_options_are_validated():
    with pytest.raises(ValueError, match="scale rule"):
        Grid(4, scale_rule="absmax")
    with pytest.raises(ValueError, match="zero_point=float needs weight.symmetric=false"):
        WeightSpec(zero_point="float")
    with pytest.raises(ValueError, match="scale_rule applies to symmetric"):
        WeightSpec(symmetric=False, scale_rule="half_range")
    assert WeightSpec(symmetric=False, zero_point="float", group_size=32).label == "int4_g32_asym_fzero"
    assert WeightSpec(scale_rule="half_range", mse=True).label == "int4_g128_half_mse"
