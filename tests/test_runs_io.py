"""Finding and checking runs parquets, and the schema union (property tests) across differing exports."""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.base.errors import BadInput, Incomplete
from shared.base.events import Events
from shared.table.exports import (
    FILE_INDEX,
    ROW_INDEX,
    SOURCE_COLUMN,
    conform,
    find_runs_files,
    open_runs_file,
    open_runs_files,
    reconcile,
    scan_deduplicated,
    scan_runs,
    union_schema,
)
from shared.table.schema import GENERATION_KEY

# One column's type in one file, and a strategy for its values.
KINDS = {
    "Int64": (pl.Int64(), st.integers(-(2**40), 2**40)),
    "Int32": (pl.Int32(), st.integers(-(2**31), 2**31 - 1)),
    "UInt8": (pl.UInt8(), st.integers(0, 255)),
    "Float64": (pl.Float64(), st.floats(allow_nan=True, allow_infinity=True, width=64)),
    "Float32": (pl.Float32(), st.floats(allow_nan=False, allow_infinity=False, width=32)),
    "Boolean": (pl.Boolean(), st.booleans()),
    "String": (pl.String(), st.text(max_size=8)),
    "Null": (pl.Null(), st.none()),
    "DatetimeUTC": (
        pl.Datetime("us", "UTC"),
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    ),
    "ListInt": (pl.List(pl.Int64()), st.lists(st.integers(-100, 100), max_size=3)),
    "ListFloat": (pl.List(pl.Float64()), st.lists(st.floats(-1e6, 1e6), max_size=3)),
}
INTS, FLOATS = {"Int64", "Int32", "UInt8"}, {"Float64", "Float32"}


def expected_type(kinds: list[str]) -> tuple[pl.DataType, bool]:
    """The union rule, restated from the issue independently of the implementation."""
    kinds = [k for k in kinds if k != "Null"]
    if not kinds:
        return pl.String(), False
    if len(set(kinds)) == 1:
        return KINDS[kinds[0]][0], False
    if set(kinds) <= INTS:
        return pl.Int64(), False
    if set(kinds) <= INTS | FLOATS:
        return pl.Float64(), False
    if set(kinds) == {"ListInt", "ListFloat"}:
        return pl.List(pl.Float64()), False
    return pl.String(), True


@st.composite
def column_files(draw):
    """2-4 files, each with column `x` of some kind (or without it), and the values each holds."""
    files = []
    for _ in range(draw(st.integers(2, 4))):
        kind = draw(st.sampled_from([*KINDS, None]))
        size = draw(st.integers(0, 4))
        values = (
            draw(st.lists(st.none() | KINDS[kind][1], min_size=size, max_size=size))
            if kind
            else [None] * size
        )
        files.append((kind, values))
    return files


def frame_of(kind: str | None, values: list) -> pl.DataFrame:
    columns = {"id": pl.Series([f"r{i}" for i in range(len(values))], dtype=pl.String)}
    if kind:
        columns["x"] = pl.Series(values, dtype=KINDS[kind][0])
    return pl.DataFrame(columns)


def same_number(got: object, want: object) -> bool:
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    return got == pytest.approx(want, rel=1e-6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(KINDS)), min_size=1, max_size=5))
def test_union_type_follows_the_rules_in_any_order(kinds):
    want, fallback = expected_type(kinds)
    for order in itertools.islice(itertools.permutations(kinds), 6):
        assert reconcile([KINDS[k][0] for k in order]) == (want, fallback)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(column_files())
def test_union_keeps_every_row_and_value(files):
    kinds = [kind for kind, _ in files if kind]
    frames = [frame_of(kind, values) for kind, values in files]
    schema, warnings = union_schema([dict(f.schema) for f in frames])
    want, fallback = expected_type(kinds)
    assert ("x" in schema) == bool(kinds)
    if kinds:
        assert schema["x"] == want
        assert len(warnings) == int(fallback) and (not warnings or "column x" in warnings[0])
    merged = pl.concat([conform(f.lazy(), dict(f.schema), schema) for f in frames]).collect()
    assert merged.height == sum(len(values) for _, values in files)
    assert merged["id"].to_list() == [f"r{i}" for _, values in files for i in range(len(values))]
    if not kinds:
        return
    got = iter(merged["x"].to_list())
    for kind, values in files:
        for value in values if kind else [None] * len(values):
            result = next(got)
            if value is None or kind == "Null":
                assert result is None
            elif want == pl.String and kind == "String":
                assert result == value
            elif want == pl.String and kind == "Boolean":
                assert result == str(value).lower()
            elif want == pl.String and kind in INTS:
                assert result == str(value)
            elif want == pl.String and kind in FLOATS:
                assert same_number(float(result), value)
            elif want == pl.String and kind.startswith("List"):
                assert isinstance(result, str) and result.startswith("[")
            elif want == pl.String:
                assert isinstance(result, str) and result
            elif kind.startswith("List"):
                assert all(same_number(a, b) for a, b in zip(result, value, strict=True))
            elif kind in INTS | FLOATS:
                assert same_number(result, value)
            else:
                assert result == value


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(column_files())
def test_union_through_real_parquet_files(files):
    with tempfile.TemporaryDirectory() as folder:
        runs = []
        for index, (kind, values) in enumerate(files):
            frame = frame_of(kind, values).with_columns(
                pl.lit("e").alias("entity"), pl.lit("p").alias("project"), pl.col("id").alias("name")
            )
            path = Path(folder) / f"f{index}_runs.parquet"
            frame.write_parquet(path)
            runs.append(open_runs_file(path))
        schema, _ = union_schema([r.schema for r in runs])
        merged = scan_runs(runs, schema).collect()
        assert merged.height == sum(len(v) for _, v in files)
        assert merged[FILE_INDEX].to_list() == [i for i, (_, v) in enumerate(files) for _ in v]
        assert merged[ROW_INDEX].is_unique().all()
        assert merged[ROW_INDEX].to_list() == sorted(merged[ROW_INDEX])  # the files one after another
        if "x" in schema:
            assert merged.schema["x"] == schema["x"]


def test_timestamps_of_different_units_and_zones_become_utc_microseconds():
    naive = pl.DataFrame({"t": [datetime(2026, 1, 1, 12)]}, schema={"t": pl.Datetime("ns")})
    zoned = pl.DataFrame(
        {"t": [datetime(2026, 1, 1, 13, tzinfo=UTC)]}, schema={"t": pl.Datetime("ms", "UTC")}
    )
    schema, warnings = union_schema([dict(naive.schema), dict(zoned.schema)])
    assert schema["t"] == pl.Datetime("us", "UTC") and warnings == []
    merged = pl.concat([conform(f.lazy(), dict(f.schema), schema) for f in (naive, zoned)]).collect()
    assert merged["t"][1] - merged["t"][0] == timedelta(hours=1)


def write_runs(path: Path, **extra) -> Path:
    pl.DataFrame({"id": ["a"], "name": ["n"], "entity": ["e"], "project": ["p"], **extra}).write_parquet(path)
    return path


def test_folders_files_and_globs_are_found_once_each_and_history_is_skipped(tmp_path, capsys):
    (tmp_path / "day1").mkdir()
    a = write_runs(tmp_path / "day1" / "e_p_runs.parquet")
    b = write_runs(tmp_path / "x_runs.parquet")
    write_runs(tmp_path / "day1" / "e_p_history.parquet")
    events = Events()
    found = find_runs_files(
        [str(tmp_path), str(a), str(tmp_path / "*.parquet"), str(tmp_path / "day1" / "*")], events
    )
    assert found == [a, b]
    assert "skipping history file" in "\n".join(events.notes)


def denied(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Listing `folder` fails as it does for a user without permission (root ignores file modes)."""
    scandir = os.scandir

    def guarded(path=".", *args):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path, *args)

    monkeypatch.setattr(os, "scandir", guarded)


def test_a_folder_that_cannot_be_listed_is_named_not_skipped(tmp_path, monkeypatch):
    write_runs(tmp_path / "e_p_runs.parquet")
    (tmp_path / "older").mkdir()
    write_runs(tmp_path / "older" / "e_q_runs.parquet")
    denied(monkeypatch, tmp_path / "older")
    with pytest.raises(
        Incomplete, match=r"cannot read .*older \(Permission denied\): the runs files in it would be missing"
    ):
        find_runs_files([str(tmp_path)])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: str(p / "missing.parquet"), "no such file or folder"),
        (lambda p: str(p / "*.nothing"), "no file matches"),
        (lambda p: str(p), "no \\*_runs.parquet in folder"),
    ],
)
def test_missing_inputs_are_usage_errors(tmp_path, make, message):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BadInput, match=message):
        find_runs_files([make(tmp_path)])


def test_a_parquet_that_is_not_a_runs_export_names_its_columns(tmp_path):
    path = tmp_path / "other.parquet"
    pl.DataFrame({"run_id": ["a"], "step": [1]}).write_parquet(path)
    with pytest.raises(
        BadInput, match=r"not a runs export: no id, name, entity, project column \(it has: run_id, step\)"
    ):
        open_runs_file(path)


def test_a_file_that_is_not_parquet_is_a_usage_error(tmp_path):
    path = tmp_path / "x_runs.parquet"
    path.write_text("not parquet")
    with pytest.raises(BadInput, match=r"cannot read .* as parquet"):
        open_runs_file(path)


def nightly_runs(path: Path, ids: list[str], x: list, generation: str, exported: float) -> Path:
    """A runs file as the exporter writes one (its generation in the footer), exported at `exported`."""
    frame = pl.DataFrame({"id": ids, "name": ids, "entity": "e", "project": "p", "x": x})
    pq.write_table(frame.to_arrow().replace_schema_metadata({GENERATION_KEY: generation}), path)
    os.utime(path, (exported, exported))  # no metadata file: the export time is the file's mtime
    return path


def test_files_of_one_schema_have_it_read_by_polars_once(tmp_path, monkeypatch):
    import shared.table.exports as exports

    read = []
    real = exports.parquet_schema
    monkeypatch.setattr(exports, "parquet_schema", lambda path: read.append(path) or real(path))
    paths = [nightly_runs(tmp_path / f"n{i}_runs.parquet", ["a"], [1.5], f"g{i}", 1e9 + i) for i in range(12)]
    paths.append(nightly_runs(tmp_path / "int_runs.parquet", ["a"], [2], "g12", 1e9))
    schemas = {}  # as open_runs_files shares them, one file at a time: which is read first is known
    files = [open_runs_file(path, schemas=schemas) for path in paths]
    assert read == [paths[0], paths[-1]]  # each export's own generation does not make its schema another
    assert files[-1].schema["x"] == pl.Int64 and all(f.schema["x"] == pl.Float64 for f in files[:-1])
    shared = open_runs_files(paths)
    assert all(f.schema is shared[0].schema for f in shared[:-1])  # one dict for the nights that share it
    assert shared[-1].schema["x"] == pl.Int64


def test_enum_columns_of_other_values_are_not_taken_for_one_schema(tmp_path):
    # Their Arrow schemas differ only in the fields' metadata, where polars keeps an Enum's values.
    a, b = tmp_path / "a_runs.parquet", tmp_path / "b_runs.parquet"
    write_runs(a, stage=pl.Series(["x"], dtype=pl.Enum(["x", "y"])))
    write_runs(b, stage=pl.Series(["z"], dtype=pl.Enum(["x", "z"])))
    schemas = {}
    assert open_runs_file(a, schemas=schemas).schema["stage"] == pl.Enum(["x", "y"])
    assert open_runs_file(b, schemas=schemas).schema["stage"] == pl.Enum(["x", "z"])


def test_consecutive_files_of_one_schema_are_one_scan_in_file_and_row_order(tmp_path):
    # Nights 0-2 and 5-6 hold x as floats, nights 3-4 as integers: three scans. Run "kept" is in every
    # night with no heartbeat: its newest copy is the latest export, night 3's (mtimes: 3 is the latest).
    xs = [[0.5, 1.5], [0.5, 1.5], [0.5, 1.5], [1, 2], [1, 2], [0.5, 1.5], [0.5, 1.5]]
    exported = [1, 2, 3, 9, 4, 5, 6]
    paths = [
        nightly_runs(tmp_path / f"n{i}_runs.parquet", [f"r{i}", "kept"], x, f"g{i}", 1e9 + exported[i])
        for i, x in enumerate(xs)
    ]
    files = open_runs_files(paths)
    schema, _ = union_schema([f.schema for f in files])
    merged = scan_runs(files, schema).collect()
    assert merged[FILE_INDEX].to_list() == [i for i in range(7) for _ in range(2)]
    # One index per row, in order: each scan's own positions above its first file's index times 2^32.
    assert merged[ROW_INDEX].to_list() == [
        *range(6),
        *((3 << 32) + i for i in range(4)),
        *((5 << 32) + i for i in range(4)),
    ]
    assert merged[SOURCE_COLUMN].to_list() == [str(p) for p in paths for _ in range(2)]
    assert merged["x"].to_list() == [float(v) for x in xs for v in x]
    kept = scan_deduplicated(files).filter(pl.col("id") == "kept").collect()
    assert kept[SOURCE_COLUMN].to_list() == [str(paths[3])] and kept["x"].to_list() == [2.0]
    only_some = scan_runs(files, schema, merged[ROW_INDEX].gather([1, 6, 7, 13])).collect()
    assert only_some["id"].to_list() == ["kept", "r3", "kept", "kept"]
    assert only_some[FILE_INDEX].to_list() == [0, 3, 3, 6]
