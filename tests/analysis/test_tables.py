import subprocess
import sys
from pathlib import Path

from fptq.analysis.tables import V0, latest, method_name, perplexity_table, sort_rows, varying_settings
from fptq.study.row import Row
from fptq.study.store import ResultStore


def R(**kw) -> Row:
    """A row written in the version-1 flat layout (read through Row.from_dict's migration)."""
    return Row.from_dict(dict(dict(experiment="e", model="m", scheme="s"), **kw))


FPTQ_REPORT = str(Path(sys.executable).with_name("fptq-report"))


def test_latest_keeps_the_newest_row_per_job():
    rows = [
        R(job_key="a", finished_at="2026-01-01", ppl=1),
        R(job_key="a", finished_at="2026-01-02", ppl=2),
        R(model="m", scheme="s", overrides="x", finished_at="2026-01-01", ppl=3),  # legacy, no key
        R(model="m", scheme="s", overrides="x", finished_at="2026-01-03", ppl=4),
    ]
    assert sorted(r["ppl"] for r in latest(rows)) == [2, 4]


def test_varying_settings_are_those_that_split_a_method():
    rows = [
        R(model="m", scheme="fp", weight="none"),
        R(
            model="m",
            scheme="w4a8_fptq",
            weight="int4_g128",
            act_strategy="fptq",
            v0=15.0,
            w_bits=4,
            group_size=128,
        ),
        R(
            model="m",
            scheme="w4a8_fptq",
            weight="int4_g128",
            act_strategy="fptq",
            v0=5.0,
            w_bits=4,
            group_size=128,
        ),
    ]
    assert varying_settings(rows) == [V0]  # weight differs only between methods
    assert [r.get(V0) for r in sort_rows(rows, [V0])] == [None, 5.0, 15.0]  # fp first, then by v0
    assert [method_name(r) for r in rows[:2]] == ["FP", "FPTQ W4A8"]


def test_perplexity_table_gap_is_signed_against_fp():
    rows = [
        R(
            model="m",
            scheme="w4a8_rtn",
            ppl_wikitext2=21.5,
            fp_ppl_wikitext2=20.0,
            windows_wikitext2=40,
            seqlen=2048,
        )
    ]
    t = perplexity_table(rows)
    assert t.columns == ["model", "method", "WikiText-2", "WikiText-2 vs FP"]
    assert t.rows == [["m", "RTN W4A8", "21.50", "+1.50"]]


def test_analysis_scripts_run_on_a_store(tmp_path):
    store = ResultStore(str(tmp_path))
    for i, (v0, v1) in enumerate([(5, 150), (15, 150), (5, 500), (15, 500)]):
        store.put(
            f"k{i}",
            Row(
                "ablation_v0v1",
                "m",
                "w4a8_fptq",
                settings={"act.strategy": "fptq", "act.fptq.v0": v0, "act.fptq.v1": v1},
                metrics={"ppl_wikitext2": 10.0 + i},
            ),
        )
    out = subprocess.run(
        [FPTQ_REPORT, "--results", str(tmp_path), "-e", "ablation_v0v1", "--print"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| 15 | 11.00 | 13.00 |" in out


def test_layer_report_script(tmp_path):
    import json

    rep = {
        "layers": [
            {
                "name": "model.layers.0.mlp.down_proj",
                "v": 200.0,
                "strategy": "per_token_dynamic",
                "transform": "none",
                "output_sqnr": 20.0,
            },
            {
                "name": "model.layers.1.mlp.down_proj",
                "v": 20.0,
                "strategy": "per_tensor_static",
                "transform": "none",
                "output_sqnr": 10.0,
            },
            {
                "name": "model.layers.0.self_attn.q_proj",
                "v": 30.0,
                "strategy": "lae_static",
                "transform": "lae",
                "output_sqnr": 25.0,
            },
        ]
    }
    f = tmp_path / "quant_report.json"
    f.write_text(json.dumps(rep))
    out = subprocess.run([FPTQ_REPORT, "--layers", str(f)], capture_output=True, text=True, check=True).stdout
    assert (
        "| down_proj | 2 | 20.0 | 200.0 | 200.0 | per_tensor_static=1 per_token_dynamic=1 | 0 | 15.0 |" in out
    )
    assert "| q_proj | 1 | 30.0 | 30.0 | 30.0 | lae_static=1 | 1 | 25.0 |" in out


def test_rotation_table_shows_what_each_run_built():
    from fptq.analysis.tables import rotation_table, to_markdown

    quarot = {"quarot.r1": "hadamard 36x16", "quarot.r4": "hadamard 12x128", "quarot.untied_bytes": 113246208}
    spin = {
        "spinquant.r1": "learned from hadamard 36x16",
        "spinquant.steps": 20,
        "spinquant.loss_start": 3.5,
        "spinquant.loss_end": 3.25,
        "spinquant.train_seconds": 250.4,
        "spinquant.untied_bytes": 113246208,
    }
    rows = [
        Row("e", "smollm2", "w4a8_quarot_rtn", quant=quarot),
        Row("e", "smollm2", "w4a8_spinquant", quant=spin),
        Row("e", "smollm2", "w4a8_fptq", quant={"n_per_tensor_static": 3}),
    ]
    md = to_markdown(rotation_table(rows))
    assert "| smollm2 | QuaRot W4A8 (RTN) | quarot | hadamard 36x16 | hadamard 12x128 | 108.0 |" in md
    assert "learned from hadamard 36x16" in md and "| 20 | 3.500 | 3.250 | 250 |" in md
    assert "FPTQ W4A8 |" not in md  # a run with no rotation has no row
    assert rotation_table(rows[2:]) is None
