"""Run records as the runs table (shared.table.schema): core columns, each section flattened, raw JSON."""

from __future__ import annotations

import json
import math
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
    runtimes, warnings = _runtimes(records)
    columns["runtime_s"] = _core_array(runtimes, CORE_COLUMNS["runtime_s"])
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


def _runtimes(records: list[RunRecord]) -> tuple[list[float | None], list[str]]:
    """Each run's runtime_s as its source gave it, but none where it is negative or not finite (a last
    heartbeat before the creation, clocks that disagree): null, with a warning naming the run."""
    runtimes: list[float | None] = []
    warnings = []
    for record in records:
        runtime = record.runtime_s
        if runtime is not None and not 0 <= runtime < math.inf:
            times = record.created_at, record.heartbeat_at
            if times[0] is not None and times[1] is not None and times[1] < times[0]:
                why = f"its last heartbeat ({times[1].isoformat()}) is before its creation ({times[0].isoformat()})"
            else:
                why = "a negative duration (clocks that disagree)" if runtime < 0 else "not a finite number"
            warnings.append(f"run {record.id}: runtime {runtime} s left out (null): {why}")
            runtime = None
        runtimes.append(runtime)
    return runtimes, warnings


def raw_json(value: dict[str, Any]) -> str:
    """Lossless JSON text; lone surrogates (UTF-8 cannot hold them) stay as `\\udcff` escapes."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text
