#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "wandb>=0.31",
#     "matplotlib>=3.9",
#     "polars>=2.1",
#     "pyarrow>=26",
#     "python-dotenv>=1.2",
#     "rich>=15",
# ]
# ///
"""Top-k W&B runs by a metric under constraints (or their Pareto front against a second metric):
the W&B API, offline run logs or a folder written by export_runs.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Heavy imports (polars, wandb) after argument parsing: --help and usage errors answer in a fraction of
# a second.
from shared.base.errors import BadInput
from shared.cli.args import add_timeout_argument, path_argument, script_parser
from shared.cli.main import run_main
from shared.cli.query_args import QUERY_NOTES, add_query_arguments, check_query_arguments
from shared.table.vocabulary import LAST_FROM, WANDB_STATES

if TYPE_CHECKING:
    from shared.query.api import RunInfo
    from shared.query.wandb import WandbQuery

__all__ = ["RunInfo", "WandbQuery"]
_API = {"RunInfo": "shared.query.api", "WandbQuery": "shared.query.wandb"}  # where each name lives

EXAMPLES = f"""\
examples:
  query_topk.py graph_denoise_team/spectral_denoising --metric test/mse -k 5
  query_topk.py team/sae --metric train/loss --where '"metrics/L0" < 50' --aggregation mean_last_n --n-steps 10
  query_topk.py --offline wandb/ --metric eval/accuracy --maximize --aggregation max --json
  query_topk.py --export wandb_export/ --metric train/loss --where '"metrics/L0" BETWEEN 30 AND 60'
  query_topk.py --export wandb_export/ team/sae --metric train/loss --details test/mse -o best.json
  query_topk.py team/sae --metric train/loss --pareto metrics/L0 --plot front.pdf
  query_topk.py --offline wandb/ --metric train/loss -k 3 --aggregation mean_last_n --plot curves.png --log-y
  query_topk.py --export wandb_export/ --metric metric_test_mse -k 10 --format csv > best.csv

sources: ENTITY/PROJECT on the W&B server your key reaches (read-only; key from WANDB_API_KEY, .env or
~/.netrc; WANDB_BASE_URL for a self-hosted server), --offline PATH (a wandb/ folder, an offline-run-*
folder or a .wandb file) or --export DIR (a folder written by export_runs.py, or one *_runs.parquet).
With --offline or --export, ENTITY/PROJECT picks the project when the files hold several (in an export
folder: the one its …_metadata.json records, so `a b` and `a_b`, whose file names collide, stay apart).

last: the run summary's value, which W&B sets to the last value logged (so no history is read); a
summary value that is NaN/inf or a dict falls back to the history's last finite point. --last-from
history always uses the history (when your code overwrote summary values). Other aggregations read
the history of only the runs and keys the query needs (from the API: --workers at a time).

{QUERY_NOTES}
exit codes: 0 done (also when no run matched), 1 a server fetch failed, 2 bad input or no key.
"""


def __getattr__(name: str) -> Any:
    """`WandbQuery` and `RunInfo`, this script's Python API (docs/topk.md), imported on first use."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser("query_topk.py", __doc__, EXAMPLES)
    parser.add_argument(
        "project",
        nargs="?",
        metavar="ENTITY/PROJECT",
        help="W&B project to query (with --offline/--export: the project inside, when there are several)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--offline", type=path_argument, metavar="PATH", help="read offline run logs instead of the API"
    )
    source.add_argument(
        "--export", type=path_argument, metavar="DIR", help="read a folder written by export_runs.py"
    )
    add_query_arguments(
        parser, states=WANDB_STATES, workers_help="concurrent history fetches from the API (default: 8)"
    )
    parser.add_argument(
        "--last-from",
        choices=LAST_FROM,
        default="summary",
        help="where `last` comes from: the run summary (default) or the history's last finite point",
    )
    add_timeout_argument(parser)
    args = parser.parse_args(argv)
    check_query_arguments(args)
    if not (args.project or args.offline or args.export):
        raise BadInput("name a W&B project (ENTITY/PROJECT), --offline PATH or --export DIR")
    return args


def open_query(args: argparse.Namespace) -> WandbQuery:
    """A WandbQuery on the project, offline runs or export the command line names."""
    from shared.cli.progress import TerminalEvents
    from shared.query.wandb import WandbQuery

    events = TerminalEvents()
    if args.offline or args.export:
        kind = "offline" if args.offline else "export"
        path = args.offline or args.export
        return WandbQuery(args.project, source=path, kind=kind, last_from=args.last_from, events=events)
    return WandbQuery(
        args.project, workers=args.workers, timeout=args.timeout, last_from=args.last_from, events=events
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from shared.cli.query import run_query

    return run_query(open_query(args), args)


if __name__ == "__main__":
    run_main(main)
