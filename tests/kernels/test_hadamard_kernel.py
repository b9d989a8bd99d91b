"""The Triton fast Walsh-Hadamard transform against the torch one (interpreter on CPU)."""

import pytest
import torch

from fptq.quant.hadamard import fwht


@pytest.mark.parametrize("n", [16, 64, 576, 640, 1536, 2048])
def test_triton_fwht_is_exact_against_torch(n):
    """Integer inputs: every sum is exact in fp32, so both orders of summation agree bit for bit."""
    from fptq.quant.hadamard import fwht_triton

    x = torch.randint(-8, 9, (3, n), generator=torch.Generator().manual_seed(n)).float()
    assert torch.equal(fwht_triton(x), fwht(x))
    y = torch.randn(2, 5, n, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fwht_triton(y), fwht(y), rtol=1e-6, atol=1e-6)


def test_triton_fwht_refuses_an_unknown_order():
    from fptq.quant.hadamard import fwht_triton

    with pytest.raises(ValueError, match="172"):
        fwht_triton(torch.zeros(2, 172))
