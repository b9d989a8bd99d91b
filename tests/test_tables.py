from fptq.results import ResultStore
from fptq.tables import latest, load_results, ppl_table, to_markdown

GOLDEN = """| model | scheme | wikitext2 ppl | wikitext2 Δfp | wikitext2 windows | quantize s | act layers |
|---|---|---|---|---|---|---|
| m | fp | 20.0 |  | 40 |  |  |
| m | w4a8_fptq | 21.5 | 1.5 | 40 | 95.2 | lae_static=2 per_tensor_static=5 |
"""


def test_table_from_store_matches_golden(tmp_path):
    store = ResultStore(str(tmp_path))
    base = dict(experiment="e", model="m", overrides="", windows_wikitext2=40, fp_ppl_wikitext2=20.0)
    store.append(
        dict(base, scheme="w4a8_fptq", ppl_wikitext2=99.0, finished_at="2026-01-01T00:00:00", quantize_s=1.0)
    )
    store.append(dict(base, scheme="fp", ppl_wikitext2=20.0, finished_at="2026-01-01T00:00:01"))
    store.append(
        dict(
            base,
            scheme="w4a8_fptq",
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
