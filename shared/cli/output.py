"""Tables on stdout: rich on a terminal (a pivot as a heatmap), plain, csv, markdown or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # polars only where a table is made or written: the scripts' parsers import this module
    import polars as pl

    from shared.analysis.frames import Pivot


def print_as(table: pl.DataFrame, fmt: str, *, document: Any = None) -> None:
    """`table` on stdout as csv, json or markdown; JSON is `document` when the tool has a nested answer."""
    if fmt == "json" and document is not None:  # without shared.render, which imports pyarrow: 0.3 s
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
        return
    from shared.table.outputs import flat_columns, json_text, markdown_text, table_text

    if fmt == "csv":
        sys.stdout.write(table.select(flat_columns(table)).write_csv())
    elif fmt == "json":
        sys.stdout.write(json_text(table))
    else:
        sys.stdout.write(markdown_text(*table_text(table)))


def print_rich(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str,
    numeric: Sequence[bool],
    ranks: Sequence[Sequence[tuple[int, int] | None]] | None = None,
    notes: Sequence[str] = (),
) -> None:
    """A rich table fitted to the terminal (`terminal_table`); with `ranks` (a pivot), cells are coloured by
    rank, the best of each column is starred and its columns are taken as they come (see `terminal_table`)."""
    from shared.analysis.render import heat_style
    from shared.cli.tables import console_for, terminal_table

    console = console_for(sys.stdout)
    styles = None
    if ranks is not None:
        rows = [
            [
                ("★ " if rank and rank[0] == 1 else "") + cell
                for cell, rank in zip(row, row_ranks, strict=True)
            ]
            for row, row_ranks in zip(rows, ranks, strict=True)
        ]
        styles = [[heat_style(*rank) if rank else "" for rank in row_ranks] for row_ranks in ranks]
    table = terminal_table(
        header,
        rows,
        numeric=numeric,
        title=title,
        width=console.width,
        styles=styles,
        of_runs=ranks is None,
        notes=notes,
    )
    console.print(table, crop=False)  # wider than the terminal only to keep ids and numbers whole


def render(table: pl.DataFrame, fmt: str, *, title: str, pivot: Pivot | None = None) -> None:
    """Print the table on stdout in `fmt` (rich, plain, markdown or json)."""
    from shared.analysis.render import display, states_note, text_table
    from shared.table.outputs import json_text

    if fmt == "json":
        sys.stdout.write(json_text(table))
    elif fmt == "rich":
        header, rows, numeric, ranks = display(table, pivot, "\n")
        notes = states_note(pivot) if pivot is not None else []
        print_rich(header, rows, title=title, numeric=numeric, ranks=ranks or None, notes=notes)
    else:
        sys.stdout.write(text_table(table, fmt, pivot))
