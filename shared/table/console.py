"""Console output as schema.CONSOLE rows: trackers capture what a run printed in chunks as written (a
`print` is often two: the text, then its newline); lines are what a reader wants."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import polars as pl

from shared.table.schema import CONSOLE, polars_schema

Chunk = tuple[str, str, str, str, datetime | None]  # run_id, channel, stream, text, when it was written


def console_rows(chunks: Iterable[Chunk]) -> pl.DataFrame:
    """Chunks in the order they were written → one row per line (run_id, line, timestamp, stream, text):
    each channel's text (a process' stdout, say) split at its newlines, a run's lines numbered from 0 in
    the order they began, each timed by the chunk it began in (null where the tracker keeps no time). A
    last line without its newline is kept."""
    Line = tuple[int, datetime | None, str, list[str]]  # began at, its time, stream, parts
    open_lines: dict[tuple[str, str], Line] = {}  # by run and channel
    done: list[tuple[str, int, datetime | None, str, str]] = []
    for order, (run_id, channel, stream, text, written) in enumerate(chunks):
        began, at, _, parts = open_lines.pop((run_id, channel), (order, written, stream, []))
        *complete, rest = text.split("\n")
        for piece in complete:
            done.append((run_id, began, at, stream, "".join([*parts, piece])))
            began, at, parts = order, written, []
        if rest or parts:
            open_lines[run_id, channel] = (began, at, stream, [*parts, rest])
    done += [
        (run_id, began, at, stream, "".join(parts))
        for (run_id, _), (began, at, stream, parts) in open_lines.items()
    ]
    frame = pl.DataFrame(
        done,
        schema={
            "run_id": pl.String,
            "began": pl.Int64,
            "timestamp": pl.Datetime("us", "UTC"),
            "stream": pl.String,
            "text": pl.String,
        },
        orient="row",
    ).sort("run_id", "began", maintain_order=True)
    rows = frame.select(
        "run_id",
        pl.int_range(pl.len(), dtype=pl.Int64).over("run_id").alias("line"),
        "timestamp",
        "stream",
        "text",
    )
    return rows.cast(polars_schema(tuple(CONSOLE.columns.items())))
