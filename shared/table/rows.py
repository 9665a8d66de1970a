"""Run records as the runs table: core columns, flattened config_*/metric_* columns and the raw JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from shared.table.flatten import flat_columns
from shared.table.schema import CONFIG_PREFIX, CORE_COLUMNS, METRIC_PREFIX, RunRecord

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_MICROSECOND = timedelta(microseconds=1)


def _core_array(values: list[Any], dtype: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(dtype):
        # Integers, not datetimes: pyarrow converts aware datetimes through pandas, a 1-2 s import.
        values = [None if v is None else (v - _EPOCH) // _MICROSECOND for v in values]
        return pa.array(values, pa.int64()).cast(dtype)
    return pa.array(values, dtype)


def runs_table(records: list[RunRecord]) -> tuple[pa.Table, list[str]]:
    """The runs table: core columns, flattened config_*/metric_* columns, raw JSON; plus flatten warnings."""
    columns: dict[str, pa.Array] = {
        name: _core_array([getattr(r, name) for r in records], dtype) for name, dtype in CORE_COLUMNS.items()
    }
    config_columns, config_warnings = flat_columns([r.config for r in records], CONFIG_PREFIX)
    metric_columns, metric_warnings = flat_columns(
        [r.summary for r in records], METRIC_PREFIX, skip_private=True
    )
    columns |= config_columns | metric_columns
    columns["_config_json"] = pa.array(
        [r.raw_config if r.raw_config is not None else raw_json(r.config) for r in records], pa.string()
    )
    columns["_summary_json"] = pa.array(
        [r.raw_summary if r.raw_summary is not None else raw_json(r.summary) for r in records], pa.string()
    )
    return pa.table(columns), config_warnings + metric_warnings


def raw_json(value: dict[str, Any]) -> str:
    """Lossless JSON text; lone surrogates (UTF-8 cannot hold them) stay as `\\udcff` escapes."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text
