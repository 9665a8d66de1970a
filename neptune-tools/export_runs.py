#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "neptune>=1.14",
#     "polars>=2.1",
#     "pyarrow>=26",
#     "python-dotenv>=1.2",
#     "rich>=15",
# ]
# ///
"""Export Neptune runs (a server, a neptune-exporter archive or .neptune offline runs) to the W&B exporter's parquet files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.cli.launch import require_dependencies

require_dependencies(__file__)  # under a Python without them, one line saying to use uv

# Heavy imports (polars, pyarrow, neptune) after argument parsing: --help and usage errors answer in a
# fraction of a second.
from shared.cli.args import (
    add_files_argument,
    add_format_argument,
    add_stream_arguments,
    int_argument,
    script_parser,
    streams_asked,
)
from shared.cli.main import run_main

EXAMPLES = """\
examples:
  export_runs.py --source exports/data                       # every project of a neptune-exporter archive
  export_runs.py --source exports/data -p team/sae -o neptune_export/ --include-history
  export_runs.py --source .neptune -p team/sae               # offline runs, filed under team/sae
  export_runs.py -p team/sae -p team/probe --include-history # projects on a Neptune server
  export_runs.py --source exports/data --json > summary.json

sources: --source reads a folder: a neptune-exporter data folder (<data>/<project>/*.parquet; -p picks
projects, default all) or a .neptune folder of offline runs (its log does not name the project: -p
names it, default offline/uncategorized). Without --source, each -p is a workspace/project on the
Neptune server the token points at (read-only; token from --api-token, NEPTUNE_API_TOKEN or .env).

output (per project, the same files and columns as wandb-tools/export_runs.py; each file written
atomically when the project completes, the metadata last):
  {workspace}_{project}_runs.parquet      one row per run: core (from sys/*), config_*, metric_*, raw JSON
  {workspace}_{project}_history.parquet   one row per float-series point (with --include-history)
  {workspace}_{project}_history_other.parquet  one row per string-series value (with --include-history)
  {workspace}_{project}_console.parquet   one row per line of monitoring/*/stdout|stderr (--include-console)
  {workspace}_{project}_system.parquet    monitoring/* float series (--include-system-metrics)
  {workspace}_{project}_metadata.json     what was exported, when, from where (source: neptune)
  (when another export's files hold that name, `a b` vs `a_b` or the same name from W&B:
  {workspace}_{project}-{8 hex digest}_…)
  .export.lock                            held while an export writes the folder (PID, start time, progress)
The column mapping is in docs/neptune_export.md. aggregate_runs.py and analyze_runs.py read these files.
exit codes: 0 done, 1 some project not exported (named on stderr), 2 bad input or no token,
3 the output folder is in use by another export.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser("export_runs.py", __doc__, EXAMPLES)
    parser.add_argument(
        "-p",
        "--project",
        action="extend",
        nargs="+",
        default=[],
        metavar="WORKSPACE/PROJECT",
        help="project(s), repeatable or comma-separated: on the server; in an archive, which ones "
        "(default all); for offline runs, the project to file them under",
    )
    parser.add_argument(
        "--source",
        metavar="PATH",
        help="read a folder instead of a server: a neptune-exporter data folder or a .neptune folder",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("neptune_export"),
        help="output folder, created if needed (default: neptune_export/)",
    )
    parser.add_argument(
        "--include-history",
        action="store_true",
        help="also export every float-series point, and every string-series value ({stem}_history_other.parquet)",
    )
    add_stream_arguments(parser)
    add_files_argument(parser)
    parser.add_argument(
        "--api-token", help="Neptune API token (prefer NEPTUNE_API_TOKEN or .env: a flag shows up in `ps`)"
    )
    parser.add_argument(
        "--workers", type=int_argument, default=8, help="series fetched at once from a server (default: 8)"
    )
    add_format_argument(parser, formats=("table", "json"), note=": the summary of what was exported")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.source is not None and args.api_token:
        parser.error("--source reads local files: it takes no --api-token")
    args.project = [name.strip() for item in args.project for name in item.split(",") if name.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from importlib.metadata import version

    from shared.cli.exports import report_exports
    from shared.cli.progress import TerminalEvents
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
    from shared.neptune.sources import export_sources

    events = TerminalEvents()
    sources = export_sources(
        args.project, args.source, api_token=args.api_token, workers=args.workers, events=events
    )
    options = ExportOptions(
        args.output,
        include_history=args.include_history,
        streams=streams_asked(args),
        include_files=args.include_files,
        file_workers=args.workers,
        metadata={
            "neptune_version": version("neptune"),
            "source_path": str(args.source) if args.source else None,
        },
    )
    outcome = export_runs([ExportTarget(source, source.key) for source in sources], options, events)
    report_exports(outcome, args.output, as_json=args.format == "json", owner="workspace")
    return 0


if __name__ == "__main__":
    run_main(main)
