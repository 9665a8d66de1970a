"""Readers see one export state (issue 20, item 5): an export's files carry one generation; readers paused
between an export's renames read again or fail in one line; aggregate writes its pair as a unit. Also the
report's curves from the newest copy (item 11) and integers beyond 2^53 (item 9)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

import shared.base.storage as storage
from shared.analysis.aggregate import aggregate
from shared.analysis.frames import Selection
from shared.analysis.report import top_curves
from shared.base.errors import ExportChanged, Incomplete
from shared.base.events import Events
from shared.table.exports import (
    check_unchanged,
    export_metadata,
    one_export_state,
    open_runs_file,
    rounded_integers,
    union_schema,
)
from shared.table.schema import GENERATION_KEY
from shared.table.source import Asked

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "wandb"
STEM = "graph_denoise_team_spectral_denoising"
BEST = "xqlp9ego"  # the sample run with the lowest metric_test_mse


def export(folder: Path) -> None:
    """The sample offline logs exported with history into `folder`, in this process."""
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
    from shared.wandb.sources import OfflineSource

    events = Events()
    outcome = export_runs(
        [ExportTarget(OfflineSource([SAMPLES], events=events))],
        ExportOptions(folder, include_history=True),
        events,
    )
    assert not outcome.failures


@pytest.fixture(scope="module")
def sample_export(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("state") / "export"
    export(folder)
    return folder


@pytest.fixture
def folder(sample_export: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(sample_export, copy)
    return copy


def runs_path(folder: Path) -> Path:
    return folder / f"{STEM}_runs.parquet"


def history_path(folder: Path) -> Path:
    return folder / f"{STEM}_history.parquet"


def generation(path: Path) -> str | None:
    value = (pq.read_metadata(path).metadata or {}).get(GENERATION_KEY.encode())
    return value.decode() if value else None


def rewrite(path: Path, change=lambda frame: frame, generation: str | None = "other") -> None:
    """`path` replaced the way an export replaces it: new content and generation, renamed into place."""
    frame = change(pl.read_parquet(path))
    temp = path.with_name(f".{path.name}.x.tmp")
    frame.write_parquet(temp, metadata={GENERATION_KEY: generation} if generation else None)
    os.replace(temp, path)


def test_an_exports_files_carry_one_generation(folder: Path):
    recorded = export_metadata(runs_path(folder))
    assert recorded is not None and recorded["generation"]
    assert generation(runs_path(folder)) == generation(history_path(folder)) == recorded["generation"]


@pytest.mark.parametrize("reader", ["open", "query"])
def test_history_of_another_export_is_refused_after_reading_again(folder: Path, reader: str, monkeypatch):
    rewrite(history_path(folder))  # the export renamed its history into place, not yet its runs file
    pauses: list[float] = []
    monkeypatch.setattr("shared.table.exports.time.sleep", pauses.append)
    with pytest.raises(
        ExportChanged, match=r"graph_denoise_team/spectral_denoising: .* being rewritten by an export"
    ):
        if reader == "open":
            one_export_state(lambda: open_runs_file(runs_path(folder), with_history=True))
        else:
            from shared.table.export_folder import ExportFolderSource

            ExportFolderSource(folder).runs()
    assert len(pauses) == 4  # read five times


def test_metadata_of_another_export_is_refused(folder: Path, monkeypatch):
    rewrite(runs_path(folder))  # runs renamed into place, metadata not yet
    monkeypatch.setattr("shared.table.exports.time.sleep", lambda seconds: None)
    with pytest.raises(ExportChanged, match="being rewritten by an export"):
        one_export_state(lambda: open_runs_file(runs_path(folder)))


def test_files_of_older_versions_without_generations_are_read(folder: Path):
    for path in (runs_path(folder), history_path(folder)):
        rewrite(path, generation=None)
    metadata = folder / f"{STEM}_metadata.json"
    metadata.write_text(metadata.read_text().replace('"generation"', '"generation_was"'))
    opened = open_runs_file(runs_path(folder), with_history=True)
    assert opened.generation is None and opened.history == history_path(folder)


def test_a_reader_paused_between_an_exports_renames_reads_again_and_sees_the_new_state(folder, monkeypatch):
    """The export is stopped after its first rename (history) until the reader has met the mixed state;
    the reader's next attempt sees the finished new export."""
    first_rename, release = threading.Event(), threading.Event()
    real_replace = os.replace

    def paused_replace(source, target):
        real_replace(source, target)
        if (
            str(target).endswith("_history.parquet")
            and threading.current_thread() is not threading.main_thread()
        ):
            first_rename.set()
            release.wait(30)

    monkeypatch.setattr(storage.os, "replace", paused_replace)
    before = generation(runs_path(folder))
    exporting = threading.Thread(target=export, args=(folder,))
    exporting.start()
    assert first_rename.wait(60)
    attempts = []

    def read():
        attempts.append(1)
        if len(attempts) == 2:
            release.set()
            exporting.join(60)
        return open_runs_file(runs_path(folder), with_history=True)

    opened = one_export_state(read)
    release.set()
    exporting.join(60)
    assert len(attempts) == 2  # the first met the new history beside the old runs file
    assert opened.generation != before
    assert (
        opened.generation
        == generation(history_path(folder))
        == export_metadata(runs_path(folder))["generation"]
    )


def test_a_file_replaced_while_it_was_read_is_noticed(folder: Path):
    opened = open_runs_file(runs_path(folder), with_history=True)
    check_unchanged([opened])
    export(folder)  # a whole export in between: each file is another now
    with pytest.raises(ExportChanged, match=r"_runs.parquet was replaced as it was read: being rewritten"):
        check_unchanged([opened])


def test_a_query_reads_the_history_of_the_export_it_listed(folder: Path):
    """History replaced after the runs were listed: the query still reads the listed export's (its
    snapshot holds the files open)."""
    from shared.table.export_folder import ExportFolderSource

    source = ExportFolderSource(folder)
    source.runs()
    asked = Asked(["test/mse"], [BEST], series=True)
    before = source.points(asked).collect()
    rewrite(history_path(folder), lambda frame: frame.with_columns(pl.col("value") * 1000))
    after = source.points(asked).collect()
    source.close()
    assert before.height and after.equals(before)


def aggregate_of(folder: Path, output: Path, *, include_history: bool = True, events: Events | None = None):
    files = [open_runs_file(runs_path(folder), with_history=include_history)]
    return aggregate(files, output, Selection(), [], enrich_output=False, include_history=include_history,
                     events=events)  # fmt: skip


def test_an_aggregate_pair_carries_one_generation_and_names_its_history(folder: Path, tmp_path: Path):
    output = tmp_path / "u.parquet"
    aggregate_of(folder, output)
    assert generation(output) == generation(tmp_path / "u_history.parquet") is not None
    assert open_runs_file(output, with_history=True).history == tmp_path / "u_history.parquet"


def test_an_aggregate_failing_while_writing_its_history_leaves_the_earlier_pair(
    folder, tmp_path, monkeypatch
):
    output = tmp_path / "u.parquet"
    aggregate_of(folder, output)
    earlier = {path.name: path.read_bytes() for path in tmp_path.glob("u*.parquet")}
    real = storage.staged

    def failing(final, write):
        if final.name == "u_history.parquet":
            raise Incomplete(f"cannot write {final}: No space left on device")
        return real(final, write)

    monkeypatch.setattr(storage, "staged", failing)
    with pytest.raises(Incomplete, match="No space left"):
        aggregate_of(folder, output)
    assert {path.name: path.read_bytes() for path in tmp_path.glob("u*.parquet")} == earlier
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_aggregate_without_history_leaves_no_history_to_its_readers(folder: Path, tmp_path: Path):
    output = tmp_path / "u.parquet"
    aggregate_of(folder, output)
    events = Events()
    aggregate_of(folder, output, include_history=False, events=events)
    assert any("left from an earlier aggregate" in w for w in events.warnings)
    assert open_runs_file(output, with_history=True).history is None


def test_a_report_curve_comes_from_the_file_of_the_runs_newest_copy(folder: Path, tmp_path: Path):
    """A stale export listed first holds the best run's history; the newest copy's export holds none
    of it: no curve (the stale one was drawn)."""
    stale = tmp_path / "stale"
    shutil.copytree(folder, stale)
    one_hour = timedelta(hours=1)
    rewrite(
        runs_path(folder),
        lambda f: f.with_columns(pl.col("heartbeat_at") + one_hour),
        generation(runs_path(folder)),
    )
    rewrite(
        history_path(folder), lambda f: f.filter(pl.col("run_id") != BEST), generation(history_path(folder))
    )
    files = [open_runs_file(runs_path(path), with_history=True) for path in (stale, folder)]
    top = (
        pl.read_parquet(runs_path(folder))
        .filter(pl.col("id") == BEST)
        .select("entity", "project", "id", "name", "metric_test_mse")
    )
    curves, _, note = top_curves(files, top, "metric_test_mse")
    assert curves == [] and "holds no" in note
    files.reverse()  # the newest copy first: the same answer
    assert top_curves(files, top, "metric_test_mse")[0] == []
    curves, _, _ = top_curves([files[1]], top, "metric_test_mse")  # the stale export alone has the curve
    assert len(curves) == 1


def test_integers_beyond_2_53_meeting_floats_are_named_with_their_runs(tmp_path: Path):
    base = {"entity": ["e", "e"], "project": ["p", "p"], "name": ["a", "b"]}
    big = 2**53 + 1
    pl.DataFrame({**base, "id": ["r1", "r2"], "metric_n": [big, 2**53]}).write_parquet(
        tmp_path / "x_runs.parquet"
    )
    pl.DataFrame({**base, "id": ["r3", "r4"], "metric_n": [0.5, 1.5]}).write_parquet(
        tmp_path / "y_runs.parquet"
    )
    files = [open_runs_file(tmp_path / name) for name in ("x_runs.parquet", "y_runs.parquet")]
    schema, _ = union_schema([f.schema for f in files])
    (warning,) = rounded_integers(files, schema)
    assert "column metric_n" in warning and f"e/p/r1 in {files[0].label}: {big} -> " in warning
    assert "r2" not in warning  # 2^53 itself is exact
    assert rounded_integers(files[:1], union_schema([files[0].schema])[0]) == []  # kept as integers


def test_an_incremental_merge_writes_a_new_generation_in_every_file(tmp_path: Path):
    """A merged project is another export state: its runs, history and metadata share a new generation."""
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
    from shared.neptune.offline import OfflineSource
    from tests.test_source_contract import append_operation

    folder = tmp_path / ".neptune"
    shutil.copytree(SAMPLES.parent / "neptune" / ".neptune", folder)
    out = tmp_path / "out"

    def export_and_read() -> set[str | None]:
        events = Events()
        source = OfflineSource(folder, "team/sae", events=events)
        export_runs(
            [ExportTarget(source, source.key)],
            ExportOptions(out, include_history=True, incremental=True),
            events,
        )
        metadata = export_metadata(out / "team_sae_runs.parquet") or {}
        files = [out / "team_sae_runs.parquet", out / "team_sae_history.parquet"]
        return {metadata.get("generation"), *(generation(path) for path in files)}

    (first,) = export_and_read()
    append_operation(sorted(folder.glob("offline/run__*"))[0], ["eval", "late"], 0.25, at=time.time())
    (merged,) = export_and_read()
    assert first and merged and merged != first
