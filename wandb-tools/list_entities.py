#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "wandb>=0.31",
#     "polars>=2.1",
#     "pyarrow>=26",
#     "python-dotenv>=1.2",
#     "rich>=15",
# ]
# ///
"""List the W&B entities (user, teams) a key reaches and their projects with run statistics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.cli.launch import require_dependencies

require_dependencies(__file__)  # under a Python without them, one line saying to use uv

# Heavy imports (polars, pyarrow, wandb) after argument parsing: --help and usage errors answer in a
# fraction of a second.
from shared.cli.args import (
    add_api_key_argument,
    add_format_argument,
    add_timeout_argument,
    int_argument,
    path_argument,
    script_parser,
    text_argument,
)
from shared.cli.main import log, run_main

EXAMPLES = """\
examples:
  list_entities.py                                  # your entity and your teams, with their projects
  list_entities.py --entity graph_denoise_team      # one entity (repeat --entity for several)
  list_entities.py --discover                       # just the entities this key can reach
  list_entities.py --json > entities.json           # machine-readable (= --format json)
  list_entities.py --format csv -o projects.parquet # one row per project, also to a file

per project: runs, finished runs, and the creation time (UTC) of the newest run.
--format: table (default), json ([{entity, kind, project_count, projects: [...]}]), or csv or markdown
with one row per project (with --discover: per entity). -o FILE also writes it by extension: .json the
JSON, .csv .parquet .md the rows.
credentials as for export_runs.py: --api-key, WANDB_API_KEY, .env, or ~/.netrc (`wandb login`).
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser("list_entities.py", __doc__, EXAMPLES)
    parser.add_argument(
        "-e",
        "--entity",
        action="append",
        type=text_argument,
        default=[],
        help="entity to list (repeatable); default: yours and your teams",
    )
    parser.add_argument(
        "--discover",
        action="store_true",
        help="list every entity the key can reach, without project statistics",
    )
    add_format_argument(parser)
    parser.add_argument(
        "-o",
        "--output",
        type=path_argument,
        metavar="FILE",
        help="also write the list to FILE by extension: .json .csv .parquet .md",
    )
    parser.add_argument(
        "--workers", type=int_argument, default=8, help="projects queried at once (default: 8)"
    )
    add_api_key_argument(parser)
    add_timeout_argument(parser)
    args = parser.parse_args(argv)
    args.entity = list(dict.fromkeys(args.entity))  # an entity given twice is listed once
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


ENTITY_COLUMNS = ["entity", "kind", "project_count"]
PROJECT_COLUMNS = ["entity", "kind", "project", "runs", "finished", "last_run"]


def flat_rows(report: list[dict], discover: bool) -> tuple[list[dict], list[str]]:
    """One row per entity (--discover) or per project, with the entity's name and kind."""
    if discover:
        return report, ENTITY_COLUMNS
    rows = [{"entity": e["entity"], "kind": e["kind"]} | project for e in report for project in e["projects"]]
    return rows, PROJECT_COLUMNS


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from concurrent.futures import ThreadPoolExecutor

    from shared.base.storage import check_output_file
    from shared.cli.output import print_as
    from shared.cli.progress import TerminalEvents
    from shared.cli.tables import print_table
    from shared.table.outputs import rows_frame, write_table
    from shared.table.vocabulary import check_output_suffix
    from shared.wandb.api import connect, project_names, project_stats, reachable_entities
    from shared.wandb.auth import wandb_credentials

    if args.output:
        check_output_file(args.output, "-o")
        check_output_suffix(args.output)
    api = connect(wandb_credentials(args.api_key, TerminalEvents()), args.timeout)
    entities = [(name, "given") for name in args.entity] or reachable_entities(api)
    report = []
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for name, kind in entities:
            projects = project_names(api, name)
            entry = {"entity": name, "kind": kind, "project_count": len(projects)}
            if not args.discover:
                entry["projects"] = list(
                    pool.map(lambda project, entity=name: project_stats(api, entity, project), projects)
                )
            report.append(entry)
    rows, columns = flat_rows(report, args.discover)
    if args.output:
        write_table(rows_frame(rows, columns), args.output, document=report)
        log(f"wrote {len(rows)} rows to {args.output}")
    if args.format != "table":
        print_as(rows_frame(rows, columns), args.format, document=report)
    elif args.discover:
        print_table(
            [{k: e[k] for k in ("entity", "kind", "project_count")} for e in report],
            title="Reachable entities",
        )
    else:
        for entry in report:
            print_table(
                entry["projects"],
                title=f"{entry['entity']} ({entry['kind']})",
                empty=f"{entry['entity']}: no projects",
            )
    return 0


if __name__ == "__main__":
    run_main(main)
