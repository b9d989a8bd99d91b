"""Summarise a run's per-layer report (quant_report.json) by layer type: activation range v,
chosen strategies, LAE, and output SQNR.

    python analysis/layer_report.py outputs/.../quant_report.json
"""

import argparse
import json

from fptq.tables import layer_table, to_markdown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report")
    args = ap.parse_args()
    with open(args.report) as f:
        print(to_markdown(layer_table(json.load(f), args.report)), end="")


if __name__ == "__main__":
    main()
