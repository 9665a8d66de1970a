"""Tidy history frames (run_id, step, timestamp, key, value) from wide tables or row dicts, and their file."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from shared.schema import HISTORY_SCHEMA
from shared.storage import AtomicFile, write_error

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

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


def epoch_seconds_to_utc(column: pl.Expr) -> pl.Expr:
    """Float epoch seconds (W&B's `_timestamp`) as UTC datetimes, rounded to the microsecond."""
    return pl.from_epoch((column * 1_000_000).round().cast(pl.Int64), time_unit="us").dt.replace_time_zone(
        "UTC"
    )


def epoch_seconds_to_datetime(seconds: float) -> datetime:
    """One `_timestamp` as `epoch_seconds_to_utc` converts it, so a heartbeat equals its history row's time."""
    return pl.select(epoch_seconds_to_utc(pl.lit(float(seconds)))).item().astimezone(UTC)


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
    return frame.with_columns(epoch_seconds_to_utc(pl.col("timestamp")).alias("timestamp")).cast(
        HISTORY_COLUMNS
    ), skipped


ROW_GROUP = 1_000_000  # rows per row group; also what is buffered before a write
# Dictionaries only where values repeat (ids, keys); steps and times grow steadily: delta-encoded. No
# statistics: a row group holds ~100 runs' every key and step, so min/max could never skip one, and
# computing them costs a sixth of the writing. LZ4 rather than zstd: a third less CPU for ~12% more bytes,
# and this file is the bulk of what an export writes.
_WRITER_OPTIONS: dict[str, Any] = {
    "compression": "lz4",
    "use_dictionary": ["run_id", "key"],
    "column_encoding": {"step": "DELTA_BINARY_PACKED", "timestamp": "DELTA_BINARY_PACKED"},
    "write_statistics": False,
}


class HistoryWriter:
    """A tidy history parquet file written in row groups as frames arrive; nothing at `final` before commit.

    A background thread encodes and writes one row group while the next one fills, so the caller keeps
    collecting; at most two groups are held in memory.
    """

    def __init__(self, final: Path, row_group: int = ROW_GROUP) -> None:
        self.final, self.row_group = final, row_group
        self.rows = 0
        self._pending: list[pl.DataFrame | pa.Table] = []
        self._pending_rows = 0
        self._file: AtomicFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None

    def add(self, frame: pl.DataFrame | pa.Table) -> None:
        """Queue tidy rows (the columns of HISTORY_SCHEMA), as a polars frame or an arrow table."""
        if len(frame) == 0:
            return
        self._pending.append(frame)
        self._pending_rows += len(frame)
        if self._pending_rows >= self.row_group:
            self._flush()

    def _flush(self) -> None:
        self._wait()
        if not self._pending:
            return
        frames, self._pending, self._pending_rows = self._pending, [], 0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-writer")
        self._writing = self._pool.submit(self._write, frames)

    def _open(self) -> pq.ParquetWriter:
        import pyarrow.parquet as pq

        if self._writer is None:
            self._file = AtomicFile(self.final)
            self._writer = pq.ParquetWriter(self._file.temp, HISTORY_SCHEMA, **_WRITER_OPTIONS)
        return self._writer

    def _write(self, frames: list[pl.DataFrame | pa.Table]) -> None:
        import pyarrow as pa

        tables = [(f if isinstance(f, pa.Table) else f.to_arrow()).cast(HISTORY_SCHEMA) for f in frames]
        table = pa.concat_tables(tables)
        try:
            self._open().write_table(table, row_group_size=self.row_group)
        except OSError as error:  # disk full, file too large
            raise write_error(self.final, error) from None
        self.rows += table.num_rows

    def _wait(self) -> None:
        """Wait for the row group being written; its error, if any, is raised here."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def commit(self) -> int:
        """Write what is left, close, and move the file to its final path; the number of rows written."""
        self._flush()
        self._wait()
        self._open().close()
        assert self._file is not None
        self._file.commit()
        self._shutdown()
        return self.rows

    def discard(self) -> None:
        """Drop everything; no file is left behind."""
        with suppress(Exception):  # the export is failing already; its own error is the one to report
            self._wait()
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.discard()
        self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
