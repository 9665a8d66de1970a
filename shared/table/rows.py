"""Run records as the runs table (shared.table.schema): core columns, each section flattened, raw JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from shared.table.flatten import flat_columns
from shared.table.schema import CORE_COLUMNS, SECTIONS, RunRecord

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _core_array(values: list[Any], dtype: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(dtype):
        # Integers, not datetimes: pyarrow converts aware datetimes through pandas, a 1-2 s import.
        values = [None if v is None else (v - _EPOCH) // _MICROSECOND for v in values]
        return pa.array(values, pa.int64()).cast(dtype)
    return pa.array(values, dtype)


def runs_table(records: list[RunRecord]) -> tuple[pa.Table, list[str]]:
    """The runs table: core columns, each section's flattened columns (config_*, metric_*), then each
    section's raw JSON; plus the flattening's warnings."""
    columns: dict[str, pa.Array] = {
        name: _core_array([getattr(r, name) for r in records], dtype) for name, dtype in CORE_COLUMNS.items()
    }
    warnings: list[str] = []
    for section in SECTIONS:
        flat, section_warnings = flat_columns(
            [getattr(r, section.field) for r in records], section.prefix, skip_private=section.skip_internal
        )
        columns |= flat
        warnings += section_warnings
    for section in SECTIONS:
        raw = [(getattr(r, f"raw_{section.field}"), getattr(r, section.field)) for r in records]
        columns[section.raw] = pa.array(
            [text if text is not None else raw_json(value) for text, value in raw], pa.string()
        )
    return pa.table(columns), warnings


def raw_json(value: dict[str, Any]) -> str:
    """Lossless JSON text; lone surrogates (UTF-8 cannot hold them) stay as `\\udcff` escapes."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text
