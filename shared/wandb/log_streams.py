"""The console output and system metrics of an offline W&B run log as tidy frames: its output records
(what the run printed, a chunk per write) and its stats records (samples of cpu, memory_percent,
gpu.0.gpu, … with the client's keys)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
from wandb.proto import wandb_internal_pb2 as wandb_pb

from shared.table.console import console_rows
from shared.table.history import epoch_seconds_to_utc
from shared.table.schema import CONSOLE, SYSTEM, polars_schema

_STREAM_NAMES = {wandb_pb.OutputRecord.STDOUT: "stdout", wandb_pb.OutputRecord.STDERR: "stderr"}


def empty_console() -> pl.DataFrame:
    return pl.DataFrame(schema=polars_schema(tuple(CONSOLE.columns.items())))


def empty_system() -> pl.DataFrame:
    return pl.DataFrame(schema=polars_schema(tuple(SYSTEM.columns.items())))


def merged_console(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The console lines of a run's sessions, oldest first, numbered on from one session to the next."""
    return pl.concat(frames).with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("run_id").alias("line"))


def _number(value_json: str) -> float | None:
    try:
        value = json.loads(value_json)
    except ValueError:
        return None
    return sample_value(value)


def sample_value(value: object) -> float | None:
    """A system-metric sample as a number; None for one that is not (kept as a null, not dropped)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def system_rows(
    run_id: str | pl.Series,
    seconds: list[float] | pl.Series,
    keys: list[str] | pl.Series,
    values: list[float | None] | pl.Series,
) -> pl.DataFrame:
    """schema.SYSTEM rows: one per sample and key, at epoch `seconds`, of one run (or each row's)."""
    frame = pl.DataFrame(
        {"seconds": seconds, "key": keys, "value": values},
        schema={"seconds": pl.Float64, "key": pl.String, "value": pl.Float64},
    )
    rows = frame.select(
        (run_id if isinstance(run_id, pl.Series) else pl.lit(run_id)).alias("run_id"),
        epoch_seconds_to_utc(pl.col("seconds")).alias("timestamp"),
        "key",
        "value",
    )
    return rows.cast(polars_schema(tuple(SYSTEM.columns.items())))


class LogStreams:
    """Output and stats records gathered as they are read, for the streams asked for."""

    def __init__(self, console: bool, system: bool) -> None:
        self.console, self.system = console, system
        self._chunks: list[tuple[str, str, datetime | None]] = []  # (stream, text, time) in the order written
        self._seconds: list[float] = []
        self._keys: list[str] = []
        self._values: list[float | None] = []  # null: a sample that is not a number (kept, not dropped)

    def add_output(self, payloads: list[bytes], raw: bool) -> None:
        if not self.console:
            return
        kind = wandb_pb.OutputRawRecord if raw else wandb_pb.OutputRecord
        for payload in payloads:
            record = kind.FromString(payload)
            stamp = record.timestamp
            written = (
                datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, UTC) if stamp.seconds else None
            )
            self._chunks.append((_STREAM_NAMES.get(record.output_type, "stdout"), record.line, written))

    def add_stats(self, payloads: list[bytes]) -> None:
        if not self.system:
            return
        for payload in payloads:
            record = wandb_pb.StatsRecord.FromString(payload)
            seconds = record.timestamp.seconds + record.timestamp.nanos / 1e9
            for item in record.item:
                self._seconds.append(seconds)
                self._keys.append(item.key)
                self._values.append(_number(item.value_json))

    def console_frame(self, run_id: str) -> pl.DataFrame:
        """schema.CONSOLE rows: the printed text split into lines."""
        return console_rows((run_id, stream, stream, text, written) for stream, text, written in self._chunks)

    def system_frame(self, run_id: str) -> pl.DataFrame:
        """schema.SYSTEM rows: one per sample and key."""
        return system_rows(run_id, self._seconds, self._keys, self._values)
