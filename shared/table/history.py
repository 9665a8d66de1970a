"""Tidy stream files (history: run_id, step, timestamp, key, value; and the other schema.STREAMS): written in
row groups as rows arrive, atomically."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from shared.base.storage import AtomicFile, write_error
from shared.table.schema import GENERATION_KEY, HISTORY, HISTORY_COLUMNS, Stream, arrow_schema

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq


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


ROW_GROUP = 1_000_000  # rows per row group; also what is buffered before a write


# Dictionaries only where values repeat (ids, keys); steps and times grow steadily: delta-encoded. No
# statistics: a row group holds ~100 runs' every key and step, so min/max could never skip one, and
# computing them costs a sixth of the writing. LZ4 rather than zstd: a third less CPU for ~12% more bytes,
# and history is the bulk of what an export writes.
_REPEATING = ("run_id", "key", "type", "stream")
_GROWING = ("step", "timestamp", "line")


def _writer_options(stream: Stream) -> dict[str, Any]:
    return {
        "compression": "lz4",
        "use_dictionary": [name for name in _REPEATING if name in stream.columns],
        "column_encoding": {name: "DELTA_BINARY_PACKED" for name in _GROWING if name in stream.columns},
        "write_statistics": False,
    }


class StreamWriter:
    """A tidy stream's parquet file (history by default) written in row groups as frames arrive; nothing at
    `final` before commit.

    A background thread encodes and writes one row group while the next one fills, so the caller keeps
    collecting; at most two groups are held in memory.
    """

    def __init__(
        self,
        final: Path,
        row_group: int = ROW_GROUP,
        *,
        generation: str | None = None,
        stream: Stream = HISTORY,
    ) -> None:
        self.final, self.row_group, self.stream = final, row_group, stream
        self.schema = arrow_schema(tuple(stream.columns.items()))
        self.generation = generation  # the export's id, in the file's key-value metadata
        self.rows = 0
        self._pending: list[pl.DataFrame | pa.Table] = []
        self._pending_rows = 0
        self._file: AtomicFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None

    def add(self, frame: pl.DataFrame | pa.Table) -> None:
        """Queue tidy rows (the stream's columns), as a polars frame or an arrow table."""
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
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.stream.name}-writer")
        self._writing = self._pool.submit(self._write, frames)

    def _open(self) -> pq.ParquetWriter:
        import pyarrow.parquet as pq

        if self._writer is None:
            self._file = AtomicFile(self.final)
            schema = self.schema
            if self.generation:
                schema = schema.with_metadata({GENERATION_KEY: self.generation})
            self._writer = pq.ParquetWriter(self._file.temp, schema, **_writer_options(self.stream))
        return self._writer

    def _write(self, frames: list[pl.DataFrame | pa.Table]) -> None:
        import pyarrow as pa

        tables = [_conformed(f if isinstance(f, pa.Table) else f.to_arrow(), self.schema) for f in frames]
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
        self.seal().commit()
        return self.rows

    def seal(self) -> AtomicFile:
        """Write what is left and close: the complete file, still at its temp path (see commit_together)."""
        self._flush()
        self._wait()
        self._open().close()
        self._shutdown()
        assert self._file is not None
        return self._file

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


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` in `schema`: a column it lacks is null (rows an update carries from a file written before
    the column was added, as console rows before their timestamp)."""
    import pyarrow as pa

    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field.name, pa.nulls(len(table), field.type))
    return table.select(schema.names).cast(schema)
