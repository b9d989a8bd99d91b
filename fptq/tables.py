"""Tables from the results store: one row per (model, scheme, settings), the scheme's two axes
(weight, act), perplexity per set, the gap to the float baseline, and the per-layer strategy mix.
Used by analysis/."""

from typing import Iterable, List, Optional, Sequence

import pandas as pd

from fptq.results import ResultStore

SETS = ("wikitext2", "c4", "ptb")
AXES = ("weight", "act")  # the scheme's composition axes (config groups `weight` and `act`)


def load_results(results_dir: str, experiment: Optional[str] = None) -> pd.DataFrame:
    df = pd.DataFrame(ResultStore(results_dir).read())
    if df.empty:
        return df
    if experiment:
        df = df[df["experiment"] == experiment]
    return df


def latest(df: pd.DataFrame, keys: Sequence[str] = ("model", "scheme", "overrides")) -> pd.DataFrame:
    """Keep the newest row for each key (a rerun replaces an older one)."""
    keys = [k for k in keys if k in df.columns]
    return df.sort_values("finished_at").groupby(keys, dropna=False, as_index=False).tail(1)


def ppl_table(df: pd.DataFrame, sets: Iterable[str] = SETS, extra: Sequence[str] = ()) -> pd.DataFrame:
    rows: List[dict] = []
    for _, r in df.iterrows():
        row = {"model": r["model"], "scheme": r["scheme"]}
        for axis in AXES:
            row[axis] = r.get(axis)
        for c in extra:
            row[c] = r.get(c)
        for s in sets:
            col = f"ppl_{s}"
            if col in r and pd.notna(r[col]):
                row[f"{s} ppl"] = round(float(r[col]), 3)
                fp = r.get(f"fp_ppl_{s}")
                row[f"{s} Δfp"] = (
                    round(float(r[col]) - float(fp), 3)
                    if fp is not None and pd.notna(fp) and r["scheme"] != "fp"
                    else None
                )
                row[f"{s} windows"] = int(r[f"windows_{s}"])
        q = r.get("quantize_s")
        row["quantize s"] = round(float(q), 1) if q is not None and pd.notna(q) else None
        mix = [f"{k[2:]}={int(r[k])}" for k in sorted(r.index) if k.startswith("n_") and pd.notna(r[k])]
        row["act layers"] = " ".join(mix)
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame | List[dict]) -> str:
    """A GitHub markdown table; empty cells for None/NaN."""
    if not isinstance(table, pd.DataFrame):
        table = pd.DataFrame(table)
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in table.iterrows():
        cells = ["" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in r.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
