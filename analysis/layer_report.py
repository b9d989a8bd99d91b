"""Summarise a run's per-layer report (quant_report.json) by layer type: activation range v,
chosen strategies, LAE, and output SQNR.

    python analysis/layer_report.py outputs/.../quant_report.json
"""

import argparse
import json
from collections import defaultdict

from fptq.tables import to_markdown


def summarise(report: dict) -> list:
    by = defaultdict(list)
    for r in report["layers"]:
        by[r["name"].rsplit(".", 1)[-1]].append(r)
    rows = []
    for kind, rs in sorted(by.items()):
        vs = [r["v"] for r in rs if r["v"] is not None]
        strat = defaultdict(int)
        for r in rs:
            strat[r["strategy"]] += 1
        sq = [r["output_sqnr"] for r in rs if r["output_sqnr"] is not None]
        rows.append(
            {
                "layer": kind,
                "n": len(rs),
                "v min": round(min(vs), 1) if vs else None,
                "v median": round(sorted(vs)[len(vs) // 2], 1) if vs else None,
                "v max": round(max(vs), 1) if vs else None,
                "strategies": " ".join(f"{k}={v}" for k, v in sorted(strat.items())),
                "lae": sum(r["transform"] == "lae" for r in rs),
                "mean out SQNR dB": round(sum(sq) / len(sq), 1) if sq else None,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report")
    args = ap.parse_args()
    with open(args.report) as f:
        print(to_markdown(summarise(json.load(f))), end="")


if __name__ == "__main__":
    main()
