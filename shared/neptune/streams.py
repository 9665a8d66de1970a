"""Neptune series as the tidy streams beside history: string, histogram and file series as history_other,
the captured `monitoring/<id>/stdout|stderr` as console lines, the other float series under `monitoring/`
(cpu, memory, gpu, …) as system metrics, each with the tracker's path as its key."""

from __future__ import annotations

import polars as pl

from shared.neptune.attributes import BOOKKEEPING
from shared.table.console import console_rows
from shared.table.schema import HISTORY_OTHER, SYSTEM, polars_schema

CONSOLE_PATH = r"^monitoring/[^/]+/(stdout|stderr)$"
MONITORING = "monitoring/"
# The points of the series that are not numbers, as the sources hand them over: `type` is history_other's
# (string, histogram, media), `value` its text (a string as it is, a histogram or file as JSON).
OTHER_POINTS = {
    "run_id": pl.String(),
    "key": pl.String(),
    "step": pl.Float64(),
    "timestamp": pl.Datetime("us", "UTC"),
    "type": pl.String(),
    "value": pl.String(),
}


def _outside_bookkeeping(points: pl.DataFrame) -> pl.DataFrame:
    return points.filter(~pl.any_horizontal(pl.col("key").str.starts_with(ns) for ns in BOOKKEEPING))


def _run_ids(ids: dict[str, str]) -> pl.Expr:
    return pl.col("run_id").cast(pl.String).replace(ids)


def history_other(others: pl.DataFrame, ids: dict[str, str]) -> pl.DataFrame:
    """Points of the series that are not numbers (OTHER_POINTS) of the run's own namespaces as
    schema.HISTORY_OTHER rows (steps rounded down, as history's are)."""
    rows = _outside_bookkeeping(others).select(
        _run_ids(ids),
        pl.col("step").cast(pl.Float64).floor().cast(pl.Int64),
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")),
        pl.col("key").cast(pl.String),
        pl.col("type").cast(pl.String),
        pl.col("value").cast(pl.String),
    )
    return rows.cast(polars_schema(tuple(HISTORY_OTHER.columns.items())))


def console_lines(others: pl.DataFrame, ids: dict[str, str]) -> pl.DataFrame:
    """The captured stdout and stderr among the string-series points (OTHER_POINTS) as schema.CONSOLE rows.
    The client logs each write (a `print` is the text, then its newline): the writes of each process and
    stream, in the order they were logged, are split into lines."""
    strings = others.filter(pl.col("type") == "string")
    captured = strings.filter(pl.col("key").str.contains(CONSOLE_PATH)).sort(
        "timestamp", pl.col("step").cast(pl.Float64), maintain_order=True
    )
    chunks = captured.select(
        _run_ids(ids),
        "key",
        pl.col("key").str.extract(CONSOLE_PATH).alias("stream"),
        pl.col("value").cast(pl.String),
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")),
    )
    return console_rows(chunks.iter_rows())


def system_points(points: pl.DataFrame, ids: dict[str, str]) -> pl.DataFrame:
    """Float-series points under `monitoring/` as schema.SYSTEM rows (run_id, timestamp, key, value)."""
    rows = points.filter(pl.col("key").str.starts_with(MONITORING)).select(
        _run_ids(ids),
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")),
        pl.col("key").cast(pl.String),
        pl.col("value").cast(pl.Float64),
    )
    return rows.cast(polars_schema(tuple(SYSTEM.columns.items())))
