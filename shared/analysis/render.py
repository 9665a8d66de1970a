"""Result tables as text for people and pipes: cells, pivots with their ranks, plain and markdown; files by extension."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from shared.analysis.frames import Pivot
from shared.base.text import plain_text
from shared.table.outputs import format_value, markdown_text, table_text, write_table

BEST_MARK = "*"
PIVOT_LEGEND = f"cell: best · mean (n=runs with a value); {BEST_MARK} = best in its column"


def pivot_display(
    pivot: Pivot, separator: str = " · "
) -> tuple[list[str], list[list[str]], list[list[tuple[int, int] | None]]]:
    """Header, cell texts (`best · mean (n=…)`) and per cell (rank, rows ranked in that column) of a pivot."""
    labels = pivot.labels
    ranked = dict(pivot.cells.group_by(pivot.cols).len().iter_rows())
    rank = {(r, c): k for r, c, k in pivot.cells.select(pivot.rows, pivot.cols, "rank").iter_rows()}
    header = [format_value(name) for name in (pivot.rows, *labels, "mean rank")]
    texts, ranks = [], []
    for row in pivot.table.iter_rows(named=True):
        name = row[pivot.rows]
        cells, cell_ranks = [format_value(name)], [None]
        for label in labels:
            best, mean, n = row[f"{label}_best"], row[f"{label}_mean"], row[f"{label}_n"]
            cells.append(
                "" if n is None else f"{format_value(best, 4)}{separator}{format_value(mean, 4)} (n={n})"
            )
            cell_ranks.append(None if n is None else (rank[name, label], ranked[label]))
        cells.append(format_value(row["mean_rank"], 3))
        texts.append(cells)
        ranks.append([*cell_ranks, None])
    return header, texts, ranks


def heat_style(rank: int, total: int) -> str:
    """Green for the best rank through yellow to red for the worst."""
    t = 0.0 if total <= 1 else (rank - 1) / (total - 1)
    red, green = (int(255 * min(1.0, 2 * t)), int(200 * min(1.0, 2 * (1 - t))))
    return f"rgb({red},{green},60)" + (" bold" if rank == 1 else "")


def display(
    table: pl.DataFrame, pivot: Pivot | None = None, separator: str = " · "
) -> tuple[list[str], list[list[str]], list[bool], list]:
    """Header, cell texts, numeric flags and (for a pivot) cell ranks of what is shown for `table`."""
    if pivot is not None:
        header, rows, ranks = pivot_display(pivot, separator)
        return header, rows, [False] + [True] * (len(header) - 1), ranks
    return *table_text(table), []


def mark_best(rows: list[list[str]], ranks: list) -> list[list[str]]:
    """Pivot cells that rank first in their column get BEST_MARK appended (for colourless formats)."""
    return [
        [
            cell + (BEST_MARK if rank is not None and rank[0] == 1 else "")
            for cell, rank in zip(row, row_ranks, strict=True)
        ]
        for row, row_ranks in zip(rows, ranks, strict=True)
    ]


def states_note(pivot: Pivot) -> list[str]:
    """The line saying which run states the pivot's cells hold (none when the runs have no state)."""
    if not pivot.states:
        return []
    counts = ", ".join(f"{n} {state}" for state, n in pivot.states.items())
    several = len(pivot.states) > 1 and "finished" in pivot.states
    return [
        f"runs in the cells: {counts}" + (" (--state finished for finished runs only)" if several else "")
    ]


def text_table(table: pl.DataFrame, fmt: str, pivot: Pivot | None = None) -> str:
    """The table as plain or markdown text; a pivot's best cells marked, then its legend."""
    header, rows, numeric, ranks = display(table, pivot)
    if pivot is not None:
        rows = mark_best(rows, ranks)
    text = plain_text(header, rows, numeric) if fmt == "plain" else markdown_text(header, rows, numeric)
    if pivot is None:
        return text
    return text + "\n" + "; ".join([PIVOT_LEGEND, *states_note(pivot)]) + "\n"


def write_output(table: pl.DataFrame, path: Path, *, pivot: Pivot | None = None) -> None:
    """Write the shown table to `path` atomically, in the format its extension names (a pivot's markdown
    with its best cells marked and its legend)."""
    write_table(table, path, markdown=text_table(table, "markdown", pivot) if pivot is not None else None)
