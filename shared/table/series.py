"""Per-series aggregates of tidy points (last, mean of the last n, min, max, mean) and the summaries that answer them again."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from shared.table.vocabulary import AGGREGATIONS

RUN = "run_id"


SUMMARY_TAIL = 100  # finite values a summary keeps per series: mean_last_n up to this window


SUMMARY_VALUES = ("last", "min", "max", "mean_all")  # the aggregations a summary holds as one value


def check_aggregation(aggregation: str, n_steps: int) -> None:
    """Raise ValueError for an unknown aggregation or a non-positive window."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r} (choose from {', '.join(AGGREGATIONS)})")
    if aggregation == "mean_last_n" and n_steps < 1:
        raise ValueError(f"n_steps must be at least 1 (got {n_steps})")


def _value_expr(aggregation: str, n_steps: int) -> pl.Expr:
    value = pl.col("value")
    return {
        "last": value.last(),
        "mean_last_n": value.tail(n_steps).mean(),
        "min": value.min(),
        "max": value.max(),
        "mean_all": value.mean(),
    }[aggregation]


def _blocks(frame: pl.DataFrame) -> tuple[pl.DataFrame, bool]:
    """Number the runs of consecutive rows with one (run, key); also whether a step goes backwards in one."""
    blocked = frame.with_columns(pl.struct(RUN, "key").rle_id().set_sorted().alias("block"))
    same_block = pl.col("block") == pl.col("block").shift()
    backwards = blocked.select((same_block & (pl.col("step") < pl.col("step").shift())).any()).item()
    return blocked, bool(backwards)


def _grouped(frame: pl.DataFrame, exprs: Sequence[pl.Expr]) -> pl.DataFrame | None:
    """`exprs` over the finite values of each block of (run, key) rows (nulls without one); None when a
    step goes backwards in a block or a series is split over several blocks."""
    blocked, backwards = _blocks(frame)
    first_rows = (pl.col("block") != pl.col("block").shift()).fill_null(True)
    series = blocked.lazy().filter(first_rows).select("block", RUN, "key").collect()
    if backwards or not series.select(pl.struct(RUN, "key").is_unique().all()).item():
        return None
    finite = blocked.lazy().select("block", "value").filter(pl.col("value").is_finite())
    values = finite.group_by("block").agg(*exprs).collect()
    return series.join(values, on="block", how="left").drop("block")


def _series(
    points: pl.DataFrame | pl.LazyFrame, keys: Sequence[str], exprs: Sequence[pl.Expr]
) -> pl.DataFrame:
    """One row per (run, key) with any point: `exprs` over its finite values in step order (null if none).

    Exporters write each series as one block of rows in step order; then the blocks are the groups and
    nothing is hashed or sorted. Any other layout is sorted by (run, key, step) first, keeping the input
    order of equal steps.
    """
    frame = (  # run_id and key may be String or Categorical
        points.lazy()
        .select(RUN, "key", pl.col("step").cast(pl.Float64), pl.col("value").cast(pl.Float64))
        .filter(pl.col("key").is_in(list(dict.fromkeys(keys))))
        .collect()
        .rechunk()  # a scan of many files gives a chunk per row group: the passes below run 2-4x faster on one
    )
    grouped = _grouped(frame, exprs)
    if grouped is None:
        ordered = frame.sort([RUN, "key", "step"], nulls_last=False, maintain_order=True)
        grouped = _grouped(ordered, exprs)
    assert grouped is not None
    return grouped


def aggregate(
    points: pl.DataFrame | pl.LazyFrame, keys: Sequence[str], aggregation: str = "last", n_steps: int = 10
) -> pl.DataFrame:
    """One row per (run, key) with any point: the aggregate of its finite values by step (null if none)."""
    check_aggregation(aggregation, n_steps)
    long = _series(points, keys, [_value_expr(aggregation, n_steps).alias("value")])
    return long.select(pl.col(RUN).cast(pl.String), pl.col("key").cast(pl.String), "value")


def summarize(
    points: pl.DataFrame | pl.LazyFrame, keys: Sequence[str], tail: int = SUMMARY_TAIL
) -> pl.DataFrame:
    """What every aggregation needs from each (run, key) series, computed as `aggregate` computes it.

    Columns: run_id, key, last, min, max, mean_all (null without a finite value) and tail (the last
    `tail` finite values in step order, null without one): every aggregation but a mean_last_n window
    longer than `tail` is answered from these (`summary_points`).
    """
    values = [_value_expr(name, tail).alias(name) for name in SUMMARY_VALUES]
    summary = _series(points, keys, [*values, pl.col("value").tail(tail).alias("tail")])
    return summary.with_columns(pl.col(RUN).cast(pl.String), pl.col("key").cast(pl.String))


def summarize_values(points: pl.LazyFrame) -> pl.DataFrame:
    """Per (run, key) series with any point: last, min, max and mean_all of its finite values (null
    without one), as `summarize` computes them but without the tail.

    One group-by on polars' streaming engine, which runs it while the points are read and never holds
    them: the tail's lists (and any order-dependent expression but a sort) would make polars collect
    every point first. `step` may be any ordered type. Of equal steps one value is taken, and a series
    mixing points with and without a step may take its last from either (no client writes those:
    neptune's refuses a step that does not increase, and a path is a series or a simple attribute)."""
    finite = pl.when(pl.col("value").is_finite()).then(pl.col("value"))
    by_step = pl.when(pl.col("value").is_not_null()).then("step")  # sorted first: null (no finite value)
    value = pl.col("value")
    return (
        points.with_columns(finite.alias("value"))
        .with_columns(by_step.alias("order"))
        .group_by(RUN, "key")
        .agg(
            value.sort_by("order").last().alias("last"),
            value.min().alias("min"),
            value.max().alias("max"),
            value.mean().alias("mean_all"),
        )
        .collect(engine="streaming")
        .with_columns(pl.col(RUN, "key").cast(pl.String))
    )


def summary_answers(aggregation: str, n_steps: int, tail: int = SUMMARY_TAIL) -> bool:
    """Whether summaries keeping `tail` values per series answer this aggregation exactly."""
    return aggregation != "mean_last_n" or n_steps <= tail


def summary_points(summary: pl.DataFrame, aggregation: str, n_steps: int) -> pl.DataFrame:
    """Points that aggregate exactly like the series `summary` was made from (one null point for a
    series without a finite value). `summary` needs run_id, key and the aggregation's column (`tail`
    for mean_last_n, whose window must fit in it: see `summary_answers`)."""
    check_aggregation(aggregation, n_steps)
    if aggregation == "mean_last_n":
        values = summary.select(RUN, "key", pl.col("tail").list.tail(n_steps).alias("value"))
        values = values.explode("value", empty_as_null=True)
    else:
        values = summary.select(RUN, "key", pl.col(aggregation).alias("value"))
    return values.select(RUN, "key", pl.lit(0.0).alias("step"), "value")
