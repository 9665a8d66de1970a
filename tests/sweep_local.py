"""Hostile sweep cases (issue 20). Local sources: unreadable entries (h), runs still being written (q), copies of one run offline (r)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import polars as pl

from tests.sweep import (
    AGGREGATE,
    ANALYZE,
    EXPORT,
    INPUTS,
    NEPTUNE_EXPORT,
    ROOT,
    SAMPLE_PROJECT,
    WANDB_TOPK,
    Case,
    N,
    Outcome,
    copied_export,
    last_error_line,
    run,
    script_run,
)
from tests.test_bad_input import SAMPLES, isolated_env

LOGS = sorted(SAMPLES.glob("*/run-*.wandb"))
RUN_RECORD_END = 7 + 7 + 77  # the file header, then the header record's frame: what wandb-core writes first
NEPTUNE_TOPK = f"{N}/query_topk.py"
GOOD = 3  # good runs beside the odd entry
ODD_LOG = LOGS[GOOD].name  # the odd entry's log: a sample run's


# ------------------------------------------------------------------ inputs made by the real clients

_MADE: dict[str, Path] = {}
_MAKING = threading.Lock()

# Two runs with one id in two projects, and one more in the first project (wandb.init(mode="offline")).
SAME_ID_LOGS = """
import sys
from pathlib import Path
import pytest
from tests.offline_client import offline_wandb
work = Path(sys.argv[1])
with pytest.MonkeyPatch.context() as patch, offline_wandb(patch, work / "client") as wandb:
    for project, run_id, loss in (("first", "sameid01", 0.5), ("second", "sameid01", 0.1), ("first", "other001", 0.3)):
        run = wandb.init(mode="offline", dir=work, entity="team", project=project, id=run_id)
        run.log({"loss": loss})
        run.finish()
"""
# A `.neptune` folder with three real offline runs (neptune.init_run(mode="offline")).
NEPTUNE_OFFLINE = """
import sys
from pathlib import Path
from tests.neptune_fixtures import SPECS, write_offline_project
write_offline_project(Path(sys.argv[1]), SPECS[:3])
"""


def made(name: str, code: str) -> Path:
    """What `code` writes into a folder of its own (in a subprocess: the clients keep global state and
    the cases run in threads), made once per session."""
    with _MAKING:
        if name not in _MADE:
            target = INPUTS["export"].parent.parent / f"local-{name}"
            target.mkdir()
            subprocess.run(
                [sys.executable, "-c", code, str(target)], cwd=ROOT, env=isolated_env(target / "home"),
                check=True, capture_output=True, timeout=180,
            )  # fmt: skip
            _MADE[name] = target
    return _MADE[name]


def neptune_runs() -> list[Path]:
    return sorted((made("neptune", NEPTUNE_OFFLINE) / ".neptune" / "offline").iterdir())


def second_run_named(outcome: Outcome) -> None:
    """The last line names the run folder neptune_folder changed."""
    named_in_last_line(neptune_runs()[1].name)(outcome)


# ------------------------------------------------------------------ W&B offline folders


def wandb_folder(change: Callable[[Path], None] | None = None, *, odd: bool = True) -> Callable[[Path], None]:
    """wandb/ with GOOD sample runs and (`odd`) one more run folder `offline-run-…-odd` holding a copy
    of another sample log under its own name (ODD_LOG: `run-<its id>.wandb`), then `change(that run folder)`."""

    def setup(folder: Path) -> None:
        wandb = folder / "wandb"
        for log in LOGS[:GOOD]:
            (wandb / log.parent.name).mkdir(parents=True)
            shutil.copy(log, wandb / log.parent.name / log.name)
        if odd:
            odd_folder = wandb / "offline-run-20260101_000000-odd"
            odd_folder.mkdir()
            shutil.copy(LOGS[GOOD], odd_folder / ODD_LOG)
            if change:
                change(odd_folder)

    return setup


def header_only(run_folder: Path) -> None:
    """The log as wandb-core has it while it buffers: its header, no run record yet (written just now)."""
    os.truncate(run_folder / ODD_LOG, RUN_RECORD_END)


def cut_in_run_record(run_folder: Path) -> None:
    """The log while wandb-core writes its run record: the record's frame cut short, written just now."""
    os.truncate(run_folder / ODD_LOG, RUN_RECORD_END + 40)


def metadata_files(outcome: Outcome, out: str = "out") -> dict[str, dict]:
    return {
        path.name: json.loads(path.read_text()) for path in (outcome.folder / out).glob("*_metadata.json")
    }


def sample_metadata(outcome: Outcome) -> dict:
    return metadata_files(outcome)[f"{SAMPLE_PROJECT}_metadata.json"]


def counted_as_failed(entry: str, reported: int, exported: int) -> Callable[[Outcome], None]:
    """The export wrote the readable runs, and its metadata counts the entry as a run reported and failed."""

    def check(outcome: Outcome) -> None:
        metadata = sample_metadata(outcome)
        assert (metadata["runs_reported"], metadata["runs_exported"]) == (reported, exported), metadata
        assert [key for key in metadata["failed_runs"] if key.endswith(entry)], metadata["failed_runs"]
        assert entry in outcome.stderr

    return check


def in_progress_left_out(outcome: Outcome) -> None:
    """Only the finished runs are written, under their project; the log in progress is named and listed."""
    files = metadata_files(outcome)
    assert list(files) == [f"{SAMPLE_PROJECT}_metadata.json"], list(files)  # no offline_uncategorized_*
    metadata = sample_metadata(outcome)
    assert (metadata["runs_reported"], metadata["runs_exported"], metadata["failed_runs"]) == (GOOD, GOOD, {})
    assert [Path(path).name for path in metadata["runs_in_progress"]] == [ODD_LOG]


def offline_export(setup: Callable[[Path], None], *, limit: str | None = None, extra: tuple[str, ...] = ()):
    return script_run(EXPORT, ("--offline", "wandb", "-o", "out", *extra), setup, timeout=60, limit=limit)


def chmod_none(name: str = "") -> Callable[[Path], None]:
    def change(path: Path) -> None:
        (path / name if name else path).chmod(0)

    return change


def dangling(run_folder: Path) -> None:
    """A log removed between the listing and the reading (its link left dangling: same error)."""
    (run_folder / ODD_LOG).unlink()
    (run_folder / ODD_LOG).symlink_to("gone.wandb")


def wandb_folder_unreadable(folder: Path) -> None:
    wandb_folder(odd=False)(folder)
    (folder / "wandb").chmod(0)


# ------------------------------------------------------------------ Neptune offline folders


def neptune_folder(change: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """`.neptune/offline` with three offline runs; `change(the second run's folder)`."""

    def setup(folder: Path) -> None:
        target = folder / ".neptune" / "offline"
        target.mkdir(parents=True)
        for run_folder in neptune_runs():
            shutil.copytree(run_folder, target / run_folder.name)
        if change:
            change(target / neptune_runs()[1].name)

    return setup


def neptune_export(setup: Callable[[Path], None], *, limit: str | None = None) -> Callable[[Path], Outcome]:
    return script_run(NEPTUNE_EXPORT, ("--source", ".neptune", "-o", "out"), setup, timeout=90, limit=limit)


def neptune_metadata(outcome: Outcome) -> dict:
    return metadata_files(outcome)["offline_uncategorized_metadata.json"]


def neptune_counted_as_failed(outcome: Outcome) -> None:
    metadata = neptune_metadata(outcome)
    assert (metadata["runs_reported"], metadata["runs_exported"]) == (3, 2), metadata
    (failed,) = metadata["failed_runs"]
    assert Path(failed).name == neptune_runs()[1].name and "cannot read" in metadata["failed_runs"][failed]


def starting_run(run_folder: Path) -> None:
    """A run folder the client has just made: its metadata, no operation logged yet."""
    for log in run_folder.glob("data-*.log"):
        log.unlink()


def last_line_being_written(run_folder: Path) -> None:
    """The client in the middle of writing its last operation (written just now)."""
    log = run_folder / "data-1.log"
    text = log.read_text()
    log.write_text(text + '{"obj": {"type": "AssignFloat", "path": ["late"], "va')


def neptune_in_progress(outcome: Outcome) -> None:
    metadata = neptune_metadata(outcome)
    assert (metadata["runs_reported"], metadata["runs_exported"], metadata["failed_runs"]) == (2, 2, {})
    assert [Path(path).name for path in metadata["runs_in_progress"]] == [neptune_runs()[1].name]


def nothing_skipped(outcome: Outcome) -> None:
    metadata = neptune_metadata(outcome)
    assert (metadata["runs_reported"], metadata["runs_exported"], metadata["failed_runs"]) == (3, 3, {})
    assert "skipped" not in outcome.stderr


# ------------------------------------------------------------------ export folders read by the readers


def subfolder_unreadable(export: Path) -> None:
    """A copy of the export in a subfolder nobody may list: its runs would vanish from the answer."""
    sub = export / "older"
    sub.mkdir()
    for path in list(export.glob(f"{SAMPLE_PROJECT}_*")):
        shutil.copy(path, sub / path.name.replace(SAMPLE_PROJECT, "older"))
    sub.chmod(0)


def runs_file_unreadable(export: Path) -> None:
    (export / f"{SAMPLE_PROJECT}_runs.parquet").chmod(0)


def reader(script: str, argv: tuple[str, ...], change: Callable[[Path], None]) -> Callable[[Path], Outcome]:
    return script_run(script, argv, copied_export(change), timeout=60, limit="read-only")


# ------------------------------------------------------------------ a stale project, then its run done


def damaged_run_record(run_folder: Path) -> None:
    """A flipped byte inside the run record: the log's run is read under the file name's id (its own), in
    offline/uncategorized (how a run in progress was exported by earlier versions)."""
    log = run_folder / ODD_LOG
    data = bytearray(log.read_bytes())
    data[RUN_RECORD_END + 7 + 50] ^= 0x01
    log.write_bytes(bytes(data))


def restore_odd_log(folder: Path) -> None:
    """The run done: its log whole, naming its project."""
    shutil.copy(LOGS[GOOD], folder / "wandb" / "offline-run-20260101_000000-odd" / ODD_LOG)


def remove_odd_run(folder: Path) -> None:
    """The run folder deleted from the cluster: the earlier export holds its only copy."""
    shutil.rmtree(folder / "wandb" / "offline-run-20260101_000000-odd")


def stale_then(change: Callable[[Path], None]) -> Callable[[Path], Outcome]:
    """The first export writes offline/uncategorized for the damaged log; after `change`, the second
    export no longer produces that project: its files are marked superseded. Then an aggregate of the
    folder (in `extra`)."""

    def scenario(folder: Path) -> Outcome:
        wandb_folder(damaged_run_record)(folder)
        env = isolated_env(folder / "home")
        first = run(EXPORT, ["--offline", "wandb", "-o", "out"], folder, env, timeout=60)
        assert first.code == 0 and (folder / "out" / "offline_uncategorized_runs.parquet").is_file(), (
            first.stderr
        )
        change(folder)
        second = run(EXPORT, ["--offline", "wandb", "-o", "out"], folder, env, timeout=60)
        second.extra["aggregate"] = run(AGGREGATE, ["out", "-o", "all.parquet"], folder, env, timeout=60)
        return second

    return scenario


def aggregated_ids(outcome: Outcome) -> pl.Series:
    aggregate = outcome.extra["aggregate"]
    assert aggregate.code == 0, aggregate.stderr
    assert "superseded" in aggregate.stderr, aggregate.stderr  # the stale files are named
    return pl.read_parquet(outcome.folder / "all.parquet")["id"]


def superseded_and_read_once(outcome: Outcome) -> None:
    """The run now under its project: the stale copy is skipped, one row per run."""
    stale = metadata_files(outcome)["offline_uncategorized_metadata.json"]
    assert stale["superseded"]["runs_only_here"] == [], stale
    assert sample_metadata(outcome)["runs_exported"] == GOOD + 1
    ids = aggregated_ids(outcome)
    assert ids.len() == ids.n_unique() == GOOD + 1


def superseded_but_still_read(outcome: Outcome) -> None:
    """The run gone from the logs: the stale files are its only copy, marked but still read."""
    stale = metadata_files(outcome)["offline_uncategorized_metadata.json"]
    odd_id = ODD_LOG.removeprefix("run-").removesuffix(".wandb")
    assert stale["superseded"]["runs_only_here"] == [odd_id], stale
    ids = aggregated_ids(outcome)
    assert ids.len() == ids.n_unique() == GOOD + 1 and odd_id in ids.to_list()


# ------------------------------------------------------------------ one run id in two projects


def same_id_logs(folder: Path) -> None:
    shutil.copytree(made("same-id", SAME_ID_LOGS) / "wandb", folder / "wandb")


def topk_offline(*argv: str) -> Callable[[Path], Outcome]:
    return script_run(WANDB_TOPK, ("--offline", "wandb", "--metric", "loss", "--json", *argv), same_id_logs,
                      timeout=60)  # fmt: skip


def first_project_only(outcome: Outcome) -> None:
    rows = json.loads(outcome.stdout)
    assert sorted(row["run_id"] for row in rows) == ["other001", "sameid01"], rows
    assert {row["metrics"]["loss"] for row in rows} == {0.5, 0.3}, rows  # not the second project's 0.1


def both_projects_exported(outcome: Outcome) -> None:
    files = metadata_files(outcome)
    assert sorted(files) == ["team_first_metadata.json", "team_second_metadata.json"], list(files)
    first = pl.read_parquet(outcome.folder / "out" / "team_first_runs.parquet")
    second = pl.read_parquet(outcome.folder / "out" / "team_second_runs.parquet")
    assert sorted(first["id"]) == ["other001", "sameid01"] and second["id"].to_list() == ["sameid01"]


def named_in_last_line(*parts: str) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        last = last_error_line(outcome)
        assert all(part in last for part in parts), last

    return check


CASES: list[Case] = [
    # (h) unreadable entries: named, counted in runs_reported and failed_runs, exit 1 (root as a user: limit)
    Case("h-wandb-run-folder-mode-000", "h", offline_export(wandb_folder(chmod_none()), limit="read-only"), 1,
         "runs missing", check=counted_as_failed("offline-run-20260101_000000-odd", GOOD + 1, GOOD)),
    Case("h-wandb-log-mode-000", "h", offline_export(wandb_folder(chmod_none(ODD_LOG)),
         limit="read-only"), 1, "runs missing", check=counted_as_failed(ODD_LOG, GOOD + 1, GOOD)),
    Case("h-wandb-folder-mode-000", "h", offline_export(wandb_folder_unreadable, limit="read-only"), 1,
         "cannot read (Permission denied)", check=named_in_last_line("wandb")),
    Case("h-wandb-log-vanished-before-read", "h",
         offline_export(wandb_folder(dangling)), 1,
         "runs missing", check=counted_as_failed(ODD_LOG, GOOD + 1, GOOD)),
    Case("h-neptune-offline-run-folder-mode-000", "h", neptune_export(neptune_folder(chmod_none()),
         limit="read-only"), 1, "runs missing", check=neptune_counted_as_failed),
    Case("h-neptune-offline-log-mode-000", "h", neptune_export(neptune_folder(chmod_none("data-1.log")),
         limit="read-only"), 1, "runs missing", check=neptune_counted_as_failed),
    Case("h-aggregate-subfolder-mode-000", "h", reader(AGGREGATE, ("export", "-o", "u.parquet"),
         subfolder_unreadable), 1, "cannot read", check=named_in_last_line("export/older")),
    Case("h-analyze-runs-file-mode-000", "h", reader(ANALYZE, ("export",), runs_file_unreadable), 1,
         "cannot read", check=named_in_last_line(f"{SAMPLE_PROJECT}_runs.parquet")),
    Case("h-topk-export-runs-file-mode-000", "h", reader(WANDB_TOPK, ("--export", "export", "--metric",
         "train/loss"), runs_file_unreadable), 1, "cannot read",
         check=named_in_last_line(f"{SAMPLE_PROJECT}_runs.parquet")),
    Case("h-topk-offline-run-folder-mode-000", "h", script_run(WANDB_TOPK, ("--offline", "wandb", "--metric",
         "train/loss"), wandb_folder(chmod_none()), timeout=60, limit="read-only"), 1,
         "would be missing from the answer", check=named_in_last_line("offline-run-20260101_000000-odd")),
    Case("h-neptune-topk-offline-run-folder-mode-000", "h", script_run(NEPTUNE_TOPK, (".neptune", "--metric",
         "train/loss"), neptune_folder(chmod_none()), timeout=60, limit="read-only"), 1,
         "would be missing from the answer", check=second_run_named),
    # (q) runs still being written: named, counted as in progress, nothing written for them, exit 0
    Case("q-wandb-log-holds-only-its-header", "q", offline_export(wandb_folder(header_only)), 0,
         "in progress: exported once its log holds the run", check=in_progress_left_out),
    Case("q-wandb-run-record-being-written", "q", offline_export(wandb_folder(cut_in_run_record)), 0,
         "in progress: exported once its log holds the run", check=in_progress_left_out),
    Case("q-wandb-stale-project-superseded", "q", stale_then(restore_odd_log), 0, "marked superseded",
         check=superseded_and_read_once),
    Case("q-wandb-vanished-project-kept-readable", "q", stale_then(remove_odd_run), 0, "marked superseded",
         check=superseded_but_still_read),
    Case("q-neptune-run-folder-without-log", "q", neptune_export(neptune_folder(starting_run)), 0,
         "in progress", check=neptune_in_progress),
    Case("q-neptune-last-line-being-written", "q", neptune_export(neptune_folder(last_line_being_written)), 0,
         check=nothing_skipped),
    # (r) one run id in two projects of offline logs: never one run
    Case("r-offline-topk-same-id-two-projects", "r", topk_offline(), 2, "is in two projects",
         check=named_in_last_line("sameid01", "team/first", "team/second", "--project")),
    Case("r-offline-topk-same-id-one-project", "r", topk_offline("team/first"), 0, check=first_project_only),
    Case("r-offline-export-same-id-two-projects", "r", offline_export(same_id_logs), 0,
         check=both_projects_exported),
]  # fmt: skip
