import pytest
import torch

from conftest import tiny_model
from fptq.act import ACT_STRATEGIES, DYNAMIC, LAE, STATIC, choose_mode
from fptq.pipeline import quantize_model
from fptq.scheme import ActSpec, QuantScheme, WeightSpec


@pytest.mark.parametrize(
    "v, norm_fed, middle, expected",
    [
        (14.99, True, "static", STATIC),
        (15.0, True, "static", LAE),
        (150.0, True, "static", LAE),
        (150.01, True, "static", DYNAMIC),
        (80.0, False, "static", STATIC),
        (80.0, False, "dynamic", DYNAMIC),
        (1e4, False, "static", DYNAMIC),
    ],
)
def test_fptq_picker_thresholds(v, norm_fed, middle, expected):
    assert choose_mode("model.layers.0.x", v, norm_fed, ActSpec(middle_band=middle)) == expected


def test_registry_and_overrides():
    assert set(ACT_STRATEGIES.names()) >= {"fptq", "lae_static", "per_tensor_static", "per_token_dynamic"}
    spec = ActSpec(overrides={"*.mlp.down_proj": "per_token_dynamic", "*.q_proj": "per_tensor_static"})
    assert choose_mode("model.layers.3.mlp.down_proj", 1.0, False, spec) == DYNAMIC
    assert choose_mode("model.layers.3.self_attn.q_proj", 50.0, True, spec) == STATIC
    assert choose_mode("model.layers.3.self_attn.k_proj", 50.0, True, ActSpec(lae=False)) == STATIC
    assert choose_mode("model.layers.3.mlp.o_proj", 50.0, False, ActSpec(strategy="lae_static")) == STATIC


def test_picker_on_planted_outliers(calib_ids):
    """Planted x60 channels in the attention norm push q/k/v into the LAE band or above; the MLP
    input stays small (static). v1 between the observed ranges splits them."""
    model = tiny_model("llama")
    scheme = QuantScheme(name="w4a8_fptq", weight=WeightSpec(4, "group", 32), act=ActSpec(v0=15, v1=150))
    report = quantize_model(model, scheme, calib_ids, batch_size=4, progress=False)
    by = {r.name: r for r in report.layers}
    q = by["model.layers.0.self_attn.q_proj"]
    gate = by["model.layers.0.mlp.gate_proj"]
    assert q.v > 15 and gate.v < 15
    expected_q = LAE if q.v <= 150 else DYNAMIC
    assert q.strategy == expected_q and by["model.layers.0.self_attn.v_proj"].strategy == expected_q
    assert gate.strategy == STATIC and gate.act == "static"
    if expected_q == LAE:
        assert q.transform == "lae" and q.act == "static"
    for r in report.layers:
        if r.act_scale is not None:
            assert r.act_scale > 0 and torch.isfinite(torch.tensor(r.act_scale))
