"""`fptq-report`: the study's tables and figures from the results store, in one command.

    fptq-report --results results --out reports                  # every experiment in the store
    fptq-report --results results --out reports -e ablation_v0v1 --wandb
    fptq-report --results results -e ablation_v0v1 --print       # its tables as markdown, no files
    fptq-report --layers outputs/.../quant_report.json          # one run's per-layer table

For each experiment it writes `<out>/<experiment>/`:
    index.md                     every table inline, every figure, provenance, links
    perplexity.{md,tex}          WikiText-2 / C4 / PTB, the gap to FP, published numbers beside
    accuracy.{md,tex}            LAMBADA, MMLU by category, common-sense tasks (if run)
    v0v1.{md,tex}                the threshold grid (when v0 and v1 both vary)
    layers.{md,tex}              per layer type: v range, strategies, SQNR (from a layer report)
    act_range.{png,pdf}          per-layer v with the chosen strategy, v0 and v1 marked
    ppl_<set>.{png,pdf}          perplexity by scheme with the FP line
    accuracy.{png,pdf}           accuracy by scheme
    v0v1_heatmap.{png,pdf}
    rows.jsonl                   the rows it was built from
and `<out>/index.md` linking the experiments. With --wandb the same tables and figures go to one
W&B run per experiment (offline unless an API key is configured).
"""

import argparse
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fptq.analysis.figures import acc_by_scheme, act_range, ppl_by_scheme, v0v1_heatmap
from fptq.analysis.published import PUBLISHED_FILE, PublishedSet, load_published
from fptq.analysis.tables import (
    EXPERIMENT_TABLES,
    SETS,
    V0,
    V1,
    Table,
    latest,
    layer_table,
    sort_rows,
    to_latex,
    to_markdown,
    v0v1_grid,
    varying_settings,
)
from fptq.quant.act.fptq import FPTQSettings
from fptq.study.store import ResultStore, write_jsonl

log = logging.getLogger("fptq.analysis.report")


def build_report(
    results_dir: str,
    out: Path,
    experiments: Optional[Sequence[str]] = None,
    published: Optional[PublishedSet] = None,
    wandb_mode: Optional[str] = None,
) -> Dict[str, List[Path]]:
    """Write the report folders; returns the files written per experiment."""
    published = published or load_published()
    store = ResultStore(results_dir)
    problems: List[str] = []
    rows = latest(store.read(problems))
    by_exp: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_exp[str(r.get("experiment"))].append(r)
    chosen = list(experiments) if experiments else sorted(by_exp)
    if not chosen:
        skipped = "".join(f"\n  {p}" for p in problems)
        raise SystemExit(
            f"no complete rows in the results store {results_dir}"
            + (f"; skipped:{skipped}" if skipped else "")
        )
    missing = [e for e in chosen if e not in by_exp]
    if missing:
        raise SystemExit(
            f"no rows for {missing} in {results_dir}; experiments in the store: {sorted(by_exp) or 'none'}"
        )
    out = Path(out)
    written = {}
    for exp in chosen:
        written[exp], tables = experiment_report(store, exp, by_exp[exp], out / exp, published)
        if wandb_mode:
            _to_wandb(exp, out / exp, tables, written[exp], wandb_mode)
    _top_index(out, chosen, by_exp, problems, results_dir)
    return written


def print_tables(results_dir: str, experiments: Optional[Sequence[str]], published: PublishedSet) -> None:
    rows = latest(ResultStore(results_dir).read())
    chosen = set(experiments or {r.experiment for r in rows})
    rows = [r for r in rows if r.experiment in chosen]
    if not rows:
        raise SystemExit(f"no rows for {sorted(chosen)} in {results_dir}")
    for exp in sorted(chosen):
        mine = sort_rows([r for r in rows if r.experiment == exp], varying_settings(rows))
        tables = [build(mine, published) for _, build in EXPERIMENT_TABLES]
        print(f"# {exp}\n\n" + "\n".join(to_markdown(t) for t in tables if t is not None))


def experiment_report(
    store: ResultStore, exp: str, rows, folder: Path, published: PublishedSet
) -> Tuple[List[Path], Dict[str, Table]]:
    folder.mkdir(parents=True, exist_ok=True)
    settings = varying_settings(rows)
    rows = sort_rows(rows, settings)
    tables: Dict[str, Table] = {}
    for name, build in EXPERIMENT_TABLES:
        table = build(rows, published)
        if table is not None:
            tables[name] = table
    ref, report = _reference_fptq_row(store, rows)
    if report is not None:
        tables["layers"] = layer_table(
            report, f"Per-layer activation ranges and strategies ({ref['model']}, {ref['scheme']})"
        )
    files: List[Path] = []
    for name, t in tables.items():
        for ext, render in (("md", to_markdown), ("tex", to_latex)):
            p = folder / f"{name}.{ext}"
            p.write_text(render(t))
            files.append(p)
    figures: Dict[str, List[Path]] = {}
    if report is not None:
        figures["act_range"] = act_range(
            report,
            float(ref.get(V0, FPTQSettings().v0)),
            float(ref.get(V1, FPTQSettings().v1)),
            f"FPTQ's choice per layer: {ref['model']}, {ref['scheme']}",
            folder / "act_range",
        )
    for s in SETS:
        f = ppl_by_scheme(rows, s, settings, f"{exp}: perplexity by scheme", folder / f"ppl_{s}")
        if f:
            figures[f"ppl_{s}"] = f
    f = acc_by_scheme(rows, settings, f"{exp}: accuracy by scheme", folder / "accuracy")
    if f:
        figures["accuracy"] = f
    grid = v0v1_grid(rows)
    if grid is not None:
        figures["v0v1_heatmap"] = v0v1_heatmap(
            grid, "WikiText-2 perplexity", f"{exp}: FPTQ threshold sensitivity", folder / "v0v1_heatmap"
        )
    for paths in figures.values():
        files += paths
    write_jsonl(folder / "rows.jsonl", rows)
    files.append(folder / "rows.jsonl")
    (folder / "index.md").write_text(_experiment_index(exp, rows, settings, tables, figures, ref))
    files.append(folder / "index.md")
    return files, tables


def _reference_fptq_row(
    store: ResultStore, rows
) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """The row whose layer report the act-range figure shows (FPTQ's layerwise strategy, the
    paper's thresholds if present, with a layer report available), and that report."""
    paper = (FPTQSettings().v0, FPTQSettings().v1)
    cands = [r for r in rows if r.get("act.strategy") == "fptq"]
    cands.sort(key=lambda r: (r.scheme != "w4a8_fptq", (r.get(V0), r.get(V1)) != paper))
    for r in cands:
        report = store.layers(r)
        if report is not None:
            return r, report
    return None, None


def _experiment_index(exp, rows, settings, tables, figures, ref) -> str:
    models = sorted({str(r.get("model")) for r in rows})
    lines = [f"# {exp}", ""]
    lines.append(f"{len(rows)} runs; models: {', '.join(models)}.")
    if settings:
        lines.append(f"Settings that vary within a method: {', '.join(settings)}.")
    devices = sorted({str(r.get("device")) for r in rows if r.get("device")})
    codes = sorted({str(r.get("code_version") or r.get("git_commit", "?"))[:12] for r in rows})
    stamps = sorted(str(r.get("finished_at")) for r in rows if r.get("finished_at"))
    lines.append(
        f"Device: {', '.join(devices) or '?'}; code: {', '.join(codes)}; finished "
        f"{stamps[0][:10] if stamps else '?'} to {stamps[-1][:10] if stamps else '?'}. Rows: [rows.jsonl](rows.jsonl)."
    )
    lines.append("")
    for name, t in tables.items():
        lines += [f"## {t.title}", "", f"[markdown]({name}.md) · [LaTeX]({name}.tex)", "", to_markdown(t)]
    if figures:
        lines += ["## Figures", ""]
        for name, paths in figures.items():
            png = next(p for p in paths if p.suffix == ".png")
            lines += [f"![{name}]({png.name}) ([PDF]({png.with_suffix('.pdf').name}))", ""]
    if ref is None:
        lines += ["No per-layer report for an FPTQ row: no act-range figure or layer table.", ""]
    return "\n".join(lines)


def _top_index(out: Path, chosen, by_exp, problems, results_dir) -> None:
    lines = [
        "# Study report",
        "",
        f"From the results store `{results_dir}`; published numbers: `{PUBLISHED_FILE.name}`.",
        "",
    ]
    lines += ["| experiment | runs | models |", "|---|---|---|"]
    for e in chosen:
        models = ", ".join(sorted({str(r.get("model")) for r in by_exp[e]}))
        lines.append(f"| [{e}]({e}/index.md) | {len(by_exp[e])} | {models} |")
    if problems:
        lines += ["", "Skipped store entries (not complete rows):", ""] + [f"- {p}" for p in problems]
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.md").write_text("\n".join(lines) + "\n")


def _to_wandb(exp: str, folder: Path, tables: Dict[str, Table], files: List[Path], mode: str) -> None:
    """One W&B run per experiment: every table as a wandb.Table, every figure as an image."""
    from fptq.study.runlog import LoggerSpec, make_logger

    logger = make_logger(
        LoggerSpec(name="wandb", mode=mode),
        {"experiment": exp},
        group=exp,
        name=f"report/{exp}",
        out_dir=str(folder),
    )
    try:
        import wandb

        for name, t in tables.items():
            logger.log({f"table/{name}": wandb.Table(columns=t.columns, data=t.rows)})
        for p in files:
            if p.suffix == ".png":
                logger.log({f"figure/{p.stem}": wandb.Image(str(p))})
    except Exception as e:  # never fail a report because of W&B
        log.warning("W&B report upload failed: %s", e)
    finally:
        logger.finish()


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(
        prog="fptq-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--results", default="results", help="the results store (paths.results_dir)")
    ap.add_argument("--out", default="reports", help="where the report folders go")
    ap.add_argument("-e", "--experiment", action="append", help="only these experiments (repeatable)")
    ap.add_argument("--published", default=str(PUBLISHED_FILE), help="the published-numbers YAML")
    ap.add_argument(
        "--wandb",
        nargs="?",
        const="auto",
        default=None,
        metavar="MODE",
        help="also log to W&B (auto|online|offline)",
    )
    ap.add_argument(
        "--print", action="store_true", help="print the chosen experiments' tables, write nothing"
    )
    ap.add_argument(
        "--layers", metavar="REPORT", help="print one run's per-layer table (its quant_report.json)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.layers:
        import json

        f = Path(args.layers)
        if not f.is_file():
            raise SystemExit(f"no layer report at {f}: pass a run's quant_report.json")
        print(to_markdown(layer_table(json.loads(f.read_text()), str(f))), end="")
        return
    if not Path(args.results).is_dir():
        raise SystemExit(
            f"no results store at {args.results}: pass --results <paths.results_dir of your runs>"
        )
    if args.print:
        print_tables(args.results, args.experiment, load_published(args.published))
        return
    written = build_report(
        args.results, Path(args.out), args.experiment, load_published(args.published), args.wandb
    )
    for exp, files in written.items():
        print(f"{exp}: {len(files)} files in {Path(args.out) / exp}")
    print(f"index: {Path(args.out) / 'index.md'}")


if __name__ == "__main__":
    main()
