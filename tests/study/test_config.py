"""Every config composes and validates to what its name says; typos and bad values fail early."""

import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from fptq.study.config import register_configs, to_run_spec

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()
GROUPS = ["model", "quant", "weight", "act", "calib", "eval", "data", "logger", "paths"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

# preset -> (weight axis, act axis, transforms): the compositions, and the old numbers' settings
PRESETS = {
    "fp": ("none", "none", ()),
    "w8a8_rtn": ("int8_channel", "per_token_dynamic", ()),
    "w8a8_smoothquant": ("int8_channel", "per_token_dynamic", ("smoothquant",)),
    "w4a16_rtn_g128": ("int4_g128", "none", ()),
    "w4a16_gptq_g128": ("int4_g128_gptq", "none", ()),
    "w4a16_awq_g128": ("int4_g128_asym_awq", "none", ("awq",)),
    "w4a8_rtn": ("int4_channel", "per_token_dynamic", ()),
    "w4a8_dynamic": ("int4_g128", "per_token_dynamic", ()),
    "w4a8_static": ("int4_g128", "per_tensor_static", ()),
    "w4a8_smoothquant": ("int4_g128", "per_token_dynamic", ("smoothquant",)),
    "w4a8_fptq": ("int4_g128", "fptq", ()),
    "w4a8_fptq_gptq": ("int4_g128_gptq", "fptq", ()),
    "w4a8_fptq_sq": ("int4_g128", "fptq", ()),
    "w4a16_rtn_g128_half": ("int4_g128_half", "none", ()),
    "w4a8_dynamic_half": ("int4_g128_half", "per_token_dynamic_half", ()),
    "w4a16_rtn_g32_fzero": ("int4_g32_asym_fzero", "none", ()),
    "w4a16_gptq_g128_ao": ("int4_g128_gptq", "none", ()),
    "w4a16_gptq_g128_ts": ("int4_g128_gptq", "none", ()),
    "w4a16_gptq_g128_mse": ("int4_g128_mse_gptq", "none", ()),
    "w4a16_gptq_g128_best": ("int4_g128_mse_gptq", "none", ()),
    "w4a8_fptq_linear": ("int4_g128", "fptq_linear", ()),
    "w4a8_auto": ("int4_g128", "auto", ()),
    "w4a8_auto_sq": ("int4_g128", "auto", ("smoothquant",)),
    "kv_only": ("none", "none", ()),
    "w4a8_quarot_rtn": ("int4_g128", "per_token_dynamic", ("quarot",)),
    "w4a8_quarot_rtn_static": ("int4_g128", "per_tensor_static", ("quarot",)),
    "w4a8_quarot_rtn_static_mse": ("int4_g128", "per_tensor_static_mse", ("quarot",)),
    "w4a8_quarot_gptq": ("int4_g128_gptq", "per_token_dynamic", ("quarot",)),
    "w4a8_quarot_gptq_static": ("int4_g128_gptq", "per_tensor_static", ("quarot",)),
    "w4a8_quarot_gptq_static_mse": ("int4_g128_gptq", "per_tensor_static_mse", ("quarot",)),
    "w4a8_static_mse": ("int4_g128", "per_tensor_static_mse", ()),
    "w4a8_spinquant": ("int4_g128_gptq", "per_token_dynamic", ("spinquant",)),
    "w4a8_fptq_quarot": ("int4_g128", "fptq", ("quarot",)),
    "w4a8kv4_qoq": ("int4_g128_asym_qoq", "per_token_dynamic", ("quarot", "smooth_attention")),
    "w4a8_qoq": ("int4_g128_asym_qoq", "per_token_dynamic", ("quarot", "smooth_attention")),
}


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


def _axes(q):
    return (q.weight.label if q.weight else "none", q.act.label if q.act else "none", q.transforms)


@pytest.mark.parametrize("group, option", OPTIONS)
def test_every_option_composes_to_what_it_names(group, option):
    extra = ["model.path=/a/checkpoint"] if option == "saved" else []  # its path is required
    spec = to_run_spec(_compose([f"{group}={option}", *extra]))
    q = spec.quant
    if group == "model":
        assert spec.model.name == option
    elif group == "quant":
        assert q.name == option and _axes(q) == PRESETS[option]
    elif group == "weight":
        assert _axes(q)[0] == option and q.name == "w4a8_fptq"  # the default preset, this weight
    elif group == "act":
        assert _axes(q)[1] == option and _axes(q)[0] == "int4_g128"
    elif group == "calib":
        c = spec.calib
        assert option == f"{c.source}_{c.n_samples}x{c.seqlen}"
    elif group == "eval":
        raw = yaml.safe_load((CONF / "eval" / f"{option}.yaml").read_text())
        assert spec.eval.datasets == tuple(raw.get("datasets", ["wikitext2"]))
        assert spec.eval.tasks == tuple(raw.get("tasks", ()))
        assert spec.eval.max_windows == raw.get("max_windows", 8)
    elif group == "logger":
        assert spec.logger.name == option
    else:  # data, paths: defaults
        assert spec.data.source == "auto" and spec.paths.results_dir


def test_every_preset_is_listed():
    assert sorted(PRESETS) == sorted(o for g, o in OPTIONS if g == "quant")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_debug(experiment):
    spec = to_run_spec(_compose([f"experiment={experiment}", "debug=tiny"]))
    assert spec.model.name == "tiny-llama"
    # its own table, or (a sweep that adds rows to another experiment's table) that experiment's
    assert (
        spec.experiment_name == experiment or (CONF / "experiment" / f"{spec.experiment_name}.yaml").is_file()
    )


def test_preset_settings_are_the_published_recipes():
    by = {o: to_run_spec(_compose([f"quant={o}"])).quant for o in PRESETS}
    assert by["fp"].is_float
    fptq = by["w4a8_fptq"]
    s = fptq.act.settings
    assert (s.v0, s.v1, s.middle_band, s.lae) == (15, 150, "static", True)
    assert fptq.weight.layout(576).group_size == 128 and fptq.weight.symmetric
    gptq = by["w4a16_gptq_g128"].weight.settings
    assert (gptq.damp, gptq.block_size, gptq.act_order) == (0.01, 128, False)
    awq = by["w4a16_awq_g128"]
    assert awq.transform_settings("awq").grid == 20 and awq.weight.settings.clip
    assert by["w4a8_fptq_sq"].act.equalizer == "smoothquant"
    assert by["w4a8_fptq_sq"].transform_settings("smoothquant").alpha == 0.5
    assert by["w8a8_smoothquant"].transform_settings("smoothquant").alpha == 0.5
    assert (
        by["w4a16_gptq_g128_best"].weight.settings.true_sequential and by["w4a16_gptq_g128_best"].weight.mse
    )
    assert by["w4a8_auto_sq"].act.settings.budget_db == 0.5


def test_axes_override_a_preset():
    q = to_run_spec(_compose(["quant=w4a16_rtn_g128", "weight=int4_g64", "act=per_token_dynamic"])).quant
    assert q.name == "w4a16_rtn_g128" and _axes(q) == ("int4_g64", "per_token_dynamic", ())
    q = to_run_spec(_compose(["quant=w4a8_fptq_sq", "quant.act.fptq.middle_band=dynamic"])).quant
    assert q.act.settings.middle_band == "dynamic" and q.act.equalizer == "smoothquant"


def test_typo_fails_at_compose():
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        _compose(["quant.weight.bitz=4"])


@pytest.mark.parametrize(
    "override, msg",
    [
        ("+quant.wieght.bits=8", "unknown config key 'quant.wieght'; did you mean 'quant.weight'"),
        ("+sed=5", "unknown config key 'sed'; did you mean 'seed'"),
        ("+quant.weight.gptqq.damp=0.1", "did you mean 'quant.weight.gptq'"),
        ("+quant.transform_args.quarto.r1=random", "did you mean 'quant.transform_args.quarot'"),
        ("+quant.weight.gptq.dmp=0.1", "gptq has no setting 'dmp'"),
        ("+eval.seqln=512", "did you mean 'eval.seqlen'"),
    ],
)
def test_added_unknown_keys_fail_before_any_work(override, msg):
    # Hydra's `+key=value` adds a key the schema refuses without the `+` (and Hydra's own typo message
    # suggests the `+`): it must not run the default job under the default job key
    cfg = _compose(["debug=tiny", override])
    with pytest.raises(ValueError, match=re.escape(msg)):
        to_run_spec(cfg)


def test_added_known_dict_keys_still_compose():
    assert to_run_spec(_compose(["debug=tiny", "+eval.windows.c4=3"])).eval.windows == {"c4": 3}


def test_wrong_type_fails_at_compose():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        _compose(["quant.weight.bits=four"])


@pytest.mark.parametrize(
    "override, msg",
    [
        ("quant.weight.bits=9", "weight.bits"),
        ("quant.weight.group_size=-1", "group_size"),
        ("quant.weight.algo=omniquant", "weight.algo must be one of .*'gptq'"),
        ("quant.act.fptq.v0=200", "v0 <= v1"),
        ("quant.act.strategy=smart", "act.strategy must be one of"),
        ("quant.transform_args.smoothquant.alpha=1.5", "alpha"),
        ("quant=w8a8_smoothquant quant.transform_args.smoothquant.alpha=1.5", "alpha"),
        ("quant.transforms=[hadamard]", "quant.transforms"),
        ("eval.datasets=[wikitext3]", "wikitext3"),
        ("eval.tasks=[piqa,mmlu_pro]", "mmlu_pro"),
        ("model.source=s3", "model.source"),
        ("backend=cuda_graphs", "backend"),
    ],
)
def test_bad_values_fail_before_any_work(override, msg):
    with pytest.raises(ValueError, match=msg):
        to_run_spec(_compose(override.split()))


@pytest.mark.parametrize("group, bad", [("model", "llama-9000"), ("weight", "int3_g128"), ("act", "smart")])
def test_unknown_option_lists_available(group, bad):
    with pytest.raises(ConfigCompositionException) as e:
        _compose([f"{group}={bad}"])
    assert "Available options" in str(e.value)


@pytest.mark.parametrize(
    "launcher, target, fields",
    [
        (
            "slurm",
            "SlurmLauncher",
            {
                "partition": "gpu",
                "gpus_per_node": 2,
                "timeout_min": 720,
                "mem_gb": 80,
                "array_parallelism": 4,
            },
        ),
        ("local", "LocalLauncher", {"gpus_per_node": 1, "timeout_min": 30}),
        ("slurm_local", "SlurmLauncher", {"partition": "debug", "max_num_timeout": 5, "cpus_per_task": 2}),
    ],
)
def test_launcher_presets_compose_and_every_field_overrides(launcher, target, fields):
    overrides = [f"hydra/launcher={launcher}", *[f"hydra.launcher.{k}={v}" for k, v in fields.items()]]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    lc = cfg.hydra.launcher
    assert lc._target_.endswith(target)
    assert {k: lc[k] for k in fields} == fields


def test_slurm_presets_requeue_after_a_time_limit():
    # hydra-submitit-launcher's default max_num_timeout is 0: a job reaching its time limit would
    # not be requeued, and with resume_blocks it would continue where it stopped
    for launcher in ("slurm", "slurm_local"):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True
            )
        assert cfg.hydra.launcher.max_num_timeout == 3 and cfg.hydra.launcher.signal_delay_s > 0


def test_run_folders_carry_a_random_id():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        a = compose(config_name="config", return_hydra_config=True)
        b = compose(config_name="config", return_hydra_config=True)
    da, db = str(a.hydra.run.dir), str(b.hydra.run.dir)
    ida, idb = da.rsplit("_", 1)[1], db.rsplit("_", 1)[1]
    assert ida != idb and len(ida) == 6 and int(ida, 16) >= 0  # two launches, two ids
    assert str(a.hydra.sweep.dir).rsplit("_", 1)[1] == da.rsplit("_", 1)[1]  # one id per launch
