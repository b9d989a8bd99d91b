import pytest
import torch

from fptq.quant.granularity import GroupLayout
from fptq.quant.primitives import (
    Grid,
    dequantize_weight,
    fake_quant_act_per_tensor,
    fake_quant_act_per_token,
    fake_quant_weight,
    int_range,
    quantize,
    quantize_act_per_token,
    quantize_weight,
    sqnr_db,
)


def test_int_ranges():
    assert int_range(4, True) == (-8, 7)
    assert int_range(4, False) == (0, 15)
    assert int_range(8, True) == (-128, 127)


def test_sym_int4_per_channel_golden():
    W = torch.tensor([[0.7, -0.36, 0.1, 0.0], [2.0, 1.2, -0.9, 0.5]])
    q, s, z = quantize_weight(W, Grid(4, True), GroupLayout(4, 4))
    assert z is None
    torch.testing.assert_close(s, torch.tensor([[0.1], [2.0 / 7]]))
    # 0.7/0.1 = 7, -3.6 -> -4, 1, 0; row 2 (s = 2/7): 7, 4.2 -> 4, -3.15 -> -3, 1.75 -> 2
    assert q.tolist() == [[7, -4, 1, 0], [7, 4, -3, 2]]


def test_asym_int4_golden():
    W = torch.tensor([[-1.0, 0.0, 0.62, 2.0]])
    q, s, z = quantize_weight(W, Grid(4, False), GroupLayout(4, 4))
    torch.testing.assert_close(s, torch.tensor([[0.2]]))
    assert z.tolist() == [[5.0]]
    assert q.tolist() == [[0, 5, 8, 15]]
    torch.testing.assert_close(
        dequantize_weight(q, s, z, GroupLayout(4, 4)), torch.tensor([[-1.0, 0.0, 0.6, 2.0]])
    )


def test_group_shapes_and_ragged_last_group():
    W = torch.randn(6, 10)
    layout = GroupLayout(10, 4)
    q, s, z = quantize_weight(W, Grid(4, True), layout)
    assert s.shape == (6, 3) and q.shape == (6, 10)
    assert layout.expand(s).shape == (6, 10)
    # the last group (2 columns) has its own scale
    torch.testing.assert_close(s[:, 2], W[:, 8:].abs().amax(1) / 7)


def test_fake_quant_idempotent_and_matches_loop():
    torch.manual_seed(0)
    W = torch.randn(5, 12)
    layout = GroupLayout(12, 4)
    once = fake_quant_weight(W, Grid(4, True), layout)
    torch.testing.assert_close(fake_quant_weight(once, Grid(4, True), layout), once)
    ref = torch.empty_like(W)
    for r in range(5):
        for g in range(3):
            blk = W[r, 4 * g : 4 * g + 4]
            s = blk.abs().max() / 7
            ref[r, 4 * g : 4 * g + 4] = torch.clamp(torch.round(blk / s), -8, 7) * s
    torch.testing.assert_close(once, ref)


def test_per_token_and_per_tensor_act():
    x = torch.tensor([[1.27, -0.5], [0.0, 254.0]])
    q, s = quantize_act_per_token(x)
    torch.testing.assert_close(s, torch.tensor([[0.01], [2.0]]))
    assert q.tolist() == [[127, -50], [0, 127]]
    torch.testing.assert_close(fake_quant_act_per_token(x), torch.tensor([[1.27, -0.5], [0.0, 254.0]]))
    y = fake_quant_act_per_tensor(torch.tensor([0.3, -5.0, 1.0]), torch.tensor(1.0 / 127 * 2))
    torch.testing.assert_close(y, torch.tensor([2 / 127 * 19, -2.0 / 127 * 128, 2 / 127 * 64]))


def test_sqnr():
    x = torch.ones(100)
    assert sqnr_db(x, x) == float("inf")
    assert abs(sqnr_db(x, x * 1.1) - 20.0) < 1e-4


def test_rounding_ties_go_to_even():
    """One rounding convention (half to even) for weights and activations; the kernels match it
    (tests/kernels/test_kernels.py)."""
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5])
    assert quantize(x, torch.tensor(1.0), None, 8, True).tolist() == [0, 2, 2, 0, -2, -2, 4]
    W = torch.tensor([[7.0, 2.5, 1.5, -0.5]])  # absmax 7 -> scale 1: the ties are exact
    q, s, _ = quantize_weight(W, Grid(4, True), GroupLayout(4, 4))
    assert s.item() == 1.0 and q.tolist() == [[7, 2, 2, 0]]


# ---- static activation ranges (act.static_range) --------------------------------------------------


def test_static_range_golden():
    from fptq.quant.primitives import search_static_scale

    X = torch.tensor([[0.5, -1.0, 2.0, -127.0]])
    amax = X.abs().amax(0)
    assert search_static_scale(amax, X, 8, "max", "max").item() == pytest.approx(1.0)  # 127 / 127
    # the 75th percentile of |X| = {0.5, 1, 2, 127} is the 3rd value: 2.0
    assert search_static_scale(amax, X, 8, "max", "percentile", 75.0).item() == pytest.approx(2.0 / 127)
    # a percentile never goes above the raw range
    assert search_static_scale(amax, X, 8, "max", "percentile", 100.0).item() == pytest.approx(1.0)


def test_static_range_mse_clips_a_heavy_tail_and_not_a_uniform_one():
    from fptq.quant.primitives import fake_quant_act_per_tensor, search_static_scale

    torch.manual_seed(0)
    X = torch.distributions.StudentT(2.0).sample((256, 64))  # heavy tails: the raw max wastes the grid
    amax = X.abs().amax(0)
    s_max = search_static_scale(amax, X, 4, "max", "max")
    s_mse = search_static_scale(amax, X, 4, "max", "mse")
    assert s_mse < 0.5 * s_max  # observed 3.34 vs 20.86
    err = lambda s: (fake_quant_act_per_tensor(X, s, 4) - X).pow(2).sum()  # noqa: E731
    assert err(s_mse) < 0.7 * err(s_max)  # observed 33.5k vs 64.4k
    g = torch.Generator().manual_seed(0)
    U = torch.rand(256, 64, generator=g) * 2 - 1  # uniform: clipping gains nothing much
    s_u = search_static_scale(U.abs().amax(0), U, 8, "max", "mse")
    assert s_u >= 0.9 * U.abs().max() / 127
