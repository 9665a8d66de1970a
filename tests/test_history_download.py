"""History over the API (batched parquet URL lookups, pooled downloads) and the streaming history writer."""

from __future__ import annotations

import json
import math
import os
import resource
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.base.concurrency import FILES_PER_WORKER, batched, workers_within_open_files
from shared.base.errors import Incomplete
from shared.table.history import StreamWriter
from shared.table.schema import HISTORY_SCHEMA, is_internal_key
from shared.wandb.history import URL_BATCH, Downloaded, HistoryFetcher
from shared.wandb.tidy import skipped_values, wide_to_tidy
from tests.test_export_api import export_runs

TEAM, PROJECT = "graph_denoise_team", "spectral_denoising"


def test_history_comes_from_batched_lookups_and_one_get_per_file(wandb_env, tmp_path):
    runs = wandb_env.dataset.project(TEAM, PROJECT).runs
    argv = ["-e", TEAM, "-p", PROJECT, "-o", str(tmp_path), "--include-history", "--workers", "3"]
    assert export_runs.main(argv) == 0

    live = [run for run in runs if run.history is not None and run.live_from_step is not None]
    # One lookup per URL_BATCH runs; the rows of a running run not yet exported come via scan_history,
    # which looks that run up once more inside wandb-core.
    assert wandb_env.requests["RunParquetHistory"] == math.ceil(len(runs) / URL_BATCH) + len(live)
    assert live and wandb_env.requests["HistoryPage"] == len(live)
    files = sum(wandb_env.parquet_file_count(run) for run in runs)
    files_again = sum(
        wandb_env.parquet_file_count(run) for run in live
    )  # scan_history (wandb-core) fetches them
    assert wandb_env.requests["GET /files"] == files + files_again
    history = pl.read_parquet(tmp_path / f"{TEAM}_{PROJECT}_history.parquet")
    assert history.schema == pl.Schema(
        {"run_id": pl.String, "step": pl.Int64, "timestamp": pl.Datetime("us", "UTC"), "key": pl.String, "value": pl.Float64}
    )  # fmt: skip
    others, stamps = set(), {}
    for run in runs:
        for row in run.history_table().rows if run.history is not None else []:
            for key, value in row.items():
                if is_internal_key(key):
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    others.add((run.id, row["_step"], key))
                else:
                    moment = datetime.fromtimestamp(round(row["_timestamp"] * 1e6) / 1e6, UTC)
                    stamps[(run.id, row["_step"], key)] = moment
    metadata = json.loads((tmp_path / f"{TEAM}_{PROJECT}_metadata.json").read_text())
    assert metadata["skipped_history_values"] == 0  # the values that are not numbers are in history_other
    other = pl.read_parquet(tmp_path / f"{TEAM}_{PROJECT}_history_other.parquet")
    assert (
        set(other.select("run_id", "step", "key").iter_rows()) == others and other.height == len(others) > 0
    )
    got = {(r, s, k): t for r, s, k, t in history.select("run_id", "step", "key", "timestamp").iter_rows()}
    assert got == stamps


def test_wide_to_tidy_keeps_numbers_and_nan_drops_nulls_and_counts_the_rest():
    wide = pa.table(
        {
            "_step": pa.array([0, 1, 2], pa.int64()),
            "_timestamp": pa.array([1.5, 2.0000015, None]),
            "_runtime": pa.array([0.1, 0.2, 0.3]),
            "loss": pa.array([1.0, None, math.nan]),
            "epoch": pa.array([0, 0, 1], pa.int64()),
            "flag": pa.array([True, None, False]),
            "media": pa.array(['{"_type": "image"}', None, None]),
        }
    )
    tidy, skipped = wide_to_tidy(wide, "run-1"), skipped_values(wide)
    assert tidy.schema == HISTORY_SCHEMA and skipped == 3  # two booleans, one media value
    rows = tidy.to_pylist()
    assert [(r["step"], r["key"]) for r in rows] == [
        (0, "loss"),
        (2, "loss"),
        (0, "epoch"),
        (1, "epoch"),
        (2, "epoch"),
    ]
    assert (
        math.isnan(rows[1]["value"]) and rows[0]["value"] == 1.0 and {r["run_id"] for r in rows} == {"run-1"}
    )
    assert rows[0]["timestamp"] == datetime(1970, 1, 1, 0, 0, 1, 500000, UTC)
    assert rows[3]["timestamp"] == datetime(1970, 1, 1, 0, 0, 2, 2, UTC) and rows[4]["timestamp"] is None
    only = wide_to_tidy(wide, "run-1", keys=["epoch", "media"])
    only_skipped = skipped_values(wide, keys=["epoch", "media"])
    assert set(only["key"].to_pylist()) == {"epoch"} and only_skipped == 1


def test_wide_to_tidy_without_step_or_time_columns_numbers_the_rows():
    wide = pa.table({"loss": [0.5, 0.25], "acc": [0.1, None]})
    tidy = wide_to_tidy(wide, "run-1")
    assert [(r["step"], r["key"], r["value"], r["timestamp"]) for r in tidy.to_pylist()] == [
        (0, "loss", 0.5, None),
        (1, "loss", 0.25, None),
        (0, "acc", 0.1, None),
    ]


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def test_a_batch_of_runs_is_made_tidy_like_each_run_on_its_own():
    """Files with one schema are stacked; another schema (a key that is text in one run) stays apart."""
    wides = {
        "a": pa.table({"_step": [0, 1], "_timestamp": [1.0, 2.0], "loss": [0.5, None], "acc": [0.1, 0.2]}),
        "b": pa.table({"_step": [0, 1, 2], "_timestamp": [1.0, 2.0, 3.0], "loss": ["x", None, "y"], "acc": [0.3, math.nan, 0.4]}),
        "c": pa.table({"_step": [5], "_timestamp": [9.0], "loss": [1.5], "acc": [None]}, schema=pa.schema([("_step", pa.int64()), ("_timestamp", pa.float64()), ("loss", pa.float64()), ("acc", pa.float64())])),
    }  # fmt: skip
    batch = [Downloaded(run_id, [parquet_bytes(wide)], None) for run_id, wide in wides.items()]
    batch.append(Downloaded("d", [parquet_bytes(wides["a"]), parquet_bytes(wides["b"])], None))  # two files
    fetcher = HistoryFetcher(None, TEAM, PROJECT, keys=None, workers=1, timeout_s=5)
    tidy, skipped, _ = fetcher.tidy(batch)

    expected, expected_skipped = [], {}
    for downloaded in batch:
        expected_skipped[downloaded.run_id] = 0
        for data in downloaded.files:
            wide = pq.read_table(pa.BufferReader(data))
            expected += wide_to_tidy(wide, downloaded.run_id).to_pylist()
            expected_skipped[downloaded.run_id] += skipped_values(wide)
    key = lambda row: (row["run_id"], row["key"], row["step"])  # noqa: E731
    got = sorted(tidy.to_pylist(), key=key)
    assert tidy.schema == HISTORY_SCHEMA and len(got) == len(expected) == 13
    assert [key(r) for r in got] == [key(r) for r in sorted(expected, key=key)]
    assert all(
        r == e or (math.isnan(r["value"]) and math.isnan(e["value"]))
        for r, e in zip(got, sorted(expected, key=key), strict=True)
    )
    assert skipped == expected_skipped == {"a": 0, "b": 2, "c": 0, "d": 2}
    # each run's series stays one block of rows (what the top-k engine reads fastest)
    runs_of_blocks = (
        pl.from_arrow(tidy)
        .select(pl.struct("run_id", "key").rle_id().alias("block"), "run_id", "key")
        .unique("block")
    )
    assert runs_of_blocks.select(pl.struct("run_id", "key").is_unique().all()).item() is False  # d: two files
    assert (
        runs_of_blocks.filter(pl.col("run_id") != "d")
        .select(pl.struct("run_id", "key").is_unique().all())
        .item()
    )


def test_batches_end_at_their_count_or_their_weight():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    weights = [1, 1, 5, 1, 1, 1, 1, 9]
    assert list(batched(weights, 4, weight=lambda w: w, max_weight=6)) == [[1, 1, 5], [1, 1, 1, 1], [9]]


def tidy_frame(run_id: str, steps: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "run_id": [run_id] * steps,
            "step": list(range(steps)),
            "timestamp": [datetime(2026, 1, 1, tzinfo=UTC)] * steps,
            "key": ["loss"] * steps,
            "value": [float(s) for s in range(steps)],
        },
        schema={"run_id": pl.String, "step": pl.Int64, "timestamp": pl.Datetime("us", "UTC"), "key": pl.String, "value": pl.Float64},
    )  # fmt: skip


def test_history_writer_streams_row_groups_from_frames_and_tables(tmp_path):
    final = tmp_path / "history.parquet"
    writer = StreamWriter(final, row_group=10)
    for index in range(7):  # polars frames and arrow tables, as the exporters hand them over
        frame = tidy_frame(f"r{index}", 6)
        writer.add(frame if index % 2 else frame.to_arrow().cast(HISTORY_SCHEMA))
        assert not final.exists()
    writer.add(tidy_frame("empty", 0))
    assert writer.commit() == 42
    file = pq.ParquetFile(final)
    assert file.schema_arrow == HISTORY_SCHEMA and file.metadata.num_rows == 42
    assert all(file.metadata.row_group(i).num_rows <= 12 for i in range(file.metadata.num_row_groups))
    assert file.metadata.num_row_groups >= 3
    back = pl.read_parquet(final)
    assert back.group_by("run_id").len().sort("run_id")["len"].to_list() == [6] * 7
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_history_writer_discard_and_failed_write_leave_no_file(tmp_path):
    final = tmp_path / "history.parquet"
    writer = StreamWriter(final, row_group=5)
    writer.add(tidy_frame("a", 8))
    writer.discard()
    assert list(tmp_path.iterdir()) == []

    broken = StreamWriter(final, row_group=5)
    broken.add(tidy_frame("a", 8).with_columns(pl.lit("not a number").alias("value")))
    with pytest.raises((pa.ArrowInvalid, Incomplete)):
        broken.commit()
    broken.discard()
    assert list(tmp_path.iterdir()) == []


def test_downloads_are_as_many_as_the_open_file_limit_can_serve():
    """With `ulimit -n 32`, 32 downloads at once failed to connect (EMFILE) and were retried to the end."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    assert workers_within_open_files(32) == 32
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 3 * FILES_PER_WORKER + 1, hard))
        assert workers_within_open_files(32) == 3
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 1, hard))
        assert workers_within_open_files(32) == 1  # one, however few are left
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
