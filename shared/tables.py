"""Terminal tables: rich on stdout, plain when piped, and a clear line when there is nothing to show."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def print_table(rows: Sequence[dict[str, Any]], *, title: str, empty: str = "nothing to show") -> None:
    """Print dict rows as a table on stdout; columns follow the first row's keys."""
    # Piped or redirected output gets the table's natural width instead of 80 folded columns.
    console = Console() if sys.stdout.isatty() else Console(width=10_000)
    if not rows:
        console.print(empty)
        return
    table = Table(title=title, title_justify="left")
    for column in rows[0]:
        numeric = all(isinstance(row.get(column), int | float) for row in rows)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row.values()))
    console.print(table)
