from fptq.results import ResultStore
from fptq.tables import latest, load_results, ppl_table, to_markdown

GOLDEN = """| model | scheme | weight | act | wikitext2 ppl | wikitext2 Δfp | wikitext2 windows | quantize s | act layers |
|---|---|---|---|---|---|---|---|---|
| m | fp | none | none | 20.0 |  | 40 |  |  |
| m | w4a8_fptq | int4_g128 | fptq | 21.5 | 1.5 | 40 | 95.2 | lae_static=2 per_tensor_static=5 |
"""


def test_table_from_store_matches_golden(tmp_path):
    store = ResultStore(str(tmp_path))
    base = dict(experiment="e", model="m", overrides="", windows_wikitext2=40, fp_ppl_wikitext2=20.0)
    store.append(
        dict(base, scheme="w4a8_fptq", ppl_wikitext2=99.0, finished_at="2026-01-01T00:00:00", quantize_s=1.0)
    )
    store.append(
        dict(
            base,
            scheme="fp",
            weight="none",
            act="none",
            ppl_wikitext2=20.0,
            finished_at="2026-01-01T00:00:01",
        )
    )
    store.append(
        dict(
            base,
            scheme="w4a8_fptq",
            weight="int4_g128",
            act="fptq",
            ppl_wikitext2=21.5,
            finished_at="2026-01-02T00:00:00",
            quantize_s=95.21,
            n_lae_static=2,
            n_per_tensor_static=5,
        )
    )
    store.append(
        dict(base, experiment="other", scheme="x", ppl_wikitext2=1.0, finished_at="2026-01-03T00:00:00")
    )
    df = latest(load_results(str(tmp_path), "e"))
    table = ppl_table(df.sort_values("scheme"), sets=["wikitext2"])
    assert to_markdown(table) == GOLDEN


def test_layer_report_script(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

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
    script = Path(__file__).resolve().parents[1] / "analysis" / "layer_report.py"
    out = subprocess.run(
        [sys.executable, str(script), str(f)], capture_output=True, text=True, check=True
    ).stdout
    assert (
        "| down_proj | 2 | 20.0 | 200.0 | 200.0 | per_tensor_static=1 per_token_dynamic=1 | 0 | 15.0 |" in out
    )
    assert "| q_proj | 1 | 30.0 | 30.0 | 30.0 | lae_static=1 | 1 | 25.0 |" in out
