"""fptq-report on a small fixture store: the paper-layout tables (golden markdown), published
numbers beside ours, LaTeX, figures, the index, and the console script."""

import json
import subprocess
import sys

import pytest

from fptq.analysis.published import load_published
from fptq.analysis.report import build_report
from fptq.analysis.tables import V0, V1, to_latex, v0v1_table
from fptq.study.row import Row
from fptq.study.store import ResultStore

ACC = dict(
    lambada_openai_acc=0.70,
    mmlu_humanities=0.33,
    mmlu_stem=0.30,
    mmlu_social_sciences=0.40,
    mmlu_other=0.38,
    mmlu_avg=0.35,
    piqa_acc=0.78,
    commonsense_avg_acc=0.745,
)


def _row(exp, scheme, t, **kw):
    """A row written in the version-1 flat layout (read through Row.from_dict's migration)."""
    base = dict(
        experiment=exp,
        model="llama-7b",
        model_dtype="float16",
        scheme=scheme,
        finished_at=f"2026-01-01T00:00:{t:02d}",
        seqlen=2048,
        windows_wikitext2=148,
        fp_ppl_wikitext2=5.68,
        device="cuda",
        code_version="abc123",
        eval_limit=None,
        seed=0,
        act_strategy="fptq" if "fptq" in scheme else None,
    )
    return Row.from_dict(dict(base, **kw))


@pytest.fixture
def store(tmp_path):
    s = ResultStore(str(tmp_path / "results"))
    s.put("k0", _row("main", "fp", 0, ppl_wikitext2=5.68, **ACC))
    s.put("k1", _row("main", "w8a8_smoothquant", 1, ppl_wikitext2=5.75, n_per_token_dynamic=224))
    fptq = dict(ACC, mmlu_avg=0.3150, commonsense_avg_acc=0.7320, lambada_openai_acc=0.69)
    layers = {
        "layers": [
            {
                "name": "model.layers.0.self_attn.q_proj",
                "v": 30.0,
                "strategy": "lae_static",
                "transform": "lae",
                "output_sqnr": 30.0,
            },
            {
                "name": "model.layers.0.mlp.down_proj",
                "v": 900.0,
                "strategy": "per_token_dynamic",
                "transform": "none",
                "output_sqnr": 20.0,
            },
            {
                "name": "model.layers.1.mlp.down_proj",
                "v": 9.0,
                "strategy": "per_tensor_static",
                "transform": "none",
                "output_sqnr": 24.0,
            },
        ]
    }
    s.put(
        "k2",
        _row("main", "w4a8_fptq", 2, ppl_wikitext2=6.01, v0=15.0, v1=150.0, quantize_s=612.4, **fptq),
        layers,
    )
    s.put(
        "old", _row("main", "w4a8_fptq", 1, ppl_wikitext2=99.0, v0=15.0, v1=150.0)
    )  # replaced: same key below
    s.put("old", _row("main", "w4a8_fptq", 3, ppl_wikitext2=6.02, v0=15.0, v1=150.0, seed=1))
    for i, (v0, v1, p) in enumerate([(5, 150, 6.2), (15, 150, 6.0), (5, 500, 6.5), (15, 500, 6.3)]):
        s.put(
            f"a{i}", _row("ablation_v0v1", "w4a8_fptq", 10 + i, v0=float(v0), v1=float(v1), ppl_wikitext2=p)
        )
    return s


GOLDEN_PPL = """**Perplexity (token perplexity, GPTQ protocol)**

| model | method | seed | WikiText-2 | WikiText-2 vs FP | quantize s | act layers | static |
|---|---|---|---|---|---|---|---|
| llama-7b | FP16 | 0 | 5.68 |  |  |  |  |
|  | published |  | 5.68 | n/p |  |  |  |
|  | ours - published |  | +0.00 |  |  |  |  |
| llama-7b | SmoothQuant W8A8 | 0 | 5.75 | +0.07 |  | per_token_dynamic=224 | 0% |
|  | published |  | 5.73 | n/p |  |  |  |
|  | ours - published |  | +0.02 |  |  |  |  |
| llama-7b | FPTQ W4A8 | 0 | 6.01 | +0.33 | 612 |  |  |
| llama-7b | FPTQ W4A8 | 1 | 6.02 | +0.34 |  |  |  |

- WikiText-2: 148 windows of 2048 tokens (the whole test set is 148 windows of 2048 for WikiText-2; fewer windows are not comparable with published whole-set numbers).
- n/p: not published. Published numbers (analysis/published.yaml v1):
- [qserve_readme] QServe / QoQ README (mit-han-lab/omniserve), WikiText-2 perplexity table (WikiText-2 test, token perplexity, seqlen 2048 (GPTQ protocol), whole test set)
"""

GOLDEN_ACC = """**Accuracy (%, lm-eval acc)**

| model | method | LAMBADA | MMLU Hums | STEM | Social | Other | MMLU Avg | PIQA | CS Avg |
|---|---|---|---|---|---|---|---|---|---|
| llama-7b | FP16 | 70.00 | 33.00 | 30.00 | 40.00 | 38.00 | 35.00 | 78.00 | 74.50 |
|  | published | n/p | n/p | n/p | n/p | n/p | 35.20 | n/p | 74.51 |
|  | ours - published |  |  |  |  |  | -0.20 |  | -0.01 |
| llama-7b | FPTQ W4A8 | 69.00 | 33.00 | 30.00 | 40.00 | 38.00 | 31.50 | 78.00 | 73.20 |
|  | published | n/p | n/p | n/p | n/p | n/p | 32.02 | n/p | 73.42 |
|  | ours - published |  |  |  |  |  | -0.52 |  | -0.22 |

- CS Avg: mean acc over the common-sense tasks run; MMLU 5-shot, category averages weighted by questions.
- n/p: not published. Published numbers (analysis/published.yaml v1):
- [fptq_table7] Li et al., FPTQ: Fine-grained Post-Training Quantization for Large Language Models, arXiv 2308.15987, Table 7 (LLaMA-7B, GPTQ on top of LAE) (MMLU 5-shot; common-sense average over the paper's zero-shot task set)
"""

GOLDEN_V0V1 = """**WikiText-2 perplexity over FPTQ's thresholds**

| v0 \\ v1 | 150 | 500 |
|---|---|---|
| 5 | 6.20 | 6.50 |
| 15 | 6.00 | 6.30 |

- v < v0: per-tensor static; v0 <= v <= v1: LAE + static (norm-fed layers); v > v1: per-token dynamic (the paper's v0 = 15, v1 = 150).
"""


def test_report_tables_match_golden(store, tmp_path):
    out = tmp_path / "reports"
    written = build_report(str(tmp_path / "results"), out)
    main = out / "main"
    assert (main / "perplexity.md").read_text() == GOLDEN_PPL
    assert (main / "accuracy.md").read_text() == GOLDEN_ACC
    assert (out / "ablation_v0v1" / "v0v1.md").read_text() == GOLDEN_V0V1
    names = {p.name for p in written["main"]}
    for f in (
        "perplexity.tex",
        "accuracy.tex",
        "layers.md",
        "act_range.png",
        "act_range.pdf",
        "ppl_wikitext2.png",
        "accuracy.pdf",
        "rows.jsonl",
        "index.md",
    ):
        assert f in names, f
    assert {"v0v1_heatmap.png", "v0v1_heatmap.pdf", "v0v1.tex"} <= {p.name for p in written["ablation_v0v1"]}
    assert len((main / "rows.jsonl").read_text().splitlines()) == 4  # the replaced row is gone
    index = (out / "index.md").read_text()
    assert "[main](main/index.md) | 4 |" in index and "[ablation_v0v1](ablation_v0v1/index.md) | 4 |" in index
    exp_index = (main / "index.md").read_text()
    for link in ("perplexity.tex", "accuracy.md", "act_range.png", "act_range.pdf", "rows.jsonl"):
        assert f"({link})" in exp_index and (main / link).is_file()
    layers = (main / "layers.md").read_text()
    assert (
        "| down_proj | 2 | 9.0 | 900.0 | 900.0 | per_tensor_static=1 per_token_dynamic=1 | 0 | 22.0 |"
        in layers
    )


def test_latex_is_booktabs_and_escaped(store, tmp_path):
    build_report(str(tmp_path / "results"), tmp_path / "r")
    tex = (tmp_path / "r" / "main" / "accuracy.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\textit{published}" in tex and "74.51" in tex and "\\%" in tex
    t = v0v1_table(
        [
            Row("e", "m", "w4a8_fptq", settings={V0: 1.0, V1: 2.0}, metrics={"ppl_wikitext2": 3.0}),
            Row("e", "m", "w4a8_fptq", settings={V0: 4.0, V1: 5.0}, metrics={"ppl_wikitext2": 6.0}),
        ]
    )
    assert "v0 \\textbackslash{} v1" in to_latex(t)


def test_published_file_is_consistent():
    p = load_published()
    assert p.version >= 1 and p.get("llama-7b", "w4a8_fptq", "mmlu_avg").value == pytest.approx(0.3202)
    assert p.get("llama-2-7b", "fp", "ppl_wikitext2").value == 5.47
    assert p.get("llama-2-7b", "w4a8_fptq", "ppl_wikitext2") is None  # not published: never invented


def test_console_script_and_unknown_experiment(store, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "fptq.analysis.report",
        "--results",
        str(tmp_path / "results"),
        "--out",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run(cmd + ["-e", "main"], capture_output=True, text=True, check=True)
    assert "main: " in proc.stdout and (tmp_path / "o" / "main" / "index.md").is_file()
    proc = subprocess.run(cmd + ["-e", "nope"], capture_output=True, text=True)
    assert proc.returncode != 0 and "no rows for ['nope']" in proc.stderr and "main" in proc.stderr


def test_a_foreign_store_entry_is_skipped_and_reported_and_an_empty_store_fails(store, tmp_path):
    (tmp_path / "results" / "rows" / "x.json").mkdir()
    cmd = [sys.executable, "-m", "fptq.analysis.report", "--out", str(tmp_path / "o"), "--results"]
    proc = subprocess.run(cmd + [str(tmp_path / "results")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "x.json: not a regular file; skipped" in (tmp_path / "o" / "index.md").read_text()
    (tmp_path / "empty" / "rows" / "x.json").mkdir(parents=True)
    proc = subprocess.run(cmd + [str(tmp_path / "empty")], capture_output=True, text=True)
    assert proc.returncode != 0 and "no complete rows in the results store" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(cmd + [str(tmp_path / "nonexistent")], capture_output=True, text=True)
    assert proc.returncode != 0 and "no results store at" in proc.stderr


def test_report_to_wandb_offline(store, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    build_report(str(tmp_path / "results"), tmp_path / "w", ["main"], wandb_mode="offline")
    media = list((tmp_path / "w" / "main" / "wandb").rglob("media/**/*"))
    assert any(p.suffix == ".png" for p in media) and any("table" in p.parts for p in media)
    json.dumps([str(p) for p in media])
