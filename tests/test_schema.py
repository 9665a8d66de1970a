"""The run table's schema (shared/table/schema.py) is defined once: its arrow and polars forms agree, its
names import without pyarrow or polars (the scripts read them while parsing their flags), and RunRecord
has a field for each core column."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import polars as pl
import pytest

from shared.table import schema

ROOT = Path(__file__).resolve().parent.parent
FRAMES = {
    "core": schema.CORE,
    "history": schema.HISTORY.columns,
    "runs frame": schema.RUNS_FRAME,
    "points frame": schema.POINTS_FRAME,
    "series frame": schema.SERIES_FRAME,
}


@pytest.mark.parametrize("name", FRAMES)
def test_the_arrow_and_polars_forms_agree(name):
    """Each form is made from its own library; polars reads the arrow form as the polars form says."""
    columns = tuple(FRAMES[name].items())
    arrow = schema.arrow_schema(columns)
    assert arrow.names == list(FRAMES[name])
    assert dict(pl.from_arrow(arrow.empty_table()).schema) == schema.polars_schema(columns)


def test_the_derived_forms_are_the_schema_s():
    assert list(schema.CORE_COLUMNS) == list(schema.CORE)
    assert schema.HISTORY_SCHEMA.names == list(schema.HISTORY.columns)
    assert list(schema.HISTORY_COLUMNS) == list(schema.HISTORY.columns)
    assert schema.FILE_KINDS["history"] == "_history.parquet" and schema.RUNS_FILE == "_runs.parquet"
    assert schema.RAW_JSON_COLUMNS == ("_config_json", "_summary_json")
    with pytest.raises(AttributeError):
        schema.NO_SUCH_FORM  # noqa: B018


def test_run_record_has_a_field_per_core_column_then_the_sections():
    names = [item.name for item in fields(schema.RunRecord)]
    assert set(names[: len(schema.CORE)]) == set(schema.CORE)  # id, entity, project first: they are required
    assert names[len(schema.CORE) :] == ["config", "summary", "raw_config", "raw_summary"]


def test_the_names_import_without_pyarrow_or_polars():
    program = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from shared.table.schema import CORE, SECTIONS, RunRecord;"
        " heavy = {'pyarrow', 'polars', 'pandas'} & set(sys.modules); assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_runtime_that_clocks_made_negative_is_null_with_a_warning_naming_the_run():
    """Every source's records become the runs table in one place (rows.runs_table): a Neptune runtime
    is the last heartbeat less the creation, and W&B's `_runtime` comes from the run's own clock."""
    from datetime import UTC, datetime

    from shared.table.rows import runs_table

    created = datetime(2026, 3, 2, tzinfo=UTC)
    records = [
        schema.RunRecord(
            id="behind", entity="e", project="p", created_at=created,
            heartbeat_at=datetime(2026, 3, 1, tzinfo=UTC), runtime_s=-86400.0,
        ),
        schema.RunRecord(id="nan", entity="e", project="p", runtime_s=float("nan")),
        schema.RunRecord(id="fine", entity="e", project="p", created_at=created, runtime_s=5.0),
    ]  # fmt: skip
    table, warnings = runs_table(records)
    assert table["runtime_s"].to_pylist() == [None, None, 5.0]
    assert warnings == [
        "run behind: runtime -86400.0 s left out (null): its last heartbeat (2026-03-01T00:00:00+00:00)"
        " is before its creation (2026-03-02T00:00:00+00:00)",
        "run nan: runtime nan s left out (null): not a finite number",
    ]
