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
from shared.cli.launch import require_dependencies

require_dependencies(__file__)  # under a Python without them, one line saying to use uv

# Heavy imports (polars, wandb) after argument parsing: --help and usage errors answer in a fraction of
# a second.
from shared.base.errors import BadInput
from shared.cli.args import add_api_key_argument, add_timeout_argument, path_argument, script_parser
from shared.cli.main import run_main
from shared.cli.query_args import QUERY_NOTES, add_query_arguments, check_query_arguments
from shared.table.vocabulary import LAST_FROM

if TYPE_CHECKING:
    from shared.query.api import RunInfo
    from shared.query.wandb import WandbQuery

__all__ = ["RunInfo", "WandbQuery"]
_API = {"RunInfo": "shared.query.api", "WandbQuery": "shared.query.wandb"}  # where each name lives

EXAMPLES = f"""\
examples:
  query_topk.py graph_denoise_team/spectral_denoising --metric test/mse -k 5
  query_topk.py team/sae --metric train/loss --where '"metrics/L0" < 50' --aggregation mean_last_n --n-steps 10
  query_topk.py --source wandb/ --metric eval/accuracy --maximize --aggregation max --json
  query_topk.py --source wandb_export/ --metric train/loss --where '"metrics/L0" BETWEEN 30 AND 60'
  query_topk.py --source wandb_export/ team/sae --metric train/loss --details test/mse -o best.json
  query_topk.py team/sae --metric train/loss --pareto metrics/L0 --plot front.pdf
  query_topk.py --source wandb/ --metric train/loss --top 3 --aggregation mean_last_n --plot curves.png --log-y
  query_topk.py --source wandb_export/ --metric metric_test_mse --top 10 --format csv > best.csv

sources: ENTITY/PROJECT on the W&B server your key reaches (read-only; key from --api-key,
WANDB_API_KEY, .env or ~/.netrc; WANDB_BASE_URL for a self-hosted server), or --source PATH (also
spelt --offline, --export; an existing folder in ENTITY/PROJECT's place is read the same way): offline
run logs (a wandb/ folder, an offline-run-* folder or a .wandb file) or a folder written by either
export_runs.py (or one *_runs.parquet), told apart by their files. With --source, ENTITY/PROJECT picks
the project when the files hold several (in an export folder: the one its …_metadata.json records, so
`a b` and `a_b`, whose file names collide, stay apart).

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


class SourceAction(argparse.Action):
    """`--source PATH`; spelt `--offline` or `--export` (the old spellings) it also says which files to
    expect, for the errors of a folder that holds neither (else they are told apart by their files)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.source = values
        namespace.source_kind = {"--offline": "offline", "--export": "export"}.get(option_string or "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser("query_topk.py", __doc__, EXAMPLES)
    parser.add_argument(
        "project",
        nargs="?",
        metavar="ENTITY/PROJECT",
        help="W&B project to query (with --source: the project inside, when there are several)",
    )
    parser.add_argument(
        "--source",
        "--offline",
        "--export",
        type=path_argument,
        action=SourceAction,
        metavar="PATH",
        help="read local files instead of the API: offline run logs (a wandb/ folder, an offline-run-*"
        " folder, a .wandb file) or an export folder (or *_runs.parquet) of either tracker"
        " (--offline and --export are the same flag)",
    )
    add_api_key_argument(parser)
    add_query_arguments(parser, workers_help="concurrent history fetches from the API (default: 8)")
    parser.add_argument(
        "--last-from",
        choices=LAST_FROM,
        default="summary",
        help="where `last` comes from: the run summary (default) or the history's last finite point",
    )
    add_timeout_argument(parser)
    parser.set_defaults(source_kind=None)  # set by SourceAction when --source is given
    args = parser.parse_args(argv)
    check_query_arguments(args)
    if args.source is None and args.project and Path(args.project).expanduser().exists():
        args.source, args.project = Path(args.project), None  # a folder named in the project's place
    if not (args.project or args.source):
        raise BadInput("name a W&B project (ENTITY/PROJECT) or local files with --source PATH")
    if args.source and not args.source.expanduser().exists():
        raise BadInput(f"--source {args.source} does not exist (offline run logs or an export folder)")
    if args.source and args.api_key:
        raise BadInput("--source reads local files: it takes no --api-key")
    return args


def open_query(args: argparse.Namespace) -> WandbQuery:
    """A WandbQuery on the project, offline runs or export the command line names."""
    from shared.cli.progress import TerminalEvents
    from shared.query.wandb import WandbQuery

    events = TerminalEvents()
    if args.source:
        return WandbQuery(
            args.project, source=args.source, kind=args.source_kind, last_from=args.last_from, events=events
        )
    return WandbQuery(
        args.project,
        args.api_key,
        workers=args.workers,
        timeout=args.timeout,
        last_from=args.last_from,
        events=events,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from shared.cli.query import run_query

    return run_query(open_query(args), args)


if __name__ == "__main__":
    run_main(main)
