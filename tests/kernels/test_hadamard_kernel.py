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


@pytest.mark.parametrize("n", [64, 576, 2048])
@pytest.mark.parametrize("static", [None, 0.05])
@pytest.mark.parametrize("signed", [False, True])
def test_fused_rotation_and_quantization_is_exact(n, static, signed):
    """fwht_quant (the online Hadamard fused into int8 quantization, one launch) gives the codes and
    scales of rotating first (the Triton fwht) and quantizing after (quant_act), bit for bit, and the
    library's codes (quantize_act_per_token of the torch rotation) up to float round-off at ties."""
    from fptq.kernels.hadamard import fwht_quant
    from fptq.kernels.quant_act import quant_act
    from fptq.quant.hadamard import base_hadamard, factor, fwht_triton
    from fptq.quant.primitives import quantize_act_per_token

    g = torch.Generator().manual_seed(n)
    x = torch.randn(5, n, generator=g) * 3
    D = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).float() if signed else None
    m = factor(n)[0]
    q, s = fwht_quant(x, m, base_hadamard(m) if m > 1 else None, static, signs=D)
    xr = fwht_triton(x if D is None else x * D)
    q2, s2 = quant_act(xr, static_scale=static)
    assert torch.equal(q, q2) and torch.equal(s, s2)
    if static is None:
        ql, sl = quantize_act_per_token(fwht(x if D is None else x * D))
        assert (q.float() - ql.float()).abs().max() <= 1
        torch.testing.assert_close(s, sl.reshape(-1).float(), rtol=1e-6, atol=0)


def test_triton_quantlinear_fuses_its_online_hadamard():
    """A QuantLinear with an online Hadamard input transform (R4) gives the reference backend's output
    on the Triton backend, through the fused rotation + quantization (prefill) and through the Triton
    rotation before the fused GEMM (decode)."""
    from fptq.quant.granularity import GroupLayout
    from fptq.quant.online import Hadamard, random_signs
    from fptq.quant.primitives import Grid, quantize_weight
    from fptq.quant.qlinear import QuantLinear, set_backend

    n = 640  # 5 x 128: a Paley factor through tl.dot
    W = torch.randn(48, n, generator=torch.Generator().manual_seed(2))
    q, s, z = quantize_weight(W, Grid(4, True), GroupLayout(n, 128))
    for mode, scale in (("dynamic", None), ("static", torch.tensor(0.04))):
        ql = QuantLinear.from_codes(q, s, z, bits=4, group_size=128, act_mode=mode, act_scale=scale,
                                    input_transform=Hadamard(n, random_signs(n, 0)))  # fmt: skip
        model = torch.nn.Sequential(ql)
        for shape in [(3, 7, n), (1, 1, n)]:
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
            set_backend(model, "reference")
            ref = ql(x)
            set_backend(model, "triton")
            torch.testing.assert_close(ql(x), ref, rtol=1e-4, atol=1e-4)
