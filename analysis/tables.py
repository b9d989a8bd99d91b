"""The study's tables from results-store rows, in the paper's layout, as markdown and LaTeX.

- accuracy: rows model x method; LAMBADA, MMLU Hums / STEM / Social / Other / Avg, each
  common-sense task and their average (lm-eval `acc`, in percent);
- perplexity: WikiText-2, C4, PTB (GPTQ protocol) and the gap to the float model;
- the v0/v1 grid, and a per-layer summary of the activation ranges and chosen strategies.

Rows that differ in a setting other than the method (an ablation's axis: v0, group size,
calibration data, the middle band...) get that setting as a column, found from the rows
themselves. Wherever `analysis/published.yaml` has a number for a row's model, method and metric, a
"published" row and a difference row follow it; "n/p" marks a number not published.
"""

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from fptq.analysis.published import PublishedSet
from fptq.eval.tasks import COMMONSENSE
from fptq.quant.act.fptq import FPTQSettings
from fptq.study.row import Row

V0, V1 = "act.fptq.v0", "act.fptq.v1"  # FPTQ's thresholds as the rows name them
SETS = ("wikitext2", "c4", "ptb")
SET_NAMES = {"wikitext2": "WikiText-2", "c4": "C4", "ptb": "PTB"}
# the paper's methods first, in its order; then the other schemes
METHODS = {
    "fp": "FP",
    "w8a8_smoothquant": "SmoothQuant W8A8",
    "w4a16_gptq_g128": "GPTQ W4A16 g128",
    "w4a8_fptq": "FPTQ W4A8",
    "w4a8_fptq_gptq": "FPTQ+GPTQ W4A8",
    "w8a8_rtn": "RTN W8A8",
    "w4a16_rtn_g128": "RTN W4A16 g128",
    "w4a16_awq_g128": "AWQ W4A16 g128",
    "w4a8_rtn": "RTN W4A8",
    "w4a8_smoothquant": "SmoothQuant W4A8",
    "w4a8_fptq_sq": "FPTQ (SQ equalizer) W4A8",
    "w4a8_static": "static W4A8",
    "w4a8_dynamic": "dynamic W4A8",
    "w4a16_rtn_g128_half": "RTN W4A16 g128 (half-range)",
    "w4a8_dynamic_half": "dynamic W4A8 (half-range)",
    "w4a16_rtn_g32_fzero": "RTN W4A16 g32 (float zero)",
    "w4a16_gptq_g128_ao": "GPTQ W4A16 g128 act-order",
    "w4a16_gptq_g128_ts": "GPTQ W4A16 g128 true-seq",
    "w4a16_gptq_g128_mse": "GPTQ W4A16 g128 MSE",
    "w4a16_gptq_g128_best": "GPTQ W4A16 g128 ao+ts+MSE",
    "w4a8_fptq_linear": "FPTQ W4A8 + linear-fed LAE",
    "w4a8_auto": "auto-policy W4A8",
    "w4a8_auto_sq": "auto-policy W4A8 (SmoothQuant)",
    "kv_only": "FP + KV cache",
    "w4a8_quarot_rtn": "QuaRot W4A8 (RTN)",
    "w4a8_quarot_rtn_static": "QuaRot W4A8 (RTN, static)",
    "w4a8_quarot_rtn_static_mse": "QuaRot W4A8 (RTN, static MSE)",
    "w4a8_quarot_gptq": "QuaRot W4A8 (GPTQ)",
    "w4a8_quarot_gptq_static": "QuaRot W4A8 (GPTQ, static)",
    "w4a8_quarot_gptq_static_mse": "QuaRot W4A8 (GPTQ, static MSE)",
    "w4a8_spinquant": "SpinQuant W4A8 (GPTQ)",
    "w4a8_fptq_quarot": "FPTQ W4A8 after QuaRot",
    "w4a8_static_mse": "static W4A8 (MSE range)",
    "w4a8kv4_qoq": "QoQ W4A8KV4",
    "w4a8_qoq": "QoQ W4A8 (float KV)",
}
TASK_NAMES = {
    "piqa": "PIQA",
    "arc_easy": "ARC-e",
    "arc_challenge": "ARC-c",
    "hellaswag": "HellaSwag",
    "winogrande": "WinoGrande",
    "boolq": "BoolQ",
    "openbookqa": "OBQA",
}
ACCURACY = [
    ("lambada_openai_acc", "LAMBADA"),
    ("mmlu_humanities", "MMLU Hums"),
    ("mmlu_stem", "STEM"),
    ("mmlu_social_sciences", "Social"),
    ("mmlu_other", "Other"),
    ("mmlu_avg", "MMLU Avg"),
    *[(f"{t}_acc", TASK_NAMES[t]) for t in COMMONSENSE],
    ("commonsense_avg_acc", "CS Avg"),
]
# the setting columns: the two axes' labels, then the row's flattened spec (`Row.settings`), so
# a new option, a method's setting or a plug-in's shows up wherever an experiment varies it
AXES = ("weight", "act")
# settings that never tell two methods' rows apart in a table (descriptions of the same run)
HIDDEN = {"calib.seed", "model.seed", "model.config_class"}
NOT_PUBLISHED = "n/p"


@dataclass
class Table:
    title: str
    columns: List[str]
    rows: List[List[str]]
    notes: List[str] = field(default_factory=list)
    kinds: List[str] = field(default_factory=list)  # per row: ours | published | delta

    def add(self, cells: Sequence[Any], kind: str = "ours") -> None:
        self.rows.append([_cell(c) for c in cells])
        self.kinds.append(kind)


# ---- selecting rows -------------------------------------------------------------------------------


def latest(rows: Iterable[Row]) -> List[Row]:
    """One row per job: the newest for each job key (legacy rows without one: per model, scheme
    and command-line overrides)."""
    best: Dict[Any, Row] = {}
    for r in sorted(rows, key=lambda r: r.finished_at):
        key = r.job_key or (r.model, r.scheme, r.get("overrides"))
        best[key] = r
    return list(best.values())


def setting_names(rows: Sequence[Row]) -> List[str]:
    """Every setting the rows carry: the axes' labels, then the flattened specs' keys in order."""
    names = list(AXES)
    for r in rows:
        names += [k for k in r.settings if k not in names and k not in HIDDEN]
    return names


def varying_settings(rows: Sequence[Row]) -> List[str]:
    """Settings that differ between rows of the same model and method (a row without the setting,
    e.g. one written before it existed, does not count as differing)."""
    groups: Dict[Tuple, List[Row]] = defaultdict(list)
    for r in rows:
        groups[(r.model, r.scheme)].append(r)

    def varies(s: str, g: List[Row]) -> bool:
        return len({_hashable(r.get(s)) for r in g if s in AXES or s in r.settings}) > 1

    return [s for s in setting_names(rows) if any(varies(s, g) for g in groups.values())]


def method_order(scheme: str) -> Tuple[int, str]:
    keys = list(METHODS)
    return (keys.index(scheme), "") if scheme in METHODS else (len(keys), scheme)


def sort_rows(rows: Sequence[Row], settings: Sequence[str]) -> List[Row]:
    return sorted(
        rows,
        key=lambda r: (
            str(r.get("model")),
            method_order(str(r.get("scheme"))),
            *[_sortable(r.get(s)) for s in settings],
        ),
    )


def method_name(row: Row) -> str:
    scheme = str(row.get("scheme"))
    if scheme == "fp":
        dtype = row.get("model.dtype")
        return {"float16": "FP16", "bfloat16": "BF16", "float32": "FP32"}.get(dtype, "FP")
    return METHODS.get(scheme, scheme)


# ---- tables ---------------------------------------------------------------------------------------


def accuracy_table(rows: Sequence[Row], published: Optional[PublishedSet] = None) -> Optional[Table]:
    cols = [(k, name) for k, name in ACCURACY if any(_num(r.get(k)) is not None for r in rows)]
    if not cols:
        return None
    metrics = [k for k, _ in cols]
    return _metric_table(
        "Accuracy (%, lm-eval acc)",
        rows,
        cols,
        published,
        fmt=lambda v, k="": f"{100 * v:.2f}",
        delta=lambda v: f"{100 * v:+.2f}",
        notes=_accuracy_notes(rows, metrics),
    )


def perplexity_table(rows: Sequence[Row], published: Optional[PublishedSet] = None) -> Optional[Table]:
    sets = [s for s in SETS if any(_num(r.get(f"ppl_{s}")) is not None for r in rows)]
    if not sets:
        return None
    cols: List[Tuple[str, str]] = []
    for s in sets:
        cols.append((f"ppl_{s}", SET_NAMES[s]))
        if any(r.get("scheme") != "fp" and _num(r.get(f"fp_ppl_{s}")) is not None for r in rows):
            cols.append((f"gap_{s}", f"{SET_NAMES[s]} vs FP"))
    rows = [replace(r, metrics={**r.metrics, **_gaps(r, sets)}) for r in rows]
    return _metric_table(
        "Perplexity (token perplexity, GPTQ protocol)",
        rows,
        cols,
        published,
        fmt=lambda v, k="": f"{v:+.2f}" if k.startswith("gap_") else f"{v:.2f}",
        delta=lambda v: f"{v:+.2f}",
        notes=_ppl_notes(rows, sets),
        extra=[
            ("quantize_s", "quantize s", lambda v: f"{v:.1f}" if v < 100 else f"{v:.0f}"),
            ("act_mix", "act layers", str),
            ("static_share", "static", lambda v: f"{100 * v:.0f}%"),
        ],
    )


def v0v1_table(rows: Sequence[Row], metric: str = "ppl_wikitext2") -> Optional[Table]:
    """FPTQ's thresholds as a grid (rows v0, columns v1), one cell per run."""
    grid = v0v1_grid(rows, metric)
    if grid is None:
        return None
    v0s, v1s, values = grid
    t = Table(
        f"{SET_NAMES.get(metric[4:], metric)} perplexity over FPTQ's thresholds",
        ["v0 \\ v1", *map(_fmt_num, v1s)],
        [],
    )
    for i, v0 in enumerate(v0s):
        t.add([_fmt_num(v0), *[("" if v is None else f"{v:.2f}") for v in values[i]]])
    t.notes.append(
        "v < v0: per-tensor static; v0 <= v <= v1: LAE + static (norm-fed layers); v > v1: per-token dynamic "
        f"(the paper's v0 = {FPTQSettings().v0:g}, v1 = {FPTQSettings().v1:g})."
    )
    return t


def v0v1_grid(rows: Sequence[Row], metric: str = "ppl_wikitext2"):
    pts = [(r.get(V0), r.get(V1), _num(r.get(metric))) for r in rows]
    pts = [(a, b, v) for a, b, v in pts if a is not None and b is not None and v is not None]
    v0s, v1s = sorted({a for a, _, _ in pts}), sorted({b for _, b, _ in pts})
    if len(v0s) < 2 or len(v1s) < 2:
        return None
    values: List[List[Optional[float]]] = [[None] * len(v1s) for _ in v0s]
    for a, b, v in pts:
        values[v0s.index(a)][v1s.index(b)] = v
    return v0s, v1s, values


# the tables of an experiment's report, in order: (file stem, builder(rows, published) -> Table or None).
# A new table is a function here and a line in this list; fptq-report writes its md and tex.
# what a whole-model transform recorded in its row (`quant.<transform>.<key>`), as columns
ROTATION_KEYS = (
    ("r1", "R1"),
    ("r2", "R2"),
    ("r3", "R3"),
    ("r4", "R4"),
    ("untied_bytes", "untied MB"),
    ("online_post_norms", "online post-norms"),
    ("steps", "steps"),
    ("loss_start", "loss start"),
    ("loss_end", "loss end"),
    ("train_seconds", "train s"),
)


def rotation_table(rows: Sequence[Row], published: Optional[PublishedSet] = None) -> Optional[Table]:
    """Per rotated row: what each rotation was built as (a Hadamard m x 2^k, random, learned), the
    bytes untying the head added, the post-norms rotated online, and a learned rotation's training
    (steps, held-out loss of the W4A8 fake-quantized model before and after, seconds)."""
    found = []
    for r in rows:
        names = sorted(
            {k.split(".", 1)[0] for k in r.quant if "." in k and k.split(".", 1)[1] in dict(ROTATION_KEYS)}
        )
        found += [(r, n) for n in names]
    if not found:
        return None
    keys = [(k, n) for k, n in ROTATION_KEYS if any(_present(r.quant.get(f"{t}.{k}")) for r, t in found)]
    t = Table("Rotations (what each run built)", ["model", "method", "transform", *[n for _, n in keys]], [])
    for r, tname in sorted(
        found, key=lambda x: (str(x[0].get("model")), method_order(str(x[0].get("scheme"))))
    ):
        cells = []
        for k, _ in keys:
            v = r.quant.get(f"{tname}.{k}")
            if k == "untied_bytes" and _num(v) is not None:
                v = f"{v / 2**20:.1f}"
            elif k.startswith(("loss", "train")) and _num(v) is not None:
                v = f"{v:.3f}" if k.startswith("loss") else f"{v:.0f}"
            cells.append(v)
        t.add([r.get("model"), method_name(r), tname, *cells])
    return t


EXPERIMENT_TABLES = (
    ("perplexity", perplexity_table),
    ("accuracy", accuracy_table),
    ("v0v1", lambda rows, published=None: v0v1_table(rows)),
    ("rotations", rotation_table),
)


def layer_table(report: Dict[str, Any], title: str) -> Table:
    """Per layer type: activation range v, the strategies chosen, LAE count, output SQNR."""
    by: Dict[str, List[dict]] = defaultdict(list)
    for r in report.get("layers", []):
        by[r["name"].rsplit(".", 1)[-1]].append(r)
    t = Table(
        title, ["layer", "n", "v min", "v median", "v max", "strategies", "lae", "mean out SQNR dB"], []
    )
    for kind, rs in sorted(by.items()):
        vs = sorted(r["v"] for r in rs if r.get("v") is not None)
        strat: Dict[str, int] = defaultdict(int)
        for r in rs:
            strat[r["strategy"]] += 1
        sq = [r["output_sqnr"] for r in rs if r.get("output_sqnr") is not None]
        t.add(
            [
                kind,
                len(rs),
                f"{vs[0]:.1f}" if vs else None,
                f"{vs[len(vs) // 2]:.1f}" if vs else None,
                f"{vs[-1]:.1f}" if vs else None,
                " ".join(f"{k}={v}" for k, v in sorted(strat.items())),
                sum(r.get("transform") == "lae" for r in rs),
                f"{sum(sq) / len(sq):.1f}" if sq else None,
            ]
        )
    return t


# ---- rendering ------------------------------------------------------------------------------------


def to_markdown(table: Table) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    for cells in table.rows:
        lines.append("| " + " | ".join(cells) + " |")
    if table.notes:
        lines.append("")
        lines += [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPE = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
}


def latex_escape(s: str) -> str:
    return "".join(_LATEX_ESCAPE.get(ch, ch) for ch in s).replace("Δ", r"$\Delta$").replace("≥", r"$\geq$")


def to_latex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); published and difference rows in italics."""
    spec = "ll" + "r" * (len(table.columns) - 2) if len(table.columns) > 2 else "l" * len(table.columns)
    out = [
        "% generated by fptq-report; needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\caption{{{latex_escape(table.title)}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in table.columns) + " \\\\",
        "\\midrule",
    ]
    prev_model = None
    for cells, kind in zip(table.rows, table.kinds, strict=True):
        if kind == "ours" and prev_model is not None and cells[0] and cells[0] != prev_model:
            out.append("\\midrule")
        if kind == "ours" and cells[0]:
            prev_model = cells[0]
        esc = [latex_escape(c) for c in cells]
        if kind != "ours":
            esc = [f"\\textit{{{c}}}" if c else c for c in esc]
        out.append(" & ".join(esc) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    if table.notes:
        out.append("\\par\\footnotesize " + " ".join(latex_escape(n) for n in table.notes))
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


# ---- helpers --------------------------------------------------------------------------------------


def _metric_table(title, rows, cols, published, fmt, delta, notes, extra=()) -> Table:
    rows = [r for r in rows if any(_num(r.get(k)) is not None for k, _ in cols)]  # rows that ran these
    settings = varying_settings(rows)
    extra = [e for e in extra if any(_present(_extra_value(r, e[0])) for r in rows)]
    t = Table(
        title, ["model", "method", *settings, *[n for _, n in cols], *[n for _, n, _ in extra]], [], notes
    )
    pad = [""] * len(settings)
    cited = set()
    for r in sort_rows(rows, settings):
        ours = [_num(r.get(k)) for k, _ in cols]
        t.add(
            [
                r.get("model"),
                method_name(r),
                *[_fmt_setting(r.get(s), s) for s in settings],
                *[fmt(v, k) if v is not None else "" for v, (k, _) in zip(ours, cols, strict=True)],
                *[(f(v) if _present(v := _extra_value(r, k)) else "") for k, _, f in extra],
            ]
        )
        metrics = [k for k, _ in cols]
        if published is None or not published.has_any(str(r.get("model")), str(r.get("scheme")), metrics):
            continue
        pub = [published.get(str(r.get("model")), str(r.get("scheme")), k) for k, _ in cols]
        cited |= {p.source for p in pub if p is not None}
        t.add(
            [
                "",
                "published",
                *pad,
                *[fmt(p.value, k) if p else NOT_PUBLISHED for p, (k, _) in zip(pub, cols, strict=True)],
                *[""] * len(extra),
            ],
            "published",
        )
        t.add(
            [
                "",
                "ours - published",
                *pad,
                *[
                    delta(o - p.value) if (p and o is not None) else ""
                    for o, p in zip(ours, pub, strict=True)
                ],
                *[""] * len(extra),
            ],
            "delta",
        )
    if cited:
        t.notes.append(
            f"{NOT_PUBLISHED}: not published. Published numbers (analysis/published.yaml v{published.version}):"
        )
        t.notes += [
            f"[{s}] {published.sources[s]['cite']} ({published.sources[s].get('protocol', '')})"
            for s in sorted(cited)
        ]
    elif published is not None:
        t.notes.append("No published numbers for these models and methods (analysis/published.yaml).")
    return t


def _gaps(r: Row, sets) -> Row:
    out = {}
    for s in sets:
        q, f = _num(r.get(f"ppl_{s}")), _num(r.get(f"fp_ppl_{s}"))
        out[f"gap_{s}"] = q - f if (q is not None and f is not None and r.get("scheme") != "fp") else None
    return out


def _extra_value(r: Row, key: str):
    if key == "act_mix":
        mix = [
            f"{k[2:]}={int(v)}"
            for k, v in sorted(r.quant.items())
            if k.startswith("n_") and _num(v) is not None
        ]
        return " ".join(mix) or None
    if key == "static_share":  # of the layers with quantized activations: per-tensor static (+ LAE)
        counts = {k[2:]: _num(v) or 0 for k, v in r.quant.items() if k.startswith("n_") and k != "n_none"}
        total = sum(counts.values())
        static = counts.get("per_tensor_static", 0) + counts.get("lae_static", 0)
        return static / total if total else None
    return _num(r.get(key))


def _ppl_notes(rows, sets) -> List[str]:
    notes = []
    for s in sets:
        w = sorted({r.get(f"windows_{s}") for r in rows if r.get(f"windows_{s}") is not None})
        seqlen = sorted({r.get("eval.seqlen") for r in rows if r.get("eval.seqlen") is not None})
        notes.append(
            f"{SET_NAMES[s]}: {', '.join(map(str, w)) or '?'} windows of {', '.join(map(str, seqlen)) or '?'} tokens"
            " (the whole test set is 148 windows of 2048 for WikiText-2; fewer windows are not comparable "
            "with published whole-set numbers)."
            if s == "wikitext2"
            else f"{SET_NAMES[s]}: {', '.join(map(str, w)) or '?'} windows."
        )
    return notes


def _accuracy_notes(rows, metrics) -> List[str]:
    lim = sorted({str(r.get("eval.limit")) for r in rows if r.get("eval.limit") is not None})
    mlim = sorted({str(r.get("eval.mmlu_limit")) for r in rows if r.get("eval.mmlu_limit") is not None})
    notes = [
        "CS Avg: mean acc over the common-sense tasks run; MMLU 5-shot, category averages weighted by questions."
    ]
    if lim or mlim:
        notes.append(
            f"Subsets: eval.limit={'/'.join(lim) or 'all'}, eval.mmlu_limit={'/'.join(mlim) or 'all'} (not the full sets)."
        )
    return notes


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _num(v) -> Optional[float]:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _present(v) -> bool:
    return v is not None and v != ""


def _fmt_num(v) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else f"{f:g}"


def _fmt_setting(v, key: str = "") -> str:
    if v is None:
        return ""
    if key == "weight.group_size" and v == 0:
        return "channel"
    if key == "eval.prompt":  # a prompt-led protocol: named by its start, the text is in the rows
        return f'"{v[:24]}..."' if len(v) > 24 else f'"{v}"'
    if isinstance(v, float):
        return _fmt_num(v)
    return str(v)


def _hashable(v):
    return repr(v) if isinstance(v, (dict, list)) else v


def _sortable(v):
    return (0, float(v), "") if _num(v) is not None else (1, 0.0, str(v))
