import math

import pytest
import torch

from fptq.quant.transforms import lae_scale, smoothquant_scale


def test_lae_scale_golden():
    m = torch.tensor([2.0, 6.0, 150.0, 14.0])
    s = lae_scale(m)
    # s_j = m / log2(2 + m): 2/2 = 1, 6/3 = 2, 150/log2(152), 14/4 = 3.5
    torch.testing.assert_close(s, torch.tensor([1.0, 2.0, 150 / math.log2(152), 3.5]))
    # the paper's example: a channel of max 150 ends at log2(152) = 7.25, weight row x20.7
    assert abs(float(m[2] / s[2]) - 7.2479) < 1e-3
    assert abs(float(s[2]) - 20.695) < 1e-2


def test_lae_uses_absmax_not_range():
    # a channel with values in [-100, 100] has max|X| = 100 but range 200: LAE uses 100.
    x = torch.tensor([[-100.0], [100.0]])
    s = lae_scale(x.abs().amax(0))
    torch.testing.assert_close(s, torch.tensor([100.0 / math.log2(102.0)]))


def test_smoothquant_scale_golden():
    x = torch.tensor([4.0, 1.0])
    w1 = torch.tensor([[1.0, 4.0]])
    w2 = torch.tensor([[-2.0, 1.0]])
    s = smoothquant_scale(x, [w1, w2], alpha=0.5)
    # max|W_j| over both = [2, 4]; s = sqrt(x) / sqrt(w) = [2/sqrt2, 1/2]
    torch.testing.assert_close(s, torch.tensor([2 / math.sqrt(2), 0.5]))
    with pytest.raises(ValueError):
        smoothquant_scale(x, [w1], alpha=1.5)
