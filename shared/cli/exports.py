"""What an export wrote, as a table or JSON on stdout, and the exit status it ends with."""

from __future__ import annotations

import json
from pathlib import Path

from shared.base.errors import Incomplete
from shared.cli.main import log
from shared.cli.tables import print_table
from shared.export.pipeline import ExportOutcome


def report_exports(outcome: ExportOutcome, folder: Path, *, as_json: bool, owner: str = "entity") -> None:
    """What was exported, as a table (or JSON) on stdout; Incomplete (exit 1) naming what was not,
    projects that failed and projects whose files lack runs the source reported alike."""
    results, failures = outcome.results, outcome.failures
    rows = [
        {
            owner: r.entity,
            "project": r.project,
            "runs": r.runs,
            "history_rows": r.history_rows if r.history_path else None,
            "runs_file": r.runs_path.name,
        }
        for r in results
    ]
    shortfalls = [r.shortfall for r in results if r.shortfall]
    if as_json:
        print(json.dumps({"exported": rows, "failed": failures, "incomplete": shortfalls}, indent=2))
    else:
        print_table(rows, title=f"Exported to {folder}/")
    for shortfall in shortfalls:
        log(f"error: {shortfall}")
    problems = [f"not exported: {', '.join(failures)}"] if failures else []
    if shortfalls:
        problems.append(
            f"runs missing from: {', '.join(f'{r.entity}/{r.project}' for r in results if r.shortfall)}"
        )
    if problems:
        raise Incomplete("; ".join(problems))
