"""Heatmap of WikiText-2 perplexity over FPTQ's thresholds (experiment ablation_v0v1); writes
<out>.png and <out>.pdf. `fptq-report` draws the same figure for every experiment.

python analysis/plot_v0v1.py --results results --out v0v1
"""

import argparse
from pathlib import Path

from fptq.figures import v0v1_heatmap
from fptq.results import ResultStore
from fptq.tables import SET_NAMES, latest, v0v1_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="results")
    ap.add_argument("--experiment", default="ablation_v0v1")
    ap.add_argument("--set", default="wikitext2")
    ap.add_argument("--out", default="v0v1")
    args = ap.parse_args()
    rows = [r for r in latest(ResultStore(args.results).read()) if r.get("experiment") == args.experiment]
    grid = v0v1_grid(rows, f"ppl_{args.set}")
    if grid is None:
        raise SystemExit(f"no v0 x v1 grid for {args.experiment} in {args.results}")
    paths = v0v1_heatmap(
        grid,
        f"{SET_NAMES[args.set]} perplexity",
        f"FPTQ threshold sensitivity ({rows[0]['model']})",
        Path(args.out),
    )
    print("wrote", " ".join(map(str, paths)))


if __name__ == "__main__":
    main()
