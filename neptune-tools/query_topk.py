#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "neptune>=1.14",
#     "matplotlib>=3.9",
#     "polars>=2.1",
#     "pyarrow>=26",
#     "python-dotenv>=1.2",
#     "rich>=15",
# ]
# ///
"""Top-k Neptune runs by a metric under constraints (or their Pareto front against a second metric):
a live server, a neptune-exporter archive or .neptune offline runs."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.cli.launch import require_dependencies

require_dependencies(__file__)  # under a Python without them, one line saying to use uv

# Heavy imports (polars, neptune) after argument parsing: --help and usage errors answer in a fraction
# of a second.
from shared.base.errors import BadInput
from shared.cli.args import path_argument, script_parser
from shared.cli.main import run_main
from shared.cli.query_args import (
    QUERY_NOTES,
    add_lineage_arguments,
    add_query_arguments,
    check_query_arguments,
)

if TYPE_CHECKING:
    from shared.query.api import RunInfo
    from shared.query.neptune import NeptuneQuery

__all__ = ["NeptuneQuery", "RunInfo"]
_API = {"NeptuneQuery": "shared.query.neptune", "RunInfo": "shared.query.api"}  # where each name lives

EXAMPLES = f"""\
examples:
  query_topk.py exports/data --project team/sae --metric train/loss --top 5
  query_topk.py --source neptune_export/ --metric train/loss --state finished   # our own export
  query_topk.py exports/data/team_sae-1a2b3c4d5e6f7a8b --metric eval/accuracy --maximize --aggregation max
  query_topk.py .neptune --metric train/loss --where '"metrics/L0" < 50' --where '"metrics/L1" > 0.1'
  query_topk.py .neptune --metric train/loss --where '"metrics/L0" BETWEEN 30 AND 60' --json
  query_topk.py team/sae --metric train/loss --aggregation mean_last_n --n-steps 20 --state finished
  query_topk.py team/sae --metric train/loss --details eval/accuracy,metrics/L0 -o best.json
  query_topk.py .neptune --metric train/loss --pareto metrics/L0 --plot front.png
  query_topk.py .neptune --metric train/loss -k 3 --aggregation mean_last_n --plot curves.pdf --log-y
  query_topk.py exports/data --metric metric_train_loss -k 10 -o best.csv     # the table as CSV

sources (PROJECT_OR_PATH, or --source PATH): an existing folder is read from disk: a neptune-exporter
data folder (<data>/<project>/*.parquet; --project picks one of several), a .neptune folder of offline
runs, or a folder written by export_runs.py (neptune_export/, wandb_export/).
Anything else is a workspace/project on the Neptune server the token points at (read-only; token from
--api-token, NEPTUNE_API_TOKEN or a .env file).

An archive's first query reads the needed series of every run and keeps small per-series summaries in
$XDG_CACHE_HOME/run-tools (~/.cache/run-tools); later queries on the unchanged archive (same files,
sizes and modification times) answer from those. --no-cache neither reads nor writes them.

{QUERY_NOTES}
exit codes: 0 done (also when no run matched), 1 a server fetch failed, 2 bad input or no token.
"""

_PROJECT_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")  # a server's workspace/project, not a folder


def __getattr__(name: str) -> Any:
    """`NeptuneQuery` and `RunInfo`, this script's Python API (docs/topk.md), imported on first use."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser("query_topk.py", __doc__, EXAMPLES)
    parser.add_argument(
        "target",
        nargs="?",
        metavar="PROJECT_OR_PATH",
        help="workspace/project on the server, or a folder (as --source)",
    )
    parser.add_argument(
        "--source",
        type=path_argument,
        metavar="PATH",
        help="read a folder instead of a server: a neptune-exporter data folder, a .neptune folder or a"
        " folder written by export_runs.py (either tracker's)",
    )
    add_query_arguments(parser, workers_help="concurrent series fetches from a server (default: 8)")
    add_lineage_arguments(parser)
    parser.add_argument(
        "-p",
        "--project",
        metavar="NAME",
        help="the project inside a folder holding several (workspace/project)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="archives: neither read nor write the series summaries kept in ~/.cache/run-tools",
    )
    parser.add_argument(
        "--api-token",
        metavar="TOKEN",
        help="Neptune API token (prefer NEPTUNE_API_TOKEN or .env: flags show in ps)",
    )
    args = parser.parse_args(argv)
    check_query_arguments(args)
    if (args.target is None) == (args.source is None):
        raise BadInput(
            "name a workspace/project or a folder (PROJECT_OR_PATH), or --source PATH: one of them"
        )
    return args


def open_query(args: argparse.Namespace) -> NeptuneQuery:
    """A NeptuneQuery on the folder or project the command line names."""
    from shared.cli.progress import TerminalEvents
    from shared.neptune.sources import source_path
    from shared.query.neptune import NeptuneQuery

    events = TerminalEvents()
    lineage = {"lineage": not args.no_lineage, "experiments": args.experiments}
    path = args.source or source_path(args.target)
    if path.exists() or args.source:
        return NeptuneQuery(args.project, source=path, cache=not args.no_cache, events=events, **lineage)
    if args.project or not _PROJECT_NAME.match(args.target):
        raise BadInput(f"{args.target} is neither an existing folder nor a workspace/project name")
    return NeptuneQuery(args.target, args.api_token, workers=args.workers, events=events, **lineage)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from shared.cli.query import run_query

    return run_query(open_query(args), args)


if __name__ == "__main__":
    run_main(main)
