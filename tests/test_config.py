"""Every config composes and validates; typos and bad values fail before any work."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from fptq.config import register_configs, to_run_spec

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()
GROUPS = ["model", "quant", "calib", "eval", "data", "logger", "paths"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


@pytest.mark.parametrize("group, option", OPTIONS)
def test_every_option_composes_and_validates(group, option):
    spec = to_run_spec(_compose([f"{group}={option}"]))
    assert spec is not None


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_debug(experiment):
    spec = to_run_spec(_compose([f"experiment={experiment}", "debug=tiny"]))
    assert spec.model.name == "tiny-llama"
    assert spec.experiment_name == experiment


def test_quant_presets_are_what_their_names_say():
    by = {o: to_run_spec(_compose([f"quant={o}"])).quant for g, o in OPTIONS if g == "quant"}
    assert by["fp"].is_float
    assert by["w4a8_fptq"].act.strategy == "fptq" and by["w4a8_fptq"].weight.algo == "rtn"
    assert (
        by["w4a8_fptq"].weight.group == 128 and by["w4a8_fptq"].act.v0 == 15 and by["w4a8_fptq"].act.v1 == 150
    )
    assert by["w4a8_fptq_gptq"].weight.algo == "gptq"
    assert by["w8a8_smoothquant"].transforms == ("smoothquant",) and by["w8a8_smoothquant"].weight.bits == 8
    assert by["w4a16_gptq_g128"].act is None and by["w4a16_awq_g128"].weight.algo == "awq"
    assert by["w4a8_rtn"].weight.group == -1 and by["w4a8_rtn"].act.strategy == "per_token_dynamic"
    for name, q in by.items():
        assert q.name == name


def test_typo_fails_at_compose():
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        _compose(["quant.weight.bitz=4"])


def test_wrong_type_fails_at_compose():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        _compose(["quant.weight.bits=four"])


@pytest.mark.parametrize(
    "override, msg",
    [
        ("quant.weight.bits=9", "weight.bits"),
        ("quant.weight.group_size=0", "group_size"),
        ("quant.act.v0=200", "v0 <= v1"),
        ("quant.smoothquant_alpha=1.5", "alpha"),
        ("eval.datasets=[wikitext3]", "wikitext3"),
        ("model.source=s3", "model.source"),
    ],
)
def test_bad_values_fail_before_any_work(override, msg):
    with pytest.raises(ValueError, match=msg):
        to_run_spec(_compose([override]))


def test_unknown_model_lists_available():
    with pytest.raises(ConfigCompositionException) as e:
        _compose(["model=llama-9000"])
    assert "smollm2-135m" in str(e.value.__cause__ or e.value) or "Available options" in str(e.value)
