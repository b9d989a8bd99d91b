"""The plug-in contract: a method is one file (settings, function, needs) registered there.

The end-to-end test writes a toy weight quantizer and a toy activation strategy, each as one new
file in a temporary package, plus one YAML option each in a temporary config folder; nothing of
fptq is edited. They are found through $FPTQ_PLUGINS, run in a `-m` sweep of fptq-run, and the
table that fptq-report builds shows each one's own setting as a column.
"""

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TEXT, fptq_env
from fptq.quant.methods import (
    ACT_STRATEGIES,
    TRANSFORMS,
    WEIGHT_METHODS,
    MethodRegistry,
    Needs,
    WeightMethod,
    coerce_settings,
)

TOY_WEIGHT = '''
"""A toy weight quantizer: round to nearest on a range shrunk by `shrink` (one file, one setting)."""
from dataclasses import dataclass

import torch

from fptq.quant.methods import WEIGHT_METHODS, Needs, WeightMethod, check
from fptq.quant.primitives import quantize_weight


@dataclass(frozen=True)
class ToyShrinkSettings:
    shrink: float = 1.0

    def __post_init__(self):
        check(0 < self.shrink <= 1, f"toy.shrink must be in (0, 1], got {self.shrink}")


@WEIGHT_METHODS.register
class ToyShrink(WeightMethod):
    name = "toy"
    Settings = ToyShrinkSettings
    NEEDS = Needs()

    def quantize(self, W, layout, spec, stats, name):
        clip = torch.full((W.shape[0], layout.n_groups), spec.settings.shrink)
        return quantize_weight(W.float(), spec.grid, layout, clip)
'''

TOY_ACT = '''
"""A toy activation strategy: per-tensor static below a threshold, per-token dynamic above it."""
from dataclasses import dataclass

from fptq.quant.methods import ACT_STRATEGIES, ActStrategy, Needs
from fptq.quant.modes import LayerMode


@dataclass(frozen=True)
class ToyThresholdSettings:
    v: float = 10.0


@ACT_STRATEGIES.register
class ToyThreshold(ActStrategy):
    name = "toy_threshold"
    Settings = ToyThresholdSettings
    NEEDS = Needs(ranges=True)

    def choose(self, v, can_lae, settings):
        return LayerMode.STATIC if v < settings.v else LayerMode.DYNAMIC
'''

WEIGHT_YAML = """# @package quant.weight
bits: 4
group_size: 32
algo: toy
toy: {shrink: 0.9}
"""

ACT_YAML = """# @package quant.act
bits: 8
strategy: toy_threshold
toy_threshold: {v: 10.0}
"""


def test_registries_hold_the_builtin_methods():
    assert WEIGHT_METHODS.names() == ["awq", "gptq", "qoq", "rtn"]
    assert ACT_STRATEGIES.names() == ["auto", "fptq", "lae_static", "per_tensor_static", "per_token_dynamic"]
    assert TRANSFORMS.names() == [
        "awq",
        "lae",
        "online_rotation",
        "quarot",
        "smooth_attention",
        "smoothquant",
        "spinquant",
    ]
    assert {t.kind for _, t in TRANSFORMS.items()} == {"scale", "online", "model"}
    assert WEIGHT_METHODS.get("gptq").needs(WEIGHT_METHODS.get("gptq").settings()).hessian
    assert not WEIGHT_METHODS.get("rtn").needs(None).calibration


def test_registry_refuses_bad_methods():
    reg = MethodRegistry("weight quantizer", WeightMethod)

    class Nameless(WeightMethod):
        pass

    with pytest.raises(ValueError, match="needs a `name`"):
        reg.register(Nameless)

    @dataclasses.dataclass
    class Mutable:
        x: int = 0

    class Loose(WeightMethod):
        name = "loose"
        Settings = Mutable

    with pytest.raises(TypeError, match="frozen dataclass"):
        reg.register(Loose)
    with pytest.raises(ValueError, match="unknown weight quantizer 'nope'; known"):
        WEIGHT_METHODS.get("nope")


def test_settings_are_coerced_and_checked():
    S = WEIGHT_METHODS.get("gptq").Settings
    assert coerce_settings(S, {"damp": 0.1}, "gptq").damp == 0.1
    assert coerce_settings(S, None, "gptq") == S()
    with pytest.raises(ValueError, match="gptq has no setting 'dmp'"):
        coerce_settings(S, {"dmp": 0.1}, "gptq")
    assert Needs(hessian=True) | Needs(sample_rows=True) == Needs(hessian=True, sample_rows=True)


def test_a_plugin_is_one_file_and_one_yaml(tmp_path):
    pkg = tmp_path / "plugins" / "toy_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "toy_weight.py").write_text(textwrap.dedent(TOY_WEIGHT))
    (pkg / "toy_act.py").write_text(textwrap.dedent(TOY_ACT))
    conf = tmp_path / "toy_conf"
    (conf / "weight").mkdir(parents=True)
    (conf / "act").mkdir()
    (conf / "weight" / "int4_g32_toy.yaml").write_text(WEIGHT_YAML)
    (conf / "act" / "toy_threshold.yaml").write_text(ACT_YAML)
    env = fptq_env(tmp_path)
    env["PYTHONPATH"] = f"{tmp_path / 'plugins'}:{env.get('PYTHONPATH', '')}"
    env["FPTQ_PLUGINS"] = "toy_pkg.toy_weight, toy_pkg.toy_act"
    results = tmp_path / "results"
    (tmp_path / "wiki.txt").write_text(TEXT)
    run = [
        str(Path(sys.executable).with_name("fptq-run")),
        "-m",
        "debug=tiny",
        f"data.wikitext2={tmp_path / 'wiki.txt'}",
        "eval.progress=false",
        "experiment_name=toy",
        f"hydra.searchpath=[file://{conf}]",
        "weight=int4_g32_toy",
        "act=toy_threshold",
        "quant.weight.toy.shrink=0.8,1.0",
        "quant.act.toy_threshold.v=1.0,1000.0",
        f"paths.results_dir={results}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    proc = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = sorted((results / "rows").glob("*.json"))
    assert len(rows) == 4
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("fptq-report")),
            "--results",
            str(results),
            "-e",
            "toy",
            "--print",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    header = next(line for line in out.splitlines() if line.startswith("| model"))
    assert "act.toy_threshold.v" in header and "weight.toy.shrink" in header, header
    cells = [line for line in out.splitlines() if line.startswith("| tiny-llama")]
    assert len(cells) == 4 and any("| 0.8 |" in c for c in cells) and any("| 1000 |" in c for c in cells)
    # a typo in a plug-in's setting fails at compose time, before any work
    bad = [a for a in run if a != "-m" and "," not in a and "sweep.dir" not in a] + [
        "quant.weight.toy.shrnk=0.5"
    ]
    proc = subprocess.run(bad, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "shrnk" in proc.stdout + proc.stderr
    # without the plug-in, its option names an unknown quantizer with the known ones
    env.pop("FPTQ_PLUGINS")
    proc = subprocess.run(bad[:-1], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "toy" in proc.stdout + proc.stderr
