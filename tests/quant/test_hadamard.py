"""Hadamard constructions and the fast transform (for tests/quant/test_hadamard.py next session)."""

import pytest
import torch

from fptq.quant.hadamard import base_hadamard, factor, fwht, hadamard_matrix

SIZES = [64, 256, 576, 640, 1536, 2048, 4096, 12, 20, 28, 36, 40]


@pytest.mark.parametrize("n", SIZES)
def test_hadamard_is_orthogonal_for_every_size_used(n):
    H = hadamard_matrix(n)
    assert torch.allclose(H @ H.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    m, p = factor(n)
    assert m * p == n and (p & (p - 1)) == 0
    B = base_hadamard(m)
    assert torch.equal(B.abs(), torch.ones_like(B))


@pytest.mark.parametrize("n", SIZES)
def test_fast_transform_equals_the_dense_one(n):
    x = torch.randn(5, n, dtype=torch.float64)
    assert torch.allclose(fwht(x), x @ hadamard_matrix(n).T, atol=1e-12)


def test_factors_of_the_real_models():
    assert factor(576) == (36, 16) and factor(1536) == (12, 128) and factor(640) == (20, 32)
    assert factor(11008) is None  # LLaMA-2-7B's FFN needs QuaRot's stored H172
    with pytest.raises(ValueError, match="random orthogonal fallback"):
        hadamard_matrix(11008)
