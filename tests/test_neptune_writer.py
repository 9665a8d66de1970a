"""Archives as neptune-exporter's own writer leaves them: row groups per batch, snappy, NaN as null,
several parts per run, and a run whose export was cut off before its part 0 was renamed."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest

from tests.current_data import load_script
from tests.neptune_fixtures import PROJECT, SPECS, exporter_name, numbered, write_as_the_exporter

export_runs = load_script("export_runs", "neptune-tools")
query_topk = load_script("query_topk", "neptune-tools")
CUT_OFF = SPECS[0].name  # its parts 1.. are final, its part 0 still .tmp


@pytest.fixture
def archive(tmp_path):
    return write_as_the_exporter(tmp_path / "archive", parts=3, unfinished=(CUT_OFF,))


def test_the_fixture_is_what_the_writer_writes(archive):
    folder = archive / exporter_name(PROJECT)
    part = pq.ParquetFile(folder / f"{exporter_name('TEST-2')}_part_2.parquet")
    assert len(part.schema_arrow) == 14 and {"file_value", "histogram_value"} <= set(part.schema_arrow.names)
    assert part.metadata.row_group(0).column(0).compression == "SNAPPY"
    assert part.metadata.num_row_groups == len(SPECS[1].series) - 1, "a row group per series after the first"
    assert sorted(p.name.split("_part_")[1] for p in folder.glob(f"{exporter_name('TEST-1')}_part_*")) == [
        "0.parquet.tmp", "1.parquet", "2.parquet",
    ]  # fmt: skip


def test_export_skips_a_run_cut_off_before_its_part_0_and_keeps_files_consistent(archive, tmp_path, capsys):
    out = tmp_path / "out"
    assert export_runs.main(["--source", str(archive), "-o", str(out), "--include-history"]) == 0
    err = capsys.readouterr().err
    assert f"run {exporter_name('TEST-1')} left out: its export did not finish" in err
    runs = pl.read_parquet(next(out.glob("*_runs.parquet")))
    history = pl.read_parquet(next(out.glob("*_history.parquet")))
    assert sorted(runs["name"]) == sorted(spec.name for spec in SPECS if spec.name != CUT_OFF)
    assert set(history["run_id"]) <= set(runs["id"]) and "TEST-1" not in set(history["run_id"])
    metadata = json.loads(next(out.glob("*_metadata.json")).read_text())
    assert metadata["runs_reported"] == metadata["runs_exported"] == len(SPECS) - 1


def test_history_from_several_parts_has_every_point_and_a_nan_stored_as_null_is_nan(archive, tmp_path):
    out = tmp_path / "out"
    assert export_runs.main(["--source", str(archive), "-o", str(out), "--include-history"]) == 0
    runs = pl.read_parquet(next(out.glob("*_runs.parquet")))
    history = pl.read_parquet(next(out.glob("*_history.parquet")))
    ids = dict(zip(runs["name"], runs["id"], strict=True))
    for spec in SPECS[1:]:
        for path, points in spec.series.items():
            want = [(int(step), str(value)) for step, value in numbered(points)]
            got = history.filter((pl.col("run_id") == ids[spec.name]) & (pl.col("key") == path)).sort("step")
            assert [(step, str(value)) for step, value in got.select("step", "value").rows()] == want, (
                spec.name
            )


def test_query_topk_skips_the_cut_off_run_too(archive, capsys):
    assert query_topk.main([str(archive), "--project", PROJECT, "--metric", "train/loss", "--json"]) == 0
    captured = capsys.readouterr()
    assert f"run {exporter_name('TEST-1')} left out" in captured.err
    assert CUT_OFF not in {run["name"] for run in json.loads(captured.out)}
