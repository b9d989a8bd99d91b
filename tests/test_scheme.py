import pytest

from fptq.scheme import ActSpec, KVSpec, QuantScheme, WeightSpec


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(bits=9), "weight.bits"),
        (dict(bits=1), "weight.bits"),
        (dict(group_size=0), "group_size"),
        (dict(granularity="tensor"), "granularity"),
        (dict(algo="omniquant"), "algo"),
        (dict(damp=0.0), "damp"),
    ],
)
def test_weight_spec_rejects(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        WeightSpec(**kwargs)


def test_act_spec_rejects():
    with pytest.raises(ValueError, match="v0 <= v1"):
        ActSpec(v0=200, v1=150)
    with pytest.raises(ValueError, match="strategy"):
        ActSpec(strategy="smooth")
    with pytest.raises(ValueError, match="middle_band"):
        ActSpec(middle_band="lae")
    with pytest.raises(ValueError, match="overrides"):
        ActSpec(overrides={"*down_proj": "fptq"})


def test_scheme_rejects():
    with pytest.raises(ValueError, match="alpha"):
        QuantScheme(name="x", smoothquant_alpha=1.5)
    with pytest.raises(ValueError, match="transform"):
        QuantScheme(name="x", transforms=("hadamard",))
    with pytest.raises(ValueError, match="needs quant.weight"):
        QuantScheme(name="x", transforms=("awq",))
    with pytest.raises(ValueError, match="do not combine"):
        QuantScheme(name="x", weight=WeightSpec(), transforms=("awq", "smoothquant"))
    with pytest.raises(ValueError, match="equalizer"):
        ActSpec(equalizer="awq")  # a weight-aware search, not an activation equalizer
    with pytest.raises(ValueError, match="kv.bits"):
        KVSpec(bits=3)


def test_layout_labels_and_float():
    assert WeightSpec(granularity="channel").layout(576).per_channel
    assert WeightSpec(group_size=64).layout(576).n_groups == 9
    assert WeightSpec(granularity="channel").group_size_or_none is None
    assert WeightSpec(group_size=64).group_size_or_none == 64
    assert WeightSpec().label == "int4_g128"
    assert WeightSpec(8, "channel").label == "int8_channel"
    assert WeightSpec(group_size=128, symmetric=False, algo="awq").label == "int4_g128_asym_awq"
    assert (
        ActSpec().label == "fptq"
        and ActSpec(bits=6, strategy="per_token_dynamic").label == "per_token_dynamic_a6"
    )
    assert QuantScheme().is_float
    assert not QuantScheme(name="w", weight=WeightSpec()).is_float
