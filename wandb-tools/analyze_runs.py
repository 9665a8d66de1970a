#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "jinja2>=3.1",
#     "matplotlib>=3.9",
#     "polars>=2.1",
#     "pyarrow>=26",
#     "rich>=15",
# ]
# ///
"""Rank, group and pivot runs, or find their Pareto front, from a runs export or aggregate (W&B or Neptune);
or write all of it as one HTML page (--report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.cli.launch import require_dependencies

require_dependencies(__file__)  # under a Python without them, one line saying to use uv

# Heavy imports (polars, pyarrow, matplotlib, jinja2) after argument parsing: --help and usage errors answer in a
# fraction of a second.
from shared.base.errors import BadInput
from shared.base.storage import check_output_file
from shared.cli.args import (
    add_format_argument,
    add_inputs_source_argument,
    add_states_argument,
    int_argument,
    parse_states,
    path_argument,
    script_parser,
    text_argument,
)
from shared.cli.main import log, run_main
from shared.table.vocabulary import PIVOT_COLS, PIVOT_ROWS, TOP

if TYPE_CHECKING:
    import polars as pl

    from shared.analysis import frames as an
    from shared.analysis.views import ViewOptions
    from shared.table.exports import RunsFile

DEFAULT_FOLDER = Path("wandb_export")
EXAMPLES = """\
examples:
  analyze_runs.py                                              # newest export under wandb_export/, top 10
  analyze_runs.py --filter stage3_pyg_dist --metric metric_test_accuracy --maximize --pivot
  analyze_runs.py --top 20 --metric test/mse                   # or metric_test_mse, test_mse
  analyze_runs.py --source neptune_export/ --state finished --metric train/loss
  analyze_runs.py analysis/unified.parquet --group-by architecture,dataset
  analyze_runs.py --pivot --pivot-rows k --pivot-cols dataset --state finished
  analyze_runs.py --filter stage2c -o results.csv                # the shown table, with id, for scripts
  analyze_runs.py --group-by stage --format json | jq .
  analyze_runs.py --schema
  analyze_runs.py --metric test_mse --pareto k                  # runs no other beats on both mse and k
  analyze_runs.py --metric test_mse --pareto k --pareto-maximize --plot front.pdf   # higher k is better
  analyze_runs.py --pivot --plot pivot.png                      # the pivot as an annotated heatmap
  analyze_runs.py wandb_export/ --report report.html --metric test/mse   # everything as one HTML page

views (one per call; --report shows them together): --top (default), --group-by, --pivot, --pareto, --schema.
Raw exports get architecture, dataset, stage, k, … parsed on the fly (config columns win over the run
name; see docs/aggregate_analyze.md); aggregated files use their own columns. `architecture` = `arch`.
Runs whose metric is null or NaN are left out of rankings and statistics and counted on stderr.
The pivot cell is `best · mean (n=runs)`; colour = rank in its column (green best), ★/* marks the best.
--format table (default): rich on a terminal, plain when piped (also --format rich|plain); csv, json
or markdown for scripts. NO_COLOR turns colour off. -o FILE writes the table shown by extension: .csv
.parquet .json .md (the pivot as <col>_best/_mean/_n columns). --descending is --maximize, -k --top,
--json --format json. --state takes the run states of both trackers (Neptune's active = running,
inactive = finished); another word is exit 2.
--pareto: the runs that no other run beats on both --metric and COLUMN, in order along the front
(--metric ascending; `#` numbers them as the plot does). Runs without a finite value of either are left out.
--plot FILE (.png .svg .pdf) draws --pivot as a heatmap or --pareto as a scatter with the front.
--report FILE (.html) writes one self-contained page (no network needed) and nothing to stdout: what was
read, the top runs with the config values that differ, the pivot heatmap, group statistics (--group-by,
else the pivot's columns), the Pareto front with --pareto, learning curves of the top runs when the export
has history, and every column with how full it is. --top, --pivot-rows/--pivot-cols, --pareto, --filter
and --state shape its sections; tables sort by a click on a header and filter as you type.
exit codes: 0 done (also when nothing matched: the reason is printed), 2 bad input.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser("analyze_runs.py", __doc__, EXAMPLES)
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="runs parquet(s), folders or globs (default: the newest *.parquet under wandb_export/)",
    )
    add_inputs_source_argument(parser, ": a runs parquet, an export folder of either tracker, a glob")
    parser.add_argument(
        "--filter",
        metavar="PATTERN",
        help="only runs whose name matches this regex (a plain word: substring)",
    )
    add_states_argument(parser, "only")
    parser.add_argument(
        "--metric",
        type=text_argument,
        metavar="METRIC",
        help="metric to rank by: as logged (test/mse) or its column (metric_test_mse, test_mse); "
        "default: a metric_* column saying loss/mse/error, test first",
    )
    parser.add_argument(
        "--maximize",
        "--descending",
        action="store_true",
        help="higher is better (accuracy); default: lower is better",
    )
    parser.add_argument(
        "--top",
        "-k",
        type=int_argument,
        metavar="N",
        help=f"rows of the ranking (default {TOP}); with --group-by: best N groups; not with --pivot, --pareto, --schema",
    )
    parser.add_argument(
        "--group-by",
        type=text_argument,
        metavar="A,B",
        help="count, mean, std, min, max of the metric per group, best mean first",
    )
    parser.add_argument(
        "--pivot", action="store_true", help="architecture x dataset heatmap: best, mean and n per cell"
    )
    parser.add_argument(
        "--pivot-rows", metavar="COLUMN", help=f"pivot row column (default: {PIVOT_ROWS}); implies --pivot"
    )
    parser.add_argument(
        "--pivot-cols", metavar="COLUMN", help=f"pivot column column (default: {PIVOT_COLS}); implies --pivot"
    )
    parser.add_argument(
        "--pareto",
        type=text_argument,
        metavar="COLUMN",
        help="the Pareto front of --metric against this numeric column (with or without metric_), e.g. --pareto k",
    )
    parser.add_argument(
        "--pareto-maximize",
        action="store_true",
        help="with --pareto: higher is better for its column (default: lower is better)",
    )
    parser.add_argument(
        "--schema", action="store_true", help="columns by prefix with dtype and non-null count"
    )
    parser.add_argument(
        "--columns", metavar="A,B", help="extra columns for the --top table (e.g. config_optimizer_lr)"
    )
    parser.add_argument(
        "--rules",
        type=path_argument,
        metavar="FILE",
        help="TOML name-parsing rules (as in aggregate_runs.py)",
    )
    add_format_argument(
        parser, aliases=("rich", "plain"), note="; table is rich on a terminal, plain when piped"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=path_argument,
        metavar="FILE",
        help="also write the table shown: .csv .parquet .json .md",
    )
    parser.add_argument(
        "--plot",
        type=path_argument,
        metavar="FILE",
        help="also draw --pivot (heatmap) or --pareto (front) to FILE: .png .svg .pdf, e.g. --plot front.pdf",
    )
    parser.add_argument(
        "--report",
        type=path_argument,
        metavar="FILE",
        help="write every view as one self-contained HTML page (.html) instead of a table on stdout",
    )
    args = parser.parse_args(argv)
    args.command = ["analyze_runs.py", *(sys.argv[1:] if argv is None else argv)]  # shown in --report
    split = lambda text: [c.strip() for c in (text or "").split(",") if c.strip()]  # noqa: E731
    args.group_by = list(dict.fromkeys(split(args.group_by)))  # a name given twice groups once
    args.columns = split(args.columns)
    args.state = parse_states(args.state)
    args.inputs = [*args.inputs, *map(str, args.source)]
    args.pivot = args.pivot or bool(args.pivot_rows or args.pivot_cols)
    if args.pivot:
        args.pivot_rows, args.pivot_cols = args.pivot_rows or PIVOT_ROWS, args.pivot_cols or PIVOT_COLS
        if args.pivot_rows == args.pivot_cols:
            raise BadInput(
                f"--pivot-rows and --pivot-cols both name {args.pivot_rows}: they must differ "
                "(defaults: architecture x dataset)"
            )
    if args.pareto_maximize and not args.pareto:
        parser.error("--pareto-maximize needs --pareto COLUMN")
    if args.report:
        check_report_path(parser, args)
    elif sum([bool(args.group_by), args.pivot, args.schema, bool(args.pareto)]) > 1:
        parser.error("choose one view: --group-by, --pivot, --pareto or --schema")
    elif args.pareto and args.top is not None:
        parser.error("--top does not apply to --pareto: the front holds every run no other run beats")
    elif (args.pivot or args.schema) and args.top is not None:
        view = "--pivot" if args.pivot else "--schema"
        parser.error(f"--top does not apply to {view}: it counts rows of the ranking or groups of --group-by")
    elif args.plot and not (args.pivot or args.pareto):
        parser.error("--plot draws --pivot or --pareto: add one of them")
    if args.top is not None and args.top < 1:
        parser.error("--top must be at least 1")
    if args.format == "table":
        args.format = "rich" if sys.stdout.isatty() else "plain"
    return args


def check_report_path(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Before any work: --report names an .html file we can write, and no flag asks for other output."""
    path = args.report
    if path.suffix.lower() not in (".html", ".htm"):
        raise BadInput(f"--report {path}: unknown extension {path.suffix or '(none)'} (use .html, .htm)")
    check_output_file(path, "--report")
    others = [("--schema", args.schema), ("-o", args.output), ("--plot", args.plot)]
    others.append(("--format", args.format != "table"))
    if given := [flag for flag, present in others if present]:
        parser.error(f"--report writes the page only: {', '.join(given)} does not apply with it")


def load(inputs: list[str], *, with_history: bool) -> tuple[pl.LazyFrame, list[RunsFile], str | None]:
    """The runs of `inputs` (default: the newest export), the files read, and the line naming a default pick."""
    from shared.cli.progress import TerminalEvents
    from shared.table.exports import find_runs_files, newest_export, open_runs_files, scan_deduplicated

    events = TerminalEvents()

    picked = None
    if inputs:
        paths = find_runs_files(inputs, events)
    else:
        newest, count = newest_export(DEFAULT_FOLDER)
        picked = f"using {newest}" + (f" (newest of {count})" if count > 1 else "")  # short: on every call
        paths = [newest]
    files = open_runs_files(paths, with_history=with_history)
    return scan_deduplicated(files, events), files, picked


def column_of(schema: pl.Schema, requested: str, flag: str) -> str:
    """What to look up for a --metric or --pareto named as logged (`test/mse`) or as a column: the name as
    given when the analysis finds it itself (a column, with or without `metric_`: its messages quote the
    user's spelling), else the column it names. BadInput with the closest metric columns for --metric
    (--pareto's own check names the numeric columns)."""
    from shared.analysis import frames as an
    from shared.base.text import name_list
    from shared.table.metrics import did_you_mean, resolve_column
    from shared.table.schema import METRIC_PREFIX

    if requested in schema or f"{METRIC_PREFIX}{requested}" in schema:
        return requested
    column = resolve_column(schema.names(), requested)
    if column is None and flag == "--metric":
        metrics = an.numeric_metrics(schema)
        raise BadInput(
            f"unknown metric {requested!r} in --metric{did_you_mean(requested, metrics)} "
            f"(numeric metric columns: {name_list(metrics)})"
        )
    return column or requested


def choose_metric(schema: pl.Schema, requested: str | None) -> str:
    from shared.analysis import frames as an
    from shared.base.text import name_list

    metric = an.pick_metric(schema, requested and column_of(schema, requested, "--metric"))
    if metric:
        return metric
    metrics = an.numeric_metrics(schema)
    if not metrics:
        raise BadInput(f"no numeric metric_* column to rank by (columns: {name_list(schema.names())})")
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise BadInput(
            f"no metric says loss/mse/error: choose one with --metric (numeric metric columns: {name_list(metrics)})"
        )
    from rich.console import Console
    from rich.prompt import Prompt

    # On stderr, with the person it asks: stdout may be a data file (`> top.json`).
    asking = Console(stderr=True)
    return Prompt.ask("no metric says loss/mse/error; rank by", choices=metrics, console=asking)


def check_columns(schema: pl.Schema, args: argparse.Namespace) -> tuple[str | None, str | None]:
    """Every column the options name, checked before anything is logged; the metric and --pareto axis."""
    from shared.analysis import frames as an

    if args.state:
        an.require_columns(schema, ["state"], "--state")
    if args.schema:
        return None, None
    an.require_columns(schema, args.group_by, "--group-by")
    if args.pivot:
        an.require_columns(schema, [args.pivot_rows, args.pivot_cols], "--pivot-rows/--pivot-cols")
    an.require_columns(schema, args.columns, "--columns")
    metric = choose_metric(schema, args.metric)
    if not args.pareto:
        return metric, None
    return metric, an.pareto_axis(schema, column_of(schema, args.pareto, "--pareto"), metric)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from shared.analysis.plots import check_plot_path
    from shared.table.exports import check_regex, one_export_state
    from shared.table.outputs import check_output

    if args.output:
        check_output(args.output)
    if args.plot:
        check_plot_path(args.plot)
    if args.filter:
        check_regex(args.filter, "--filter")
    return one_export_state(lambda: analyze(args))


def analyze(args: argparse.Namespace) -> int:
    """The analysis of the inputs, shown once all of it is read: ExportChanged (nothing shown) when an
    export replaced a file it read."""
    import polars as pl

    from shared.analysis import frames as an
    from shared.analysis.enrich import load_rules
    from shared.analysis.views import chosen_view
    from shared.table.exports import check_unchanged

    frame, files, picked = load(args.inputs, with_history=bool(args.report))
    source = ", ".join(f.label for f in files)
    frame = an.prepare(frame, load_rules(args.rules))
    metric, pareto = check_columns(frame.collect_schema(), args)
    if picked:
        log(picked)
    steps = an.Selection(args.state, args.filter).steps()
    matched = frame.filter(*(condition for _, condition in steps)) if steps else frame
    if metric is None:  # --schema
        described, counts = an.schema_query(matched)
        table = an.schema_table(described, counts.collect())
        check_unchanged(files)
        return show(table, args, title=f"Schema of {source}: {len(table)} columns")
    if not args.metric:
        log(f"ranking by {metric} (choose another with --metric)")
    if not args.maximize and an.looks_higher_is_better(metric):
        log(f"note: ranking {metric} lowest first; pass --maximize if higher is better")
    options = view_options(args, metric, pareto)
    if args.report:
        return report(frame, files, steps, options, args)
    if pareto and not args.pareto_maximize and an.looks_higher_is_better(pareto):
        log(f"note: the front takes lower {pareto} as better; pass --pareto-maximize if higher is")
    view = chosen_view(options, pivot=args.pivot)
    collected, counts = pl.collect_all([view.query(matched), an.funnel_query(frame, steps, metric)])
    check_unchanged(files)
    funnel = an.read_funnel(counts, steps)
    if note := funnel.footer(metric):  # first: the front's own count of left-out runs says "more"
        log(note)
    shown = view.finish(collected)
    for note in shown.notes:
        log(note)
    empty = funnel.with_value == 0 or (pareto is not None and shown.table.height == 0)
    show(shown.table, args, title=shown.title, pivot=shown.pivot, empty=empty)
    if args.plot and empty:
        log(f"nothing to draw: {args.plot} not written")
    elif args.plot:
        view.draw(args.plot, shown)
        log(f"wrote {args.plot}")
    return 0


def view_options(args: argparse.Namespace, metric: str, pareto: str | None) -> ViewOptions:
    """What the views (and the report's sections) are asked, from the flags."""
    from shared.analysis.views import ViewOptions

    return ViewOptions(
        metric=metric,
        maximize=args.maximize,
        top=args.top,
        group_by=args.group_by,
        pivot_rows=args.pivot_rows or PIVOT_ROWS,
        pivot_cols=args.pivot_cols or PIVOT_COLS,
        pareto=pareto,
        pareto_maximize=args.pareto_maximize,
        columns=args.columns,
    )


def report(
    frame: pl.LazyFrame,
    files: list[RunsFile],
    steps: list[tuple[str, pl.Expr]],
    options: ViewOptions,
    args: argparse.Namespace,
) -> int:
    """Write the HTML report of the runs (every section at once, shaped by the views' flags)."""
    import shlex

    from shared.analysis.report import build_report, write_report
    from shared.table.exports import check_unchanged

    html, funnel = build_report(frame, files, steps, options, command=shlex.join(args.command))
    check_unchanged(files)
    if note := funnel.footer(options.metric):
        log(note)
    size = write_report(args.report, html)
    log(f"wrote {args.report} ({funnel.matched} runs, {size / 1024:.0f} KB)")
    return 0


def show(
    table: pl.DataFrame,
    args: argparse.Namespace,
    *,
    title: str,
    pivot: an.Pivot | None = None,
    empty: bool = False,
) -> int:
    from shared.analysis.render import write_output
    from shared.cli.output import render
    from shared.table.outputs import flat_columns

    if args.format == "csv":  # the table -o .csv writes, also when empty (its header)
        sys.stdout.write(table.select(flat_columns(table)).write_csv())
    elif not empty or args.format == "json":
        render(table, args.format, title=title, pivot=pivot)
    if args.output:
        write_output(table, args.output, pivot=pivot)
        log(f"wrote {table.height} rows to {args.output}")
    return 0


if __name__ == "__main__":
    run_main(main)
