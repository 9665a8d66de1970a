"""The source contract (shared/table/source.py): every tracker's source implements all of it, and the one
export pipeline serves any of them, incremental updates included."""

from __future__ import annotations

import inspect
import json
import shutil
import time
from pathlib import Path

import polars as pl
import pytest

from shared.base.events import Events
from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
from shared.neptune.archive import ArchiveSource
from shared.neptune.live import LiveSource
from shared.neptune.offline import OfflineSource as NeptuneOfflineSource
from shared.table.export_folder import ExportFolderSource
from shared.table.source import ExportSource, QuerySource, RunSource
from shared.wandb.sources import ApiSource
from shared.wandb.sources import OfflineSource as WandbOfflineSource

ROOT = Path(__file__).resolve().parent.parent
TRACKER_SOURCES = [ApiSource, WandbOfflineSource, ArchiveSource, NeptuneOfflineSource, LiveSource]


def members(protocol: type) -> dict[str, object]:
    """The methods (by their parameters) and attributes a protocol names, its bases' included."""
    found: dict[str, object] = {}
    for base in reversed(protocol.__mro__):
        if base is object or not getattr(base, "_is_protocol", False):
            continue
        for name, value in vars(base).items():
            if name.startswith("_"):
                continue
            found[name] = list(inspect.signature(value).parameters) if callable(value) else "attribute"
        for name in getattr(base, "__annotations__", {}):
            found.setdefault(name, "attribute")
    return found


@pytest.mark.parametrize(
    "source", TRACKER_SOURCES, ids=lambda source: f"{source.__module__}.{source.__name__}"
)
def test_every_tracker_source_implements_the_whole_contract(source):
    """Each of the five sources has every method of QuerySource and ExportSource, with the same
    parameters, and the attributes the export pipeline reads."""
    contract = members(RunSource)
    assert {"runs", "points", "describe", "export_items", "export_metadata", "detail", "updatable"} <= set(
        contract
    )
    for name, expected in contract.items():
        assert hasattr(source, name), f"{source.__name__} lacks {name}"
        if expected != "attribute":
            assert list(inspect.signature(getattr(source, name)).parameters) == expected, name


def test_export_folders_are_a_query_source():
    """Folders the exporters wrote answer queries through the same contract (they are not exported again)."""
    for name, expected in members(QuerySource).items():
        assert list(inspect.signature(getattr(ExportFolderSource, name)).parameters) == expected, name
    assert not hasattr(ExportFolderSource, "export_items") and "export_items" in members(ExportSource)


def append_operation(run_folder: Path, path: list[str], value: float, at: float) -> None:
    """One more operation in an offline run's log, as the neptune client writes it."""
    log = sorted(run_folder.glob("data-*.log"))[-1]
    operation = {"obj": {"type": "AssignFloat", "path": path, "value": value}, "version": 10_000, "at": at}
    with log.open("a", encoding="utf-8") as out:
        out.write(json.dumps(operation) + "\n")


def test_an_incremental_export_of_a_neptune_source_merges_only_what_changed(tmp_path):
    """The pipeline's incremental updates serve any source: a Neptune offline folder exported twice with
    nothing changed leaves the files as they are; after one run logs again, only it is read anew and
    merged, and the runs table still holds every run."""
    folder = tmp_path / ".neptune"
    shutil.copytree(ROOT / "samples" / "neptune" / ".neptune", folder)
    out = tmp_path / "out"
    options = ExportOptions(out, include_history=True, incremental=True)

    def export() -> tuple[Events, pl.DataFrame]:
        events = Events()
        source = NeptuneOfflineSource(folder, "team/sae", events=events)
        outcome = export_runs([ExportTarget(source, source.key)], options, events)
        assert outcome.failures == [] and [result.shortfall for result in outcome.results] == [None]
        return events, pl.read_parquet(outcome.results[0].runs_path)

    first_events, first = export()
    assert "team/sae: full export (no previous export state)" in first_events.notes
    assert (out / "team_sae_state.json").is_file()
    history = out / "team_sae_history.parquet"
    before = history.stat().st_mtime_ns
    rows_per_run = pl.read_parquet(history).group_by("run_id").len().sort("run_id")

    again, unchanged = export()
    assert "team/sae: no run changed; files left as they are" in again.notes
    assert unchanged.equals(first) and history.stat().st_mtime_ns == before

    run_folder = sorted(folder.glob("offline/run__*"))[0]
    changed_id = run_folder.name.split("__")[1]
    append_operation(run_folder, ["eval", "late"], 0.25, at=time.time())
    merged_events, merged = export()
    assert "team/sae: 1 new or changed run(s) merged into the files" in merged_events.notes
    assert sorted(merged["id"]) == sorted(first["id"])
    late = merged.select("id", "metric_eval_late").drop_nulls()
    assert late.rows() == [(changed_id, 0.25)]
    # The changed run's history was read again and the others' kept: each run's rows once, none lost.
    assert pl.read_parquet(history).group_by("run_id").len().sort("run_id").equals(rows_per_run)
    assert history.stat().st_mtime_ns != before
