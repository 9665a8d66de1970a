"""Console output as schema.CONSOLE rows: trackers capture what a run printed in chunks as written (a
`print` is often two: the text, then its newline); lines are what a reader wants."""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from shared.table.schema import CONSOLE, polars_schema


def console_rows(chunks: Iterable[tuple[str, str, str, str]]) -> pl.DataFrame:
    """Chunks (run_id, channel, stream, text) in the order they were written → one row per line (run_id,
    line, stream, text): each channel's text (a process' stdout, say) split at its newlines, a run's lines
    numbered from 0 in the order they began. A last line without its newline is kept."""
    open_lines: dict[tuple[str, str], tuple[int, str, list[str]]] = {}  # channel → (began at, stream, parts)
    done: list[tuple[str, int, str, str]] = []
    for order, (run_id, channel, stream, text) in enumerate(chunks):
        began, _, parts = open_lines.pop((run_id, channel), (order, stream, []))
        *complete, rest = text.split("\n")
        for piece in complete:
            done.append((run_id, began, stream, "".join([*parts, piece])))
            began, parts = order, []
        if rest or parts:
            open_lines[run_id, channel] = (began, stream, [*parts, rest])
    done += [
        (run_id, began, stream, "".join(parts)) for (run_id, _), (began, stream, parts) in open_lines.items()
    ]
    frame = pl.DataFrame(
        done,
        schema={"run_id": pl.String, "began": pl.Int64, "stream": pl.String, "text": pl.String},
        orient="row",
    ).sort("run_id", "began", maintain_order=True)
    rows = frame.select(
        "run_id", pl.int_range(pl.len(), dtype=pl.Int64).over("run_id").alias("line"), "stream", "text"
    )
    return rows.cast(polars_schema(tuple(CONSOLE.columns.items())))
