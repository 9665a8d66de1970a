"""The project's run-table schema: one run record shape and the column layout every exporter writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

if TYPE_CHECKING:
    import pyarrow as pa


# Core columns of `*_runs.parquet`, in order, before the flattened config_*/metric_* columns.
CORE_COLUMNS: dict[str, pa.DataType] = {
    "id": pa.string(),
    "name": pa.string(),
    "entity": pa.string(),
    "project": pa.string(),
    "state": pa.string(),
    "created_at": pa.timestamp("us", tz="UTC"),
    "heartbeat_at": pa.timestamp("us", tz="UTC"),
    "runtime_s": pa.float64(),
    "tags": pa.list_(pa.string()),
    "group": pa.string(),
    "job_type": pa.string(),
    "sweep": pa.string(),
    "user": pa.string(),
    "notes": pa.string(),
    "url": pa.string(),
}
RAW_JSON_COLUMNS = ("_config_json", "_summary_json")
CONFIG_PREFIX = "config_"
METRIC_PREFIX = "metric_"

# Tidy `*_history.parquet`: one row per logged numeric value.
HISTORY_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int64()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("key", pa.string()),
        ("value", pa.float64()),
    ]
)


@dataclass
class RunRecord:
    """One run as every source (W&B API, W&B offline log, Neptune) hands it to the writers."""

    id: str
    entity: str
    project: str
    name: str | None = None
    state: str | None = None
    created_at: datetime | None = None
    heartbeat_at: datetime | None = None
    runtime_s: float | None = None
    tags: list[str] = field(default_factory=list)
    group: str | None = None
    job_type: str | None = None
    sweep: str | None = None
    user: str | None = None
    notes: str | None = None
    url: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    # The source's text of a config or summary that could not be parsed (then `config`/`summary` is empty):
    # written as it is to `_config_json`/`_summary_json`, with no flattened columns.
    raw_config: str | None = None
    raw_summary: str | None = None

    def core_values(self) -> dict[str, Any]:
        """The core columns of this run, keyed by column name."""
        return {name: getattr(self, name) for name in CORE_COLUMNS}


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


RUNS_SCHEMA = {"run_id": pl.String, "name": pl.String, "state": pl.String}

POINTS_SCHEMA = {"run_id": pl.String, "key": pl.String, "step": pl.Float64, "value": pl.Float64}
