"""W&B history rows (wide tables, `scan_history` dicts) as tidy rows: one row per numeric value."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

from shared.table.history import epoch_seconds_to_utc
from shared.table.schema import HISTORY_COLUMNS, HISTORY_SCHEMA, is_internal_key

if TYPE_CHECKING:
    import pyarrow as pa


def _is_number(dtype: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)


def _value_columns(wide: pa.Table, keys: Iterable[str] | None) -> tuple[list[str], list[str]]:
    """The value columns of `wide` (of `keys` when given): the numeric ones, and the others."""
    wanted = set(keys) if keys is not None else None
    columns = [c for c in wide.column_names if not is_internal_key(c) and (wanted is None or c in wanted)]
    numeric = [c for c in columns if _is_number(wide.schema.field(c).type)]
    return numeric, [c for c in columns if c not in numeric]


def skipped_values(wide: pa.Table, keys: Iterable[str] | None = None) -> int:
    """How many values `wide_to_tidy` leaves out of `wide` for not being numbers."""
    return sum(len(wide[c]) - wide[c].null_count for c in _value_columns(wide, keys)[1])


def wide_to_tidy(wide: pa.Table, run_id: str | pa.Array, keys: Iterable[str] | None = None) -> pa.Table:
    """One row per step → one row per numeric value (HISTORY_SCHEMA); other values are left out
    (`skipped_values` counts them). `run_id` is the run of every row, or each row's run (several runs'
    rows stacked: fewer calls per run). Rows come key after key. Arrow throughout: per run this is cheaper
    than a frame library's per-call overhead.

    Every scalar handed to pyarrow is typed: for an untyped Python value pyarrow tries to import
    dateutil, and where that is not installed (the tools' environments) each try searches sys.path,
    which once cost more than the rest of this function.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    numeric = _value_columns(wide, keys)[0]
    if not numeric or wide.num_rows == 0:
        return HISTORY_SCHEMA.empty_table()
    names, rows = wide.column_names, wide.num_rows
    # Chunked like the table's columns, so each can be repeated key after key.
    step = (
        wide["_step"].cast(pa.int64())
        if "_step" in names
        else pa.chunked_array([pa.array(range(rows), pa.int64())])
    )
    if "_timestamp" in names:
        micros = pc.round(pc.multiply(wide["_timestamp"].cast(pa.float64()), pa.scalar(1e6, pa.float64())))
        timestamp = micros.cast(pa.int64()).cast(HISTORY_SCHEMA.field("timestamp").type)
    else:
        timestamp = pa.chunked_array([pa.nulls(rows, HISTORY_SCHEMA.field("timestamp").type)])
    runs = pa.repeat(pa.scalar(run_id, pa.string()), rows) if isinstance(run_id, str) else run_id
    # All keys at once, key after key (a few calls per key rather than a table each): one null filter.
    table = pa.table(
        [
            pa.chunked_array([runs] * len(numeric), pa.string()),
            pa.chunked_array(step.chunks * len(numeric), pa.int64()),
            pa.chunked_array(timestamp.chunks * len(numeric), timestamp.type),
            pa.chunked_array([pa.repeat(pa.scalar(key, pa.string()), rows) for key in numeric]),
            pa.chunked_array(
                [c for key in numeric for c in wide[key].cast(pa.float64()).chunks], pa.float64()
            ),
        ],
        schema=HISTORY_SCHEMA,
    )
    if table["value"].null_count:
        table = table.filter(pc.is_valid(table["value"]))
    return table


def stacked_run_ids(run_ids: Sequence[str], rows: Sequence[int]) -> pa.Array:
    """Each row's run id for tables of these runs stacked in order, `rows[i]` rows for `run_ids[i]`."""
    import pyarrow as pa

    parts = [
        pa.repeat(pa.scalar(run_id, pa.string()), count) for run_id, count in zip(run_ids, rows, strict=True)
    ]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def rows_to_tidy(
    rows: Iterable[dict[str, Any]],
    run_id: str,
    keys: Iterable[str] | None = None,
    *,
    keep_other: bool = False,
) -> tuple[pl.DataFrame, int, pl.DataFrame | None]:
    """History row dicts (as `scan_history` yields them) → tidy numeric rows, the skipped count, and with
    `keep_other` the values that are not numbers as history_other rows (then none is skipped)."""
    wanted = set(keys) if keys is not None else None
    steps: list[int] = []
    stamps: list[float | None] = []
    names: list[str] = []
    values: list[float] = []
    skipped = 0
    others: list[tuple[Any, Any, str, str, str]] = []  # step, time, key, type, value
    for row in rows:
        step, stamp = row.get("_step"), row.get("_timestamp")
        for key, value in row.items():
            if value is None or is_internal_key(key) or (wanted is not None and key not in wanted):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                if keep_other:
                    others.append((step, stamp, key, *_other_cell(value)))
                else:
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
    tidy = frame.with_columns(epoch_seconds_to_utc(pl.col("timestamp")).alias("timestamp"))
    return tidy.cast(HISTORY_COLUMNS), skipped, _other_frame(run_id, others) if keep_other else None


def _other_frame(run_id: str, others: list[tuple[Any, Any, str, str, str]]) -> pl.DataFrame:
    from shared.wandb.log_history import HISTORY_OTHER_COLUMNS

    frame = pl.DataFrame(
        others,
        schema={
            "step": pl.Int64,
            "seconds": pl.Float64,
            "key": pl.String,
            "type": pl.String,
            "value": pl.String,
        },
        orient="row",
    )
    return frame.select(
        pl.lit(run_id).alias("run_id"),
        "step",
        epoch_seconds_to_utc(pl.col("seconds")).alias("timestamp"),
        "key",
        "type",
        "value",
    ).cast(HISTORY_OTHER_COLUMNS)


def _other_cell(value: Any) -> tuple[str, str]:
    """(type, value) of a history cell that is not a number, as the API's history files or `scan_history`
    hold it: booleans, strings, and W&B objects (histograms, media, tables) or lists, as JSON text or
    decoded. Structured values are written as JSON with sorted keys: one value is one text, however
    it was read."""
    import json

    from shared.wandb.log_history import object_type

    if isinstance(value, bool):
        return "bool", "true" if value else "false"
    if isinstance(value, str):
        if value[:1] not in ("{", "["):
            return "string", value
        try:
            value = json.loads(value)
        except ValueError:
            return "string", value
    kind = object_type(value["_type"]) if isinstance(value, dict) and "_type" in value else "object"
    return kind, json.dumps(value, sort_keys=True, default=str)


def wide_to_other(wide: pa.Table, run_id: str | pa.Array, keys: Iterable[str] | None = None) -> pl.DataFrame:
    """The values of `wide` that `wide_to_tidy` leaves out, as history_other rows (schema.HISTORY_OTHER):
    one per non-null cell of each column that is not numeric."""
    from shared.wandb.log_history import HISTORY_OTHER_COLUMNS, empty_history_other

    others = _value_columns(wide, keys)[1]
    if not others or wide.num_rows == 0:
        return empty_history_other()
    rows = wide.num_rows
    run_ids = pl.Series([run_id] * rows if isinstance(run_id, str) else run_id, dtype=pl.String)
    steps = pl.Series(wide["_step"]) if "_step" in wide.column_names else pl.int_range(rows, eager=True)
    seconds = (
        pl.Series(wide["_timestamp"])
        if "_timestamp" in wide.column_names
        else pl.repeat(None, rows, eager=True)
    )
    frame = pl.DataFrame(
        {"run_id": run_ids, "step": steps.cast(pl.Int64), "seconds": seconds.cast(pl.Float64)}
    )
    parts = []
    for key in others:
        cells = wide[key].to_pylist()
        kept = [index for index, value in enumerate(cells) if value is not None]
        if kept:
            kinds, values = zip(*(_other_cell(cells[index]) for index in kept), strict=True)
            parts.append(
                frame[kept].with_columns(
                    key=pl.lit(key),
                    type=pl.Series(kinds, dtype=pl.String),
                    value=pl.Series(values, dtype=pl.String),
                )
            )
    if not parts:
        return empty_history_other()
    tidy = pl.concat(parts)
    return tidy.select(
        "run_id", "step", epoch_seconds_to_utc(pl.col("seconds")).alias("timestamp"), "key", "type", "value"
    ).cast(HISTORY_OTHER_COLUMNS)
