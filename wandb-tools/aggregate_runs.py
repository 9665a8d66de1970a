#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "polars>=2.1",
#     "pyarrow>=26",
#     "rich>=15",
# ]
# ///
"""Merge runs exports (W&B or Neptune, any mix) into one deduplicated, filtered, enriched parquet."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.cli.launch import require_dependencies

require_dependencies(__file__)  # under a Python without them, one line saying to use uv

# Heavy imports (polars, pyarrow) after argument parsing: --help and usage errors answer in a fraction
# of a second.
from shared.analysis.enrich_rules import ENRICHMENT_COLUMNS
from shared.cli.args import (
    add_format_argument,
    add_inputs_source_argument,
    add_states_argument,
    parse_states,
    path_argument,
    script_parser,
)
from shared.cli.main import log, run_main

if TYPE_CHECKING:
    from shared.analysis.aggregate import AggregateReport

EXAMPLES = f"""\
examples:
  aggregate_runs.py wandb_export/ -o analysis/unified.parquet
  aggregate_runs.py wandb_export/*.parquet -o analysis/unified.parquet --state finished
  aggregate_runs.py wandb_export/ --filter stage2c -o analysis/stage2c.parquet
  aggregate_runs.py wandb_export/ -o raw.parquet --no-enrich --protocol all
  aggregate_runs.py /backups/wandb/ neptune_export/x_runs.parquet --include-history
  aggregate_runs.py wandb_export/ --rules our_naming.toml        # other teams' run names
  aggregate_runs.py wandb_export/ -o analysis/unified.csv --format json   # a CSV, the report as JSON

inputs: folders (every *_runs.parquet below them), files and globs ("exports/**/*_runs.parquet").
A run in several inputs (same entity/project/id) is kept once: the copy with the newest heartbeat_at,
then the newest export (the exporter's …_metadata.json, else the file's time), then the later input.
Columns that differ in type between files are unified: int with float → float; other mixes → string.

added columns: _source_file (the input a row came from) and, unless --no-enrich,
  {", ".join(ENRICHMENT_COLUMNS)}.
A config value (config_model_type → arch, config_data_graph_type → dataset, config_model_k → k, …) wins
over the value parsed from the run name. Every default rule, and the --rules TOML format, is described in
docs/aggregate_analyze.md. A rules file maps column = "regex with one (group)" on the run name:
  stage = '^(exp\\d+)'          # replaces the name rule of stage (config columns still win)
  width = '_w(\\d+)'            # adds a string column
  [depth]                       # full form
  pattern = '_d(\\d+)'
  type = "int"                  # string (default), int, float
  config = ["config_model_depth"]
  from = "tags"                 # the column the patterns read (default: name); a list: each element in turn
A rule cannot name a core run column (id, name, state, tags, …) or an internal one (_…).
-o FILE is written by extension: .parquet (default), .csv (both streamed), .json, .md (built in
memory); --include-history always writes <output stem>_history.parquet. --format: the report on stdout
as table (default), json ({{inputs, dropped, runs, columns, output, history, history_rows}}), or csv or
markdown (the two tables, a blank line between them).
exit codes: 0 done (also when filters left nothing: the empty file is written), 1 not written (an input
still being rewritten by an export after a few tries, a full disk), 2 bad input.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser("aggregate_runs.py", __doc__, EXAMPLES)
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="folders, *_runs.parquet files or globs")
    add_inputs_source_argument(parser, "")
    parser.add_argument(
        "-o",
        "--output",
        type=path_argument,
        default=Path("analysis/unified.parquet"),
        help="output file, written atomically by extension: .parquet .csv .json .md"
        " (default: analysis/unified.parquet)",
    )
    add_states_argument(parser, "keep")
    parser.add_argument(
        "--filter",
        metavar="PATTERN",
        help="keep runs whose name matches this regex (a plain word: substring)",
    )
    parser.add_argument("--no-enrich", action="store_true", help="add no parsed columns (only _source_file)")
    parser.add_argument(
        "--protocol",
        choices=["distribution", "single_graph", "all"],
        default="distribution",
        help="keep runs of this training protocol (default: distribution; `all` keeps every run)",
    )
    parser.add_argument(
        "--include-history",
        action="store_true",
        help="also merge the kept runs' rows of each input's …_history.parquet into <output>_history.parquet,"
        " and of the other files its export wrote (history_other, console, system) into <output>_<name>.parquet",
    )
    parser.add_argument(
        "--rules",
        type=path_argument,
        metavar="FILE",
        help="TOML file of name-parsing rules that replace or add columns",
    )
    add_format_argument(parser, note=" (the report of what was read, dropped and written)")
    args = parser.parse_args(argv)
    args.state = parse_states(args.state)
    args.inputs = [*args.inputs, *map(str, args.source)]
    if not args.inputs:
        parser.error("name the inputs: folders, *_runs.parquet files or globs (or --source PATH)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from shared.analysis.aggregate import aggregate
    from shared.analysis.enrich import load_rules
    from shared.analysis.frames import Selection
    from shared.base.storage import check_output_file, prepare_output_folder
    from shared.cli.progress import TerminalEvents
    from shared.table.exports import check_regex, find_runs_files, one_export_state, open_runs_files
    from shared.table.vocabulary import check_output_suffix

    check_output_suffix(args.output)
    check_output_file(args.output, "-o", folder_made_later=True)
    if args.filter:
        check_regex(args.filter, "--filter")
    rules = load_rules(args.rules)
    events = TerminalEvents()
    paths = find_runs_files(args.inputs, events)
    prepare_output_folder(args.output.parent)
    selection = Selection(args.state, args.filter, args.protocol)

    def read() -> AggregateReport:  # again when an export replaced an input as it was read
        files = open_runs_files(paths, with_history=args.include_history)
        return aggregate(
            files,
            args.output,
            selection,
            rules,
            enrich_output=not args.no_enrich,
            include_history=args.include_history,
            events=events,
        )

    report = one_export_state(read)
    show_report(report, args)
    if report.kept == 0:
        reason = (
            f"{report.emptied_by} removed all that were left"
            if report.emptied_by
            else "the inputs hold no runs"
        )
        log(f"nothing matched: {reason}; wrote an empty table")
    log(f"Wrote {report.kept} runs x {report.columns} columns to {args.output}")
    if report.history_path:
        log(f"Wrote {report.history_rows} history rows to {report.history_path}")
    for name, path in report.streams.items():
        log(f"Wrote the inputs' {name} rows to {path}")
    return 0


def show_report(report: AggregateReport, args: argparse.Namespace) -> None:
    """The runs read and kept per input and the runs each step dropped (of those read), as --format says."""
    from shared.cli.output import print_as
    from shared.cli.tables import print_table
    from shared.table.outputs import rows_frame

    steps, read = [], report.read
    for label, dropped in report.dropped:
        read -= dropped
        steps.append({"step": label, "dropped": dropped, "left": read})
    if args.format == "json":
        history = str(report.history_path) if report.history_path else None
        document = {
            "inputs": report.inputs,
            "dropped": steps,
            "runs": report.kept,
            "columns": report.columns,
            "output": str(args.output),
            "history": history,
            "history_rows": report.history_rows if history else None,
        }
        print(json.dumps(document, indent=2))
    elif args.format == "table":
        print_table(report.inputs, title="Runs per input")
        print_table(steps, title="Dropped")
    else:
        print_as(rows_frame(report.inputs, ["input", "runs", "kept"]), args.format)
        print()
        print_as(rows_frame(steps, ["step", "dropped", "left"]), args.format)


if __name__ == "__main__":
    run_main(main)
