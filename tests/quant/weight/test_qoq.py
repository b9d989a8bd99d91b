"""QoQ's progressive group quantization: golden numbers, the protective range, the packed "qoq"
format (integer int4 -> int8 step, per-channel int8 GEMM), reload and bytes per weight."""

import dataclasses

import pytest
import torch

from fptq.kernels.reference import gemm_int_ref, gemm_ref, int8_weight
from fptq.quant.granularity import GroupLayout
from fptq.quant.qlinear import QuantLinear
from fptq.quant.scheme import WeightSpec
from fptq.quant.weight.qoq import qoq_dequantize, qoq_quantize


def test_golden_two_levels():
    """One channel, one group of 4: s1 = 2.38 / 119 = 0.02; int8 level [119, -50, 0, 25];
    s2 = ceil(169 / 15) = 12, z = round(50 / 12) = 4; codes round(v / 12) + 4."""
    W = torch.tensor([[2.38, -1.0, 0.0, 0.5]])
    q4, s2, z, s1 = qoq_quantize(W, GroupLayout(4, 4))
    assert s1.item() == pytest.approx(0.02)
    assert s2.tolist() == [[12.0]] and z.tolist() == [[4.0]]
    assert q4.tolist() == [[14.0, 0.0, 4.0, 6.0]]  # 119/12 = 9.9 -> 10 (+4); -50/12 = -4.2 -> -4 (+4)
    # dequantized: s1 * (q - z) * s2 = 0.02 * [120, -48, 0, 24]
    torch.testing.assert_close(
        qoq_dequantize(q4, s2, z, s1, GroupLayout(4, 4)), 0.02 * torch.tensor([[120.0, -48.0, 0.0, 24.0]])
    )


def test_int4_to_int8_never_overflows():
    """The protective range's promise, on adversarial rows (extremes in every group) and random ones."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(64, 512, generator=g)
    W[:, ::128] = W.abs().amax(1, keepdim=True)  # +max in every group
    W[:, 1::128] = -W.abs().amax(1, keepdim=True)  # -max in every group
    layout = GroupLayout(512, 128)
    q4, s2, z, s1 = qoq_quantize(W, layout)
    assert q4.min() >= 0 and q4.max() <= 15 and s2.min() >= 1 and s2.max() <= 16
    ql = QuantLinear.from_codes(q4, s2, z, bits=4, group_size=128, channel_scale=s1)
    w8 = int8_weight(ql.packed)
    assert w8.dtype == torch.int8 and w8.abs().max() <= 127
    # the integer step equals the float reconstruction
    torch.testing.assert_close(w8.float() * s1[:, None], qoq_dequantize(q4, s2, z, s1, layout))
    err = (ql.dequantized_weight() - W).pow(2).mean() / W.pow(2).mean()
    assert err < 0.02  # observed ~0.008: between int4 g128 and int8


def test_qoq_gemm_is_a_per_channel_int8_gemm():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(32, 256, generator=g)
    q4, s2, z, s1 = qoq_quantize(W, GroupLayout(256, 128))
    p = QuantLinear.from_codes(q4, s2, z, bits=4, group_size=128, channel_scale=s1).packed
    a_q = torch.randint(-127, 128, (5, 256), generator=g, dtype=torch.int8)
    a_s = torch.rand(5, generator=g) / 100
    torch.testing.assert_close(gemm_int_ref(a_q, a_s, p), gemm_ref(a_q, a_s, p), rtol=1e-5, atol=1e-5)


def test_qoq_layer_reloads_and_counts_its_bytes():
    W = torch.randn(48, 256, generator=torch.Generator().manual_seed(2))
    q4, s2, z, s1 = qoq_quantize(W, GroupLayout(256, 128))
    ql = QuantLinear.from_codes(q4, s2, z, bits=4, group_size=128, channel_scale=s1)
    cfg = ql.to_config()
    assert cfg["format"] == "qoq"
    twin = QuantLinear.from_config(cfg, torch.float32, device="cpu")
    twin.load_state_dict(ql.state_dict())
    x = torch.randn(3, 256)
    assert torch.equal(twin(x), ql(x))
    # 4-bit codes + int8 scale and zero per group of 128 + a float32 scale per channel
    assert ql.nbytes() * 8 / W.numel() == pytest.approx(4 + 16 / 128 + 32 / 256)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(bits=8), "4-bit"),
        (dict(group_size=0), "per channel"),
        (dict(symmetric=True), "asymmetric"),
        (dict(mse=True), "mse"),
    ],
)
def test_qoq_refuses_grids_it_cannot_express(kw, msg):
    base = dict(bits=4, group_size=128, symmetric=False, algo="qoq")
    with pytest.raises(ValueError, match=msg):
        WeightSpec(**{**base, **kw})


def test_triton_backend_runs_the_qoq_format_and_refuses_groups_it_cannot_tile(tmp_path):
    """backend=triton runs qoq weights (the GEMM's integer second level, kernels/gemm.py QOQ) when
    whole 64-column groups fit a K-tile; preflight says so before any work, per scheme."""
    from fptq.data import CalibSpec
    from fptq.models.loading import ModelSpec
    from fptq.quant.qlinear import kernel_constraint_errors
    from fptq.quant.scheme import ActSpec, QuantScheme
    from fptq.study.preflight import PreflightError, preflight
    from fptq.study.spec import EvalSpec, RunSpec

    q = QuantScheme(
        "qoq", WeightSpec(4, 64, symmetric=False, algo="qoq"), ActSpec(strategy="per_token_dynamic")
    )
    (tmp_path / "w.txt").write_text("text " * 200)
    from fptq.data import DataSpec

    spec = RunSpec(
        model=ModelSpec(
            name="t",
            source="random",
            config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4),
        ),
        quant=q,
        calib=CalibSpec(source="random"),
        data=DataSpec(source="local", wikitext2=str(tmp_path / "w.txt")),
        eval=EvalSpec(datasets=("wikitext2",)),
        backend="triton",
    )
    preflight(spec, torch.device("cpu"))  # the kernels in Triton's interpreter (tests/conftest.py)
    bad = dataclasses.replace(spec, quant=QuantScheme(
        "qoq", WeightSpec(4, 32, symmetric=False, algo="qoq"), ActSpec(strategy="per_token_dynamic")))  # fmt: skip
    with pytest.raises(PreflightError, match="whole 64-column groups"):
        preflight(bad, torch.device("cpu"))
    errors = kernel_constraint_errors(4, 8, 96, per_channel=False, weight_format="qoq")
    assert "runs qoq weights with whole 64-column groups, got group size 96" in errors
    assert kernel_constraint_errors(4, 8, 128, per_channel=False, weight_format="qoq") == []
