"""Rebuild a results table (markdown) from the results store.

python analysis/tables.py --results results --experiment table_smollm2_w4a8 [--out table.md]
"""

import argparse
from pathlib import Path

from fptq.tables import latest, load_results, ppl_table, to_markdown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="results_dir holding results.jsonl")
    ap.add_argument("--experiment", default=None, help="experiment_name to select (default: all)")
    ap.add_argument(
        "--extra", nargs="*", default=[], help="extra store columns to show (e.g. v0 v1 calib_source)"
    )
    ap.add_argument("--out", default=None, help="write the markdown here instead of printing it")
    args = ap.parse_args()
    df = load_results(args.results, args.experiment)
    if df.empty:
        raise SystemExit(
            f"no results in {args.results}/results.jsonl"
            + (f" for {args.experiment}" if args.experiment else "")
        )
    md = to_markdown(ppl_table(latest(df, ("model", "scheme", "overrides")), extra=args.extra))
    if args.out:
        Path(args.out).write_text(md)
    else:
        print(md)


if __name__ == "__main__":
    main()
