"""The one packed weight format (kernels/reference.py): bit-exact round trips, sizes, offsets."""

import pytest
import torch

from fptq.kernels.reference import (
    dequantize_packed,
    gemm_ref,
    int_acc_ref,
    pack_weight,
    packed_shape,
    weight_codes,
)
from fptq.quant.granularity import GroupLayout
from fptq.quant.primitives import Grid, dequantize_weight, quantize_weight


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("K, group", [(96, 32), (80, 32), (50, 50), (7, 4)])  # 80, 7: ragged last group
def test_pack_round_trip_is_bit_exact(bits, sym, K, group):
    W = torch.randn(6, K, generator=torch.Generator().manual_seed(bits * K)) * 2
    layout = GroupLayout(K, group)
    q, s, z = quantize_weight(W, Grid(bits, sym), layout)
    p = pack_weight(q, s, z, bits, group)
    assert p.data.dtype == torch.int8 and p.data.shape == packed_shape(6, K, bits)
    assert torch.equal(dequantize_packed(p), dequantize_weight(q, s, z, layout))
    codes = weight_codes(p).to(torch.int32)
    if not sym:  # asymmetric codes are stored centred, and so are their zeros
        codes = codes + 2 ** (bits - 1)
    assert torch.equal(codes, q.to(torch.int32))


def test_eight_bit_asymmetric_codes_do_not_wrap():
    """Codes 0..255 are stored as q - 128 with zeros z - 128: the integer dot is still a . (q - z)."""
    q = torch.tensor([[0, 255, 128, 3]])
    z = torch.tensor([[200.0]])
    p = pack_weight(q, torch.ones(1, 1), z, 8, 4)
    assert p.data.flatten().tolist() == [-128, 127, 0, -125] and p.zero.item() == 72
    a = torch.tensor([[1, 2, 3, 4]], dtype=torch.int8)
    expected = int((a.long() * (q - 200)).sum())
    assert int_acc_ref(a, p).item() == expected


def test_float_zero_point_dequantizes_and_multiplies():
    """A float zero point (range exactly [min, max]) packs, dequantizes and runs in the GEMM reference."""
    W = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    layout = GroupLayout(64, 32)
    q, s, z = quantize_weight(W, Grid(4, False), layout)
    zf = z + 0.25  # not an integer
    p = pack_weight(q, s, zf, 4, 32, float_zero=True)
    assert p.zero.dtype == torch.float32
    assert torch.equal(dequantize_packed(p), dequantize_weight(q, s, zf, layout))
    a = torch.randint(-128, 128, (3, 64), dtype=torch.int8, generator=torch.Generator().manual_seed(1))
    a_s = torch.full((3,), 0.1)
    ref = (a.double() * 0.1) @ dequantize_weight(q, s, zf, layout).double().T
    torch.testing.assert_close(gemm_ref(a, a_s, p), ref.float())


def test_scale_dtype_is_stored_as_asked():
    q, s, z = quantize_weight(torch.randn(8, 64), Grid(4, True), GroupLayout(64, 32))
    p = pack_weight(q, s, z, 4, 32, scale_dtype=torch.float16)
    assert p.scale.dtype == torch.float16 and p.scale.shape == (2, 8)
    # computed in the scales' dtype: the exact product q * s, rounded once to fp16
    assert torch.equal(dequantize_packed(p), (q * s.half().float().repeat_interleave(32, 1)).half())
