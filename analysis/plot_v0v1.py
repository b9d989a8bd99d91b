"""Heatmap of WikiText-2 perplexity over FPTQ's thresholds (experiment ablation_v0v1).

python analysis/plot_v0v1.py --results results --out v0v1.png
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fptq.tables import load_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="results")
    ap.add_argument("--experiment", default="ablation_v0v1")
    ap.add_argument("--set", default="wikitext2")
    ap.add_argument("--out", default="v0v1.png")
    args = ap.parse_args()
    df = load_results(args.results, args.experiment)
    if df.empty:
        raise SystemExit(f"no rows for {args.experiment} in {args.results}")
    grid = df.pivot_table(index="v0", columns="v1", values=f"ppl_{args.set}", aggfunc="last")
    fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(grid.values, cmap="viridis_r")
    ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
    ax.set_yticks(range(len(grid.index)), [str(i) for i in grid.index])
    ax.set_xlabel("v1 (LAE / per-token dynamic)")
    ax.set_ylabel("v0 (static / LAE)")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid.values[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, label=f"{args.set} ppl")
    ax.set_title(f"FPTQ threshold sensitivity ({df['model'].iloc[0]})")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
