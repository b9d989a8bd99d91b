import pytest

from fptq.quant.scheme import ActSpec, KVSpec, QuantScheme, WeightSpec


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(bits=9), "weight.bits"),
        (dict(bits=1), "weight.bits"),
        (dict(group_size=-1), "group_size"),
        (dict(group_size="channel"), "group_size"),
        (dict(algo="omniquant"), "algo"),
        (dict(algo="gptq", settings=dict(damp=0.0)), "damp"),
        (dict(algo="gptq", settings=dict(dmap=0.1)), "gptq has no setting 'dmap'; its settings are"),
        (dict(algo="rtn", settings=dict(damp=0.1)), "rtn has no setting 'damp'"),
    ],
)
def test_weight_spec_rejects(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        WeightSpec(**kwargs)


def test_act_spec_rejects():
    with pytest.raises(ValueError, match="v0 <= v1"):
        ActSpec(settings=dict(v0=200, v1=150))
    with pytest.raises(ValueError, match="strategy"):
        ActSpec(strategy="smooth")
    with pytest.raises(ValueError, match="middle_band"):
        ActSpec(settings=dict(middle_band="lae"))
    with pytest.raises(ValueError, match="overrides"):
        ActSpec(overrides={"*down_proj": "fptq"})


def test_scheme_rejects():
    with pytest.raises(ValueError, match="alpha"):
        QuantScheme(name="x", transforms=("smoothquant",), transform_args={"smoothquant": {"alpha": 1.5}})
    with pytest.raises(ValueError, match="does not use"):
        QuantScheme(name="x", transform_args={"awq": {"grid": 4}})
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
    assert WeightSpec(group_size=0).layout(576).per_channel and WeightSpec(group_size=0).per_channel
    assert WeightSpec(group_size=64).layout(576).n_groups == 9
    assert WeightSpec().label == "int4_g128"
    assert WeightSpec(8, 0).label == "int8_channel"
    assert WeightSpec(group_size=128, symmetric=False, algo="awq").label == "int4_g128_asym_awq"
    assert (
        ActSpec().label == "fptq"
        and ActSpec(bits=6, strategy="per_token_dynamic").label == "per_token_dynamic_a6"
    )
    assert QuantScheme().is_float
    assert not QuantScheme(name="w", weight=WeightSpec()).is_float


def test_each_method_owns_its_settings():
    from fptq.quant.act.fptq import FPTQSettings
    from fptq.quant.weight.gptq import GPTQSettings

    w = WeightSpec(algo="gptq", settings=dict(damp=0.1, act_order=True))
    assert isinstance(w.settings, GPTQSettings) and (w.settings.damp, w.settings.act_order) == (0.1, True)
    assert w.needs.hessian and not w.needs.sequential
    assert WeightSpec(algo="gptq", settings=GPTQSettings(true_sequential=True)).needs.sequential
    assert ActSpec().settings == FPTQSettings() and (ActSpec().settings.v0, ActSpec().settings.v1) == (
        15.0,
        150.0,
    )
    assert ActSpec(strategy="per_token_dynamic").settings.__class__.__name__ == "NoSettings"
    with pytest.raises(ValueError, match="settings must be GPTQSettings"):
        WeightSpec(algo="gptq", settings=FPTQSettings())
    q = QuantScheme(name="sq", weight=WeightSpec(), act=ActSpec(equalizer="smoothquant"))
    assert q.used_transforms == ("smoothquant",) and q.transform_settings("smoothquant").alpha == 0.5


def test_needs_and_data_free():
    dyn = ActSpec(strategy="per_token_dynamic")
    assert QuantScheme(name="d", weight=WeightSpec(), act=dyn).data_free
    assert QuantScheme(name="d", weight=WeightSpec(mse=True)).data_free
    assert not QuantScheme(name="s", weight=WeightSpec(), act=ActSpec()).data_free
    assert not QuantScheme(name="g", weight=WeightSpec(algo="gptq")).data_free
    # an override to a static mode reads a calibration range
    assert not QuantScheme(
        name="o", act=ActSpec(strategy="per_token_dynamic", overrides={"*.q_proj": "per_tensor_static"})
    ).data_free
    assert not QuantScheme(name="t", weight=WeightSpec(), act=dyn, transforms=("smoothquant",)).data_free
