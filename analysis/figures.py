"""The study's figures (matplotlib, each as PNG and PDF): the per-layer activation range v with
the strategy FPTQ chose (the paper's motivation figure), perplexity and accuracy by scheme, and
the v0/v1 heatmap."""

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fptq.analysis.tables import ACCURACY, SET_NAMES, method_name  # noqa: E402

STRATEGY_COLORS = {
    "per_tensor_static": "tab:blue",
    "lae_static": "tab:green",
    "per_token_dynamic": "tab:red",
    "none": "tab:gray",
}


def _save(fig, stem: Path) -> List[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        p = stem.with_suffix(f".{ext}")
        fig.savefig(p, dpi=130, metadata={"CreationDate": None} if ext == "pdf" else {"Software": None})
        out.append(p)
    plt.close(fig)
    return out


def act_range(report: Dict[str, Any], v0: float, v1: float, title: str, stem: Path) -> List[Path]:
    """v = max|X| per quantized linear, in model order, coloured by the chosen strategy; dashed
    lines at v0 and v1."""
    layers = [r for r in report.get("layers", []) if r.get("v") is not None]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for strategy in sorted({r["strategy"] for r in layers}):
        idx = [i for i, r in enumerate(layers) if r["strategy"] == strategy]
        ax.scatter(
            idx,
            [layers[i]["v"] for i in idx],
            s=10,
            color=STRATEGY_COLORS.get(strategy, "tab:purple"),
            label=f"{strategy} ({len(idx)})",
        )
    for v, name in ((v0, "v0"), (v1, "v1")):
        ax.axhline(v, color="k", ls="--", lw=0.8)
        ax.text(len(layers) - 1, v, f" {name}={v:g}", va="bottom", ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("quantized linear layer (model order)")
    ax.set_ylabel("input range v = max|X|")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _save(fig, stem)


def _labels(rows: Sequence[Dict[str, Any]], settings: Sequence[str]) -> List[str]:
    out = []
    for r in rows:
        extra = ", ".join(f"{s}={r.get(s)}" for s in settings if r.get(s) is not None)
        out.append(method_name(r) + (f"\n{extra}" if extra else ""))
    return out


def ppl_by_scheme(
    rows, dataset: str, settings: Sequence[str], title: str, stem: Path
) -> Optional[List[Path]]:
    rows = [r for r in rows if r.get(f"ppl_{dataset}") is not None and r.get("scheme") != "fp"]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(rows) + 2), 3.8))
    vals = [float(r[f"ppl_{dataset}"]) for r in rows]
    ax.bar(range(len(rows)), vals, color="tab:blue")
    fp = [float(r[f"fp_ppl_{dataset}"]) for r in rows if r.get(f"fp_ppl_{dataset}") is not None]
    if fp:
        ax.axhline(fp[0], color="k", ls="--", lw=1, label=f"float model ({fp[0]:.2f})")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(rows)), _labels(rows, settings), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"{SET_NAMES.get(dataset, dataset)} perplexity")
    if max(vals) / max(min(vals), 1e-9) > 20:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, stem)


def acc_by_scheme(rows, settings: Sequence[str], title: str, stem: Path) -> Optional[List[Path]]:
    cols = [(k, n) for k, n in ACCURACY if any(r.get(k) is not None for r in rows)]
    if not cols:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(cols) * max(1, len(rows)) / 2 + 3), 3.8))
    width = 0.8 / max(1, len(rows))
    for i, (r, label) in enumerate(zip(rows, _labels(rows, settings), strict=True)):
        xs = [j + i * width for j in range(len(cols))]
        ax.bar(xs, [100 * float(r.get(k) or 0) for k, _ in cols], width=width, label=label.replace("\n", " "))
    ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(cols))],
        [n for _, n in cols],
        rotation=45,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, stem)


def v0v1_heatmap(grid, metric_name: str, title: str, stem: Path) -> List[Path]:
    v0s, v1s, values = grid
    import numpy as np

    data = np.array([[np.nan if v is None else v for v in row] for row in values])
    fig, ax = plt.subplots(figsize=(1.1 * len(v1s) + 2, 0.8 * len(v0s) + 1.6))
    im = ax.imshow(data, cmap="viridis_r")
    ax.set_xticks(range(len(v1s)), [f"{v:g}" for v in v1s])
    ax.set_yticks(range(len(v0s)), [f"{v:g}" for v in v0s])
    ax.set_xlabel("v1 (LAE / per-token dynamic)")
    ax.set_ylabel("v0 (static / LAE)")
    for i in range(len(v0s)):
        for j in range(len(v1s)):
            if values[i][j] is not None:
                ax.text(j, i, f"{values[i][j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, label=metric_name)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, stem)
