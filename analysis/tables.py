"""Print one experiment's tables (markdown) from the results store. For every table, the LaTeX
and the figures of all experiments at once, use `fptq-report` (fptq/study_report.py).

python analysis/tables.py --results results --experiment table_smollm2_w4a8 [--out table.md]
"""

import argparse
from pathlib import Path

from fptq.published import load_published
from fptq.results import ResultStore
from fptq.tables import accuracy_table, latest, perplexity_table, to_markdown, v0v1_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="paths.results_dir of the runs")
    ap.add_argument("--experiment", required=True, help="experiment_name to select")
    ap.add_argument("--out", default=None, help="write the markdown here instead of printing it")
    args = ap.parse_args()
    rows = [r for r in latest(ResultStore(args.results).read()) if r.get("experiment") == args.experiment]
    if not rows:
        raise SystemExit(f"no rows for {args.experiment} in {args.results}")
    pub = load_published()
    tables = [t for t in (perplexity_table(rows, pub), accuracy_table(rows, pub), v0v1_table(rows)) if t]
    md = "\n".join(to_markdown(t) for t in tables)
    if args.out:
        Path(args.out).write_text(md)
    else:
        print(md)


if __name__ == "__main__":
    main()
