#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "wandb>=0.31",
#     "polars>=2.1",
#     "pyarrow>=26",
#     "python-dotenv>=1.2",
#     "rich>=15",
#     "urllib3>=2.2",
# ]
# ///
"""Export W&B runs (from the cloud API or from offline run files) to parquet: runs, history, metadata."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.cli.launch import require_dependencies

require_dependencies(__file__)  # under a Python without them, one line saying to use uv

# Heavy imports (polars, pyarrow, wandb) after argument parsing: --help and usage errors answer in a
# fraction of a second.
from shared.base.errors import BadInput
from shared.base.limits import parse_since
from shared.base.retry import DEFAULT_MAX_RETRY_TIME, Retry
from shared.cli.args import (
    add_api_key_argument,
    add_files_argument,
    add_format_argument,
    add_stream_arguments,
    add_timeout_argument,
    int_argument,
    path_argument,
    script_parser,
    streams_asked,
    text_argument,
)
from shared.cli.main import run_main

if TYPE_CHECKING:
    from shared.base.events import Events
    from shared.export.pipeline import ExportTarget

EXAMPLES = """\
examples:
  export_runs.py -e graph_denoise_team -p spectral_denoising
  export_runs.py -e graph_denoise_team -p "*" -o wandb_export/        # every project of the entity
  export_runs.py -e igorkraw --since 7d                               # runs created in the last 7 days
  export_runs.py -e team -p proj --include-history --history-keys train/loss,test/mse --workers 16
  export_runs.py --source wandb/ -o wandb_export/                     # offline run files, no account
  export_runs.py --source wandb/ --include-history --include-console --include-system-metrics
  export_runs.py -e team -p "*" -o /backups/wandb --incremental --include-history   # cron mode

output (per project, each file written atomically when the project completes):
  {entity}_{project}_runs.parquet      one row per run: core, config_*, metric_*, _config_json, _summary_json
  {entity}_{project}_history.parquet   one row per logged numeric value (with --include-history)
  {entity}_{project}_history_other.parquet  one row per other history value: type and value (JSON)
  {entity}_{project}_console.parquet   one row per printed line (with --include-console)
  {entity}_{project}_system.parquet    one row per system-metric sample and key (--include-system-metrics)
  {entity}_{project}_metadata.json     what was exported, when, with which filters and versions
  {entity}_{project}_state.json        what --incremental needs: options, export time, each run's heartbeat
  (when another export's files hold that name, `a b` vs `a_b`, or the same project from the other W&B
  source (API, offline logs) or Neptune: {entity}_{project}-{8 hex digest}_…)
  .export.lock                         held while an export writes the folder (PID, start time, progress)

cron (--incremental): only runs created or with a heartbeat since the previous export are fetched and
merged into the files; failed requests are retried with backoff for up to --max-retry-time seconds; a
second export into the same folder exits 3; a killed export, run again within 12 h, skips the projects
it had completed.

credentials (first found wins): --api-key, WANDB_API_KEY, .env (WANDB_API_KEY or
GRAPH_DENOISE_TEAM_SERVICE), ~/.netrc from `wandb login`. WANDB_BASE_URL selects a self-hosted server.
exit codes: 0 done, 1 some project not exported (named on stderr), 2 bad input or credentials,
3 the output folder is in use by another export.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser("export_runs.py", __doc__, EXAMPLES)
    parser.add_argument(
        "-e",
        "--entity",
        type=text_argument,
        help="W&B entity (user or team); default: the key's default entity",
    )
    parser.add_argument(
        "-p",
        "--project",
        action="extend",
        nargs="+",
        type=text_argument,
        default=[],
        metavar="NAME",
        help='project name(s), repeatable or comma-separated; "*" or none = every project of the entity',
    )
    parser.add_argument(
        "-o",
        "--output",
        type=path_argument,
        default=Path("wandb_export"),
        help="output folder (default: wandb_export/)",
    )
    parser.add_argument(
        "--since", help="only runs created since: 7d, 24h, 2w, 30m, or an ISO date (UTC) like 2026-01-18"
    )
    parser.add_argument(
        "--include-history",
        action="store_true",
        help="also export every logged history value: numbers to {stem}_history.parquet, the others (strings,"
        " booleans, histograms, media, tables) to {stem}_history_other.parquet",
    )
    parser.add_argument(
        "--history-keys",
        type=text_argument,
        metavar="A,B",
        help="only these history keys (implies --include-history)",
    )
    add_stream_arguments(parser)
    add_files_argument(parser)
    parser.add_argument(
        "--workers", type=int_argument, default=32, help="concurrent history downloads (default: 32)"
    )
    add_api_key_argument(parser)
    add_timeout_argument(parser)
    parser.add_argument(
        "--source",
        "--offline",
        action="append",
        type=path_argument,
        default=[],
        metavar="PATH",
        help="read offline runs instead of the API: a wandb/ folder, an offline-run-* folder or a .wandb file"
        " (repeatable; --offline is the same flag)",
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="cron mode: fetch only runs created or updated since the previous export into -o, and merge"
        " them into its files (the first export is a full one)",
    )
    parser.add_argument(
        "--max-retry-time",
        type=float,
        default=DEFAULT_MAX_RETRY_TIME,
        metavar="S",
        help="keep retrying a failing request (a page of runs, a run's history) for up to S seconds"
        f" from its first failure, with exponential backoff (default: {DEFAULT_MAX_RETRY_TIME:.0f}; 0: never)",
    )
    add_format_argument(parser, formats=("table", "json"), note=": the summary of what was exported")
    args = parser.parse_args(argv)
    if not args.max_retry_time >= 0:  # also refuses nan
        parser.error("--max-retry-time must be 0 or more")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    args.history_keys = (
        [k.strip() for k in args.history_keys.split(",") if k.strip()] if args.history_keys else None
    )
    args.include_history = args.include_history or bool(args.history_keys)
    names = (name.strip() for item in args.project for name in item.split(","))
    args.project = list(dict.fromkeys(name for name in names if name))  # a name given twice is exported once
    args.since_text = args.since
    args.since = parse_since(args.since) if args.since is not None else None  # "" is no time either
    if args.source and (args.entity or args.project or args.api_key):
        parser.error("--source reads local files: it takes no --entity, --project or --api-key")
    if args.source and args.incremental:
        parser.error(
            "--incremental updates exports of the W&B API; --source (--offline) reads its files in full every time"
        )
    return args


def api_targets(args: argparse.Namespace, events: Events) -> list[ExportTarget]:
    """A source per project of the entity to export, checked first: the key, the entity, the names."""
    from shared.export.pipeline import ExportTarget
    from shared.wandb.api import connect, default_entity, project_names
    from shared.wandb.auth import wandb_credentials
    from shared.wandb.sources import ApiSource

    credentials = wandb_credentials(args.api_key, events)
    api = connect(credentials, args.timeout)
    entity = args.entity or default_entity(api)
    if not entity:
        raise BadInput("no --entity given and the key has no default entity")
    retry = Retry(max_retry_time=args.max_retry_time, notify=events.note)
    available = project_names(api, entity, retry)
    wanted = available if not args.project or "*" in args.project else args.project
    unknown = [name for name in args.project if name != "*" and name not in available]
    if unknown:
        raise BadInput(
            f"unknown project(s) in {entity}: {', '.join(unknown)} (available: {', '.join(available) or 'none'})"
        )
    options = {"api": api, "server": credentials.server, "workers": args.workers, "timeout": args.timeout}
    return [
        ExportTarget(
            ApiSource(project, entity=entity, retry=retry, events=events, **options), (entity, project)
        )
        for project in wanted
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from importlib.metadata import version

    from shared.cli.exports import report_exports
    from shared.cli.progress import TerminalEvents
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs

    events = TerminalEvents()
    if args.source:
        from shared.wandb.sources import OfflineSource

        targets = [ExportTarget(OfflineSource(args.source, events=events))]
    else:
        targets = api_targets(args, events)
    options = ExportOptions(
        args.output,
        include_history=args.include_history,
        streams=streams_asked(args),
        include_files=args.include_files,
        file_workers=args.workers,
        history_keys=tuple(args.history_keys) if args.history_keys else None,
        since=args.since,
        since_text=args.since_text,
        incremental=args.incremental,
        metadata={"wandb_version": version("wandb")},
    )
    outcome = export_runs(targets, options, events)
    report_exports(outcome, args.output, as_json=args.format == "json")
    return 0


if __name__ == "__main__":
    run_main(main)
