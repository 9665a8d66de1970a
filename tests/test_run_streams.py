"""Everything a run holds (issue 21), items 2-4: the tidy streams beside history (every history value that
is not a number, console output, system metrics), read from runs the real clients wrote, each value
compared with what was logged."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from polars.testing import assert_frame_equal

from shared.cli.progress import TerminalEvents
from shared.table.schema import GENERATION_KEY
from shared.wandb.offline import read_run_log
from tests.test_wandb_offline import Logs, logs  # noqa: F401 (the fixture)


def export_offline(paths: list[Path], folder: Path, **options: object) -> tuple[list, list[str]]:
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
    from shared.wandb.sources import OfflineSource

    events = TerminalEvents()
    outcome = export_runs(
        [ExportTarget(OfflineSource(paths, events=events))], ExportOptions(folder, **options), events
    )
    return outcome.results, outcome.failures


def test_an_offline_export_keeps_every_history_value(logs: Logs, tmp_path: Path):  # noqa: F811
    """With history, the values that are not numbers land in `*_history_other.parquet`, of the export's
    generation and named by its metadata; none is counted as skipped."""
    results, failures = export_offline([logs.complete], tmp_path, include_history=True)
    assert failures == []
    metadata = json.loads(results[0].metadata_path.read_text())
    other_path = tmp_path / metadata["files"]["history_other"]
    assert other_path.name.endswith("_history_other.parquet")
    assert metadata["skipped_history_values"] == 0 and metadata["history_other_rows"] == 3
    assert pq.read_schema(other_path).metadata[GENERATION_KEY.encode()].decode() == metadata["generation"]
    stored = pl.read_parquet(other_path).sort("key")
    assert stored.columns == ["run_id", "step", "timestamp", "key", "type", "value"]
    assert_frame_equal(stored, read_run_log(logs.complete).history_other.sort("key"))
    numeric = pl.read_parquet(results[0].history_path)
    assert numeric.schema["value"] == pl.Float64 and "label" not in numeric["key"].to_list()


def test_without_history_no_history_other_file(logs: Logs, tmp_path: Path):  # noqa: F811
    results, _ = export_offline([logs.complete], tmp_path)
    metadata = json.loads(results[0].metadata_path.read_text())
    assert "history_other" not in metadata["files"] and not list(tmp_path.glob("*_history_other.parquet"))


def test_readers_of_a_folder_take_no_stream_file_for_runs(logs: Logs, tmp_path: Path):  # noqa: F811
    """A glob over an export's parquets, or the newest export of a folder, finds its runs file only."""
    from shared.base.events import Events
    from shared.table.exports import find_runs_files, newest_export

    results, _ = export_offline([logs.complete], tmp_path, include_history=True)
    other = next(tmp_path.glob("*_history_other.parquet"))
    other.touch()  # the newest file of the folder
    events = Events()
    assert find_runs_files([str(tmp_path / "*.parquet")], events) == [results[0].runs_path]
    assert f"skipping history_other file {other}" in "\n".join(events.notes)
    assert newest_export(tmp_path)[0] == results[0].runs_path
