"""Tidy history frames (run_id, step, timestamp, key, value) from wide tables or row dicts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl

HISTORY_COLUMNS = {
    "run_id": pl.String,
    "step": pl.Int64,
    "timestamp": pl.Datetime("us", "UTC"),
    "key": pl.String,
    "value": pl.Float64,
}
_INTERNAL_KEYS = {"_step", "_timestamp", "_runtime"}


def is_internal_key(key: str) -> bool:
    """W&B's own bookkeeping columns, not metrics."""
    return key in _INTERNAL_KEYS or key.startswith("_wandb")


def empty_history() -> pl.DataFrame:
    return pl.DataFrame(schema=HISTORY_COLUMNS)


def _epoch_seconds_to_utc(column: pl.Expr) -> pl.Expr:
    return pl.from_epoch((column * 1_000_000).round().cast(pl.Int64), time_unit="us").dt.replace_time_zone(
        "UTC"
    )


def wide_to_tidy(
    wide: pl.DataFrame, run_id: str, keys: Iterable[str] | None = None
) -> tuple[pl.DataFrame, int]:
    """One row per step → one row per numeric value; also the count of non-numeric values left out."""
    wanted = set(keys) if keys is not None else None
    value_columns = [c for c in wide.columns if not is_internal_key(c) and (wanted is None or c in wanted)]
    numeric = [c for c in value_columns if wide.schema[c].is_numeric()]
    skipped = sum(wide[c].drop_nulls().len() for c in value_columns if c not in numeric)
    if not numeric or wide.height == 0:
        return empty_history(), skipped
    step = (
        pl.col("_step").cast(pl.Int64) if "_step" in wide.columns else pl.int_range(pl.len(), dtype=pl.Int64)
    )
    timestamp = (
        _epoch_seconds_to_utc(pl.col("_timestamp").cast(pl.Float64))
        if "_timestamp" in wide.columns
        else pl.lit(None, pl.Datetime("us", "UTC"))
    )
    tidy = (
        wide.select(
            step.alias("step"), timestamp.alias("timestamp"), *[pl.col(c).cast(pl.Float64) for c in numeric]
        )
        .unpivot(index=["step", "timestamp"], variable_name="key", value_name="value")
        .drop_nulls("value")
        .select(pl.lit(run_id).alias("run_id"), "step", "timestamp", "key", "value")
    )
    return tidy.cast(HISTORY_COLUMNS), skipped


def rows_to_tidy(
    rows: Iterable[dict[str, Any]], run_id: str, keys: Iterable[str] | None = None
) -> tuple[pl.DataFrame, int]:
    """History row dicts (as `scan_history` yields them) → tidy numeric rows and the skipped count."""
    wanted = set(keys) if keys is not None else None
    steps: list[int] = []
    stamps: list[float | None] = []
    names: list[str] = []
    values: list[float] = []
    skipped = 0
    for row in rows:
        step, stamp = row.get("_step"), row.get("_timestamp")
        for key, value in row.items():
            if value is None or is_internal_key(key) or (wanted is not None and key not in wanted):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                skipped += 1
                continue
            steps.append(step)
            stamps.append(stamp)
            names.append(key)
            values.append(float(value))
    frame = pl.DataFrame(
        {"run_id": [run_id] * len(values), "step": steps, "timestamp": stamps, "key": names, "value": values},
        schema_overrides={"step": pl.Int64, "timestamp": pl.Float64, "value": pl.Float64},
    )
    return frame.with_columns(_epoch_seconds_to_utc(pl.col("timestamp")).alias("timestamp")).cast(
        HISTORY_COLUMNS
    ), skipped
