"""Terminal tables: rich on stdout, plain when piped, and a clear line when there is nothing to show."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared.cli import printable


class _DataConsole(Console):
    """Rich's console, except that a reader gone away (`| head`) is a BrokenPipeError for run_main to
    treat as success: rich's own handling exits with status 1 and says nothing."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def console_for(stream: TextIO) -> Console:
    """A rich console on `stream`; piped output gets its natural width instead of 80 folded columns."""
    return _DataConsole(file=stream) if stream.isatty() else _DataConsole(file=stream, width=10_000)


def literal(text: str) -> str:
    """`text` for rich to print as it is: markup escaped (`[red]` would style it, `[/x]` fail) and control
    characters too (a newline would break its table row, an escape sequence reach the terminal)."""
    return escape(printable(text))


def print_table(rows: Sequence[dict[str, Any]], *, title: str, empty: str = "nothing to show") -> None:
    """Print dict rows as a table on stdout; columns follow the first row's keys."""
    console = console_for(sys.stdout)
    if not rows:
        console.print(literal(empty))
        return
    table = Table(title=literal(title), title_justify="left")
    for column in rows[0]:
        numeric = all(isinstance(row.get(column), int | float) for row in rows)
        table.add_column(literal(column), justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*(literal("" if value is None else str(value)) for value in row.values()))
    console.print(table)
