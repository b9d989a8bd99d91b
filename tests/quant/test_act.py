import pytest
import torch

from conftest import tiny_model
from fptq.quant.act.fptq import FPTQSettings
from fptq.quant.methods import ACT_STRATEGIES
from fptq.quant.modes import ActQuant, LayerMode
from fptq.quant.pipeline import apply_overrides, quantize_model
from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec

STATIC, DYNAMIC, LAE = LayerMode.STATIC, LayerMode.DYNAMIC, LayerMode.LAE


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
    assert ACT_STRATEGIES.get("fptq").choose(v, norm_fed, FPTQSettings(middle_band=middle)) == expected


def test_registry_and_overrides():
    assert ACT_STRATEGIES.names() == ["auto", "fptq", "lae_static", "per_tensor_static", "per_token_dynamic"]
    overrides = {"*.mlp.down_proj": "per_token_dynamic", "*.q_proj": "per_tensor_static"}
    fptq = ACT_STRATEGIES.get("fptq")
    assert fptq.choose(50.0, True, FPTQSettings(lae=False)) == STATIC  # LAE ablated
    planned = {
        "mlp.down_proj": STATIC,
        "self_attn.q_proj": LAE,
        "self_attn.k_proj": LAE,
        "self_attn.o_proj": LAE,
    }
    out = apply_overrides(
        "model.layers.3", planned, overrides, can_lae={"self_attn.q_proj", "self_attn.k_proj"}
    )
    # overrides replace the strategy's choice; LAE with nothing to absorb it falls back to static
    assert out == {
        "mlp.down_proj": DYNAMIC,
        "self_attn.q_proj": STATIC,
        "self_attn.k_proj": LAE,
        "self_attn.o_proj": STATIC,
    }
    assert ACT_STRATEGIES.get("lae_static").choose(50.0, False, None) == STATIC


def test_modes_map_to_runtime_quantization():
    assert [m.runtime for m in (STATIC, LAE, DYNAMIC, LayerMode.NONE)] == [
        ActQuant.STATIC,
        ActQuant.STATIC,
        ActQuant.DYNAMIC,
        ActQuant.NONE,
    ]
    assert f"{LAE}" == "lae_static" and str(ActQuant.DYNAMIC) == "dynamic"


def test_unknown_names_fail_with_the_known_ones():
    with pytest.raises(ValueError, match="act.strategy must be one of .*'fptq'"):
        ActSpec(strategy="smart")
    with pytest.raises(ValueError, match="a per-layer mode"):
        ActSpec(overrides={"*.q_proj": "fptq"})


def test_picker_on_planted_outliers(calib_ids):
    """The tiny model's planted x60 attention-norm channels put layer 0's q/k/v input above v1
    (observed v = 217.9), layer 1's inside the LAE band (observed 122.6); the MLP inputs stay
    below v0 (observed <= 4.9). The expected modes are fixed, not derived from what ran."""
    model = tiny_model("llama")
    scheme = QuantScheme(
        name="w4a8_fptq", weight=WeightSpec(4, 32), act=ActSpec(settings=dict(v0=15, v1=150))
    )
    report = quantize_model(model, scheme, calib_ids, batch_size=4, progress=False)
    by = {r.name: r for r in report.layers}
    for proj in ("q_proj", "k_proj", "v_proj"):
        l0, l1 = by[f"model.layers.0.self_attn.{proj}"], by[f"model.layers.1.self_attn.{proj}"]
        assert l0.v > 150 and (l0.strategy, l0.act, l0.transform) == ("per_token_dynamic", "dynamic", "none")
        assert 15 <= l1.v <= 150 and (l1.strategy, l1.act, l1.transform) == ("lae_static", "static", "lae")
    for i in (0, 1):
        for proj in ("gate_proj", "up_proj"):
            r = by[f"model.layers.{i}.mlp.{proj}"]
            assert r.v < 15 and (r.strategy, r.act) == ("per_tensor_static", "static")
    for r in report.layers:
        if r.act == "static":
            assert r.act_scale is not None and r.act_scale > 0 and torch.isfinite(torch.tensor(r.act_scale))
        else:
            assert r.act_scale is None
