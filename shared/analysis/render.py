"""Result tables as text for people and pipes: cells, pivots with their ranks, plain and markdown; files by extension."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
import polars as pl
from shared.analysis.frames import Pivot
from shared.base.errors import UsageError
from shared.base.text import printable
from shared.table.exports import cast_column
from shared.base.storage import atomic_path, check_output_file, prepare_output_folder
from shared.cli.tables import console_for, plain_text, terminal_table


OUTPUT_SUFFIXES = (".csv", ".parquet", ".json", ".md")


BEST_MARK = "*"


PIVOT_LEGEND = f"cell: best · mean (n=runs with a value); {BEST_MARK} = best in its column"


def format_value(value: Any, digits: int = 6) -> str:
    """A cell as text: floats to `digits` significant digits, null as empty, control characters escaped
    (a newline would break its row)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else f"{value:.{digits}g}"
    if isinstance(value, list):
        return printable(", ".join(map(str, value)))
    return printable(str(value))


def text_rows(table: pl.DataFrame) -> list[list[str]]:
    """Every cell of `table` as display text."""
    return [[format_value(v) for v in row] for row in table.iter_rows()]


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


def markdown_text(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """A GitHub markdown table."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rule = "| " + " | ".join("---:" if num else "---" for num in numeric) + " |"
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def json_text(table: pl.DataFrame) -> str:
    """The table as a JSON array of row objects (non-finite numbers as null)."""
    return table.write_json() + "\n"


def display(
    table: pl.DataFrame, pivot: Pivot | None = None, separator: str = " · "
) -> tuple[list[str], list[list[str]], list[bool], list]:
    """Header, cell texts, numeric flags and (for a pivot) cell ranks of what is shown for `table`."""
    if pivot is not None:
        header, rows, ranks = pivot_display(pivot, separator)
        return header, rows, [False] + [True] * (len(header) - 1), ranks
    numeric = [dtype.is_numeric() for dtype in table.dtypes]
    return [format_value(name) for name in table.columns], text_rows(table), numeric, []


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


def check_output(path: Path) -> None:
    """UsageError for an -o file we cannot write: an extension not one of ours, a folder, no write access."""
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(
            f"-o {path}: unknown extension {path.suffix or '(none)'} (use {', '.join(OUTPUT_SUFFIXES)})"
        )
    check_output_file(path, "-o", folder_made_later=True)


def write_output(table: pl.DataFrame, path: Path, *, pivot: Pivot | None = None) -> None:
    """Write the shown table to `path` atomically, in the format its extension names."""
    check_output(path)
    prepare_output_folder(path.parent if str(path.parent) else Path("."))
    suffix = path.suffix.lower()
    with atomic_path(path) as temp:
        if suffix == ".parquet":
            table.write_parquet(temp, compression="zstd")
        elif suffix == ".csv":
            flat = table.select(
                cast_column(c, d, pl.String) if d.is_nested() else pl.col(c) for c, d in table.schema.items()
            )
            flat.write_csv(temp)
        elif suffix == ".json":
            temp.write_text(json_text(table), encoding="utf-8")
        else:
            temp.write_text(text_table(table, "markdown", pivot), encoding="utf-8")
