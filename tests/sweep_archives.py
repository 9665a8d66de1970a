"""Hostile sweep cases (issue 20). Neptune archives (k), one folder shared by two trackers (j), and
unreadable entries of an archive (h-archive-)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tests.export_checks import ENTITY, cron_dataset
from tests.neptune_fixtures import (
    EXPORTER_SCHEMA,
    PROJECT,
    SPECS,
    exporter_name,
    exporter_rows,
    steps,
    write_archive,
)
from tests.sweep import (
    BETA,
    EXPORT,
    INPUTS,
    NEPTUNE_EXPORT,
    ROOT,
    Case,
    Outcome,
    listed_runs,
    run,
    script_run,
    server_env,
)
from tests.test_bad_input import isolated_env
from tests.wandb_standin import StandinServer

NEPTUNE_TOPK = "neptune-tools/query_topk.py"
ARCHIVE = ("--source", "archive", "-o", "out", "--include-history")
TOPK = ("archive", "--metric", "train/loss", "--format", "json", "--no-cache")
FOLDER = Path("archive") / exporter_name(PROJECT)  # the project folder write_archive makes


def part(folder: Path, run_id: str) -> Path:
    """A run's part file as the current exporter names it."""
    return folder / FOLDER / f"{exporter_name(run_id)}_part_0.parquet"


def stems(folder: Path) -> dict[str, str]:
    """source → file stem of every export in `folder` (one export per source)."""
    found = {}
    for path in sorted(folder.glob("*_metadata.json")):
        source = json.loads(path.read_text())["source"]
        assert source not in found, f"two exports from {source} in {folder}"
        found[source] = path.name.removesuffix("_metadata.json")
    return found


def runs_of(folder: Path, stem: str) -> pl.DataFrame:
    return pl.read_parquet(folder / f"{stem}_runs.parquet")


def metadata(folder: Path, stem: str) -> dict:
    return json.loads((folder / f"{stem}_metadata.json").read_text())


# (k) Neptune archives ----------------------------------------------------------------------------


def older_copy_of_alpha(folder: Path) -> None:
    """The archive plus TEST-1 (alpha) as an older exporter named it, with other values: lr 0.5, a loss
    ending at 0.001 (the best of all, were it read)."""
    write_archive(folder / "archive")
    spec = dataclasses.replace(
        SPECS[0], params={**SPECS[0].params, "lr": 0.5}, series={"train/loss": steps(9.0, 8.0, 0.01, 0.001)}
    )
    table = pa.Table.from_pylist(exporter_rows(PROJECT, "TEST-1", spec), schema=EXPORTER_SCHEMA)
    pq.write_table(table, folder / FOLDER / "TEST-1_part_0.parquet")


def check_one_copy_exported(outcome: Outcome) -> None:
    out = outcome.folder / "out"
    runs = runs_of(out, "team_sae-sweep")
    assert runs.height == 7 and runs["id"].n_unique() == 7
    alpha = runs.filter(pl.col("id") == "TEST-1").row(0, named=True)
    assert (alpha["config_lr"], alpha["metric_train_loss"]) == (0.01, 0.4), alpha
    history = pl.read_parquet(out / "team_sae-sweep_history.parquet")
    loss = history.filter((pl.col("run_id") == "TEST-1") & (pl.col("key") == "train/loss"))
    assert loss["value"].to_list() == [1.0, 0.6, 0.41, 0.4]  # one copy's points, not both at each step
    assert "TEST-1_part_*.parquet" in outcome.stderr  # both copies named


def check_one_copy_ranked(outcome: Outcome) -> None:
    answer = json.loads(outcome.stdout)
    rows = answer["runs"] if isinstance(answer, dict) else answer
    ranked = [(row["run_id"], row["metrics"]["train/loss"]) for row in rows]
    assert ranked[0] == ("TEST-2", 0.1), ranked  # the older copy's 0.001 is not read
    assert ("TEST-1", 0.4) in ranked, ranked


def empty_part_listed_first(folder: Path) -> None:
    """The archive plus parts without rows, until the directory lists one of them first."""
    write_archive(folder / "archive")
    project = folder / FOLDER
    for index in range(200):
        empty = pa.Table.from_pylist([], schema=EXPORTER_SCHEMA)
        pq.write_table(empty, project / f"0empty{index}_part_0.parquet")
        with os.scandir(project) as entries:
            first = next(entry.name for entry in entries if entry.name.endswith(".parquet"))
        if first.startswith("0empty"):
            return
    raise AssertionError("no empty part was listed first")


def check_project_kept(outcome: Outcome) -> None:
    recorded = metadata(outcome.folder / "out", "team_sae-sweep")
    assert (recorded["entity"], recorded["project"], recorded["neptune_project"]) == (
        "team",
        "sae-sweep",
        PROJECT,
    )
    assert recorded["runs_exported"] == 7


def without_float_values(folder: Path) -> None:
    write_archive(folder / "archive")
    path = part(folder, "TEST-2")
    pq.write_table(pq.read_table(path).drop(["float_value"]), path)


def nested_project_folders(folder: Path) -> None:
    """A data folder with one project, and `old/` holding another data folder's project."""
    write_archive(folder / "archive")
    write_archive(folder / "archive" / "old", "team/older", specs=SPECS[:2])


def project_folder_with_sub_folders(folder: Path) -> None:
    """A project folder with `old/` holding another archive's project folder, and `copy/` holding parts."""
    write_archive(folder / "archive")
    write_archive(folder / FOLDER / "old", "team/older", specs=SPECS[:2])
    write_archive(folder / FOLDER / "copy", specs=SPECS[:1])


def check_only_the_top_project(outcome: Outcome) -> None:
    assert sorted(path.name for path in (outcome.folder / "out").glob("*_metadata.json")) == [
        "team_sae-sweep_metadata.json"
    ]


# (j) one folder, two trackers ---------------------------------------------------------------------


def sample_project() -> tuple[str, str]:
    [path] = INPUTS["export"].glob("*_metadata.json")
    recorded = json.loads(path.read_text())
    return recorded["entity"], recorded["project"]


def wandb_offline_export_then_archive(folder: Path) -> None:
    """The sample W&B offline export in out/, and an archive of a Neptune project of the same name."""
    (folder / "out").mkdir()
    for path in INPUTS["export"].iterdir():
        if not path.name.startswith("."):
            (folder / "out" / path.name).write_bytes(path.read_bytes())
    write_archive(folder / "archive", "/".join(sample_project()))


def check_both_kept_beside_the_sample(outcome: Outcome) -> None:
    out = outcome.folder / "out"
    for path in INPUTS["export"].iterdir():
        if not path.name.startswith("."):
            assert (out / path.name).read_bytes() == path.read_bytes(), f"{path.name} changed"
    found = stems(out)
    assert sorted(found) == ["neptune", "wandb-offline"]
    assert runs_of(out, found["neptune"]).height == 7
    assert found["neptune"] != found["wandb-offline"]


def api_then_neptune(folder: Path) -> Outcome:
    """The W&B API export of cron/beta, then a Neptune archive of a project named cron/beta, into out/."""
    with StandinServer(cron_dataset()) as server:
        first = run(EXPORT, BETA, folder, server_env(folder, server))
    assert first.code == 0, first.stderr
    write_archive(folder / "archive", f"{ENTITY}/beta")
    outcome = run(NEPTUNE_EXPORT, ARCHIVE, folder, isolated_env(folder / "home"))
    outcome.extra["first"] = first
    return outcome


def check_api_and_neptune(outcome: Outcome) -> None:
    out = outcome.folder / "out"
    found = stems(out)
    assert sorted(found) == ["neptune", "wandb-api"] and found["wandb-api"] == f"{ENTITY}_beta"
    assert runs_of(out, found["neptune"]).height == 7 and runs_of(out, found["wandb-api"]).height == 5


def neptune_then_api_incremental(folder: Path) -> Outcome:
    """A Neptune archive of cron/beta exported first; then the W&B API export of cron/beta with
    --incremental, twice: the first is a full export into files of its own, the second reads their state."""
    write_archive(folder / "archive", f"{ENTITY}/beta")
    first = run(NEPTUNE_EXPORT, ARCHIVE, folder, isolated_env(folder / "home"))
    assert first.code == 0, first.stderr
    dataset = cron_dataset()
    with StandinServer(dataset) as server:
        full = run(EXPORT, (*BETA, "--incremental"), folder, server_env(folder, server))
        outcome = run(EXPORT, (*BETA, "--incremental"), folder, server_env(folder, server))
    outcome.extra = {"full": full, "server": listed_runs(dataset)["beta"]}
    return outcome


def check_neptune_then_api(outcome: Outcome) -> None:
    full: Outcome = outcome.extra["full"]
    assert full.code == 0 and "cron/beta: full export (no previous export state)" in full.stderr, full.stderr
    out = outcome.folder / "out"
    found = stems(out)
    assert found["neptune"] == f"{ENTITY}_beta" and found["wandb-api"] != found["neptune"]
    assert (out / f"{found['wandb-api']}_state.json").is_file()
    assert not (out / f"{found['neptune']}_state.json").exists()
    assert sorted(runs_of(out, found["wandb-api"])["id"]) == outcome.extra["server"]
    recorded = metadata(out, found["wandb-api"])
    assert recorded["runs_exported"] == recorded["runs_reported"] == 5 and not recorded["failed_runs"]
    assert runs_of(out, found["neptune"]).height == 7


def neptune_into_a_held_folder(folder: Path) -> Outcome:
    """A Neptune export into a folder whose lock another export holds (the exporters' one lock)."""
    write_archive(folder / "archive")
    (folder / "out").mkdir()
    code = (
        "import sys, time; from pathlib import Path; from shared.export.lock import FolderLock\n"
        "with FolderLock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(folder / "out")], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        outcome = run(NEPTUNE_EXPORT, ARCHIVE, folder, isolated_env(folder / "home"))
    finally:
        holder.kill()
        holder.wait()
    outcome.extra["pid"] = holder.pid
    return outcome


def check_nothing_written(outcome: Outcome) -> None:
    assert f"(PID {outcome.extra['pid']} on" in outcome.stderr
    assert not list((outcome.folder / "out").glob("*_metadata.json"))


# (h) unreadable entries of an archive ------------------------------------------------------------


def unreadable_part(folder: Path) -> None:
    write_archive(folder / "archive")
    part(folder, "TEST-2").chmod(0)


def check_unreadable_part_counted(outcome: Outcome) -> None:
    recorded = metadata(outcome.folder / "out", "team_sae-sweep")
    assert (recorded["runs_reported"], recorded["runs_exported"]) == (7, 6), recorded
    assert list(recorded["failed_runs"]) == [str(part(outcome.folder, "TEST-2").relative_to(outcome.folder))]
    assert "TEST-2" not in runs_of(outcome.folder / "out", "team_sae-sweep")["id"].to_list()


def unreadable_project_folder(folder: Path) -> None:
    write_archive(folder / "archive")
    write_archive(folder / "archive", "team/other", specs=SPECS[:2])
    (folder / "archive" / exporter_name("team/other")).chmod(0)


def check_other_project_exported(outcome: Outcome) -> None:
    assert stems(outcome.folder / "out") == {"neptune": "team_sae-sweep"}
    assert runs_of(outcome.folder / "out", "team_sae-sweep").height == 7


def check_nothing_exported(outcome: Outcome) -> None:
    assert not (outcome.folder / "out").exists() or not list((outcome.folder / "out").glob("*_metadata.json"))


def topk(setup: Callable[[Path], None], *, limit: str | None = None) -> Callable[[Path], Outcome]:
    return script_run(NEPTUNE_TOPK, TOPK, setup, limit=limit)


CASES: list[Case] = [
    # (k) an archive re-exported by a newer exporter beside the old files: one copy, every tool the same
    Case("k-same-run-in-two-file-names-export", "k", script_run(NEPTUNE_EXPORT, ARCHIVE, older_copy_of_alpha), 0,
         "run TEST-1 is in two copies", check=check_one_copy_exported),
    Case("k-same-run-in-two-file-names-query", "k", topk(older_copy_of_alpha), 0, "run TEST-1 is in two copies",
         check=check_one_copy_ranked),
    Case("k-empty-part-listed-first", "k", script_run(NEPTUNE_EXPORT, ARCHIVE, empty_part_listed_first), 0,
         check=check_project_kept),
    Case("k-part-without-float-value-export", "k", script_run(NEPTUNE_EXPORT, ARCHIVE, without_float_values), 2,
         "has no float_value column"),
    Case("k-part-without-float-value-query", "k", topk(without_float_values), 2, "has no float_value column"),
    Case("k-project-folders-nested-below", "k", script_run(NEPTUNE_EXPORT, ARCHIVE, nested_project_folders), 0,
         "old hold(s) project folders below it", check=check_only_the_top_project),
    Case("k-project-folder-with-sub-folders", "k",
         script_run(NEPTUNE_EXPORT, ("--source", str(FOLDER), "-o", "out"), project_folder_with_sub_folders), 0,
         "its sub-folders copy, old hold parts or project folders of their own", check=check_only_the_top_project),
    Case("k-data-folder-one-level-down", "k", script_run(NEPTUNE_EXPORT, ("--source", ".", "-o", "out"),
         lambda folder: write_archive(folder / "archive")), 2, "archive hold(s) project folders: name one"),
    # (j) one folder, two trackers: each export keeps its files; the second gets digest-suffixed names
    Case("j-wandb-offline-export-then-neptune", "j",
         script_run(NEPTUNE_EXPORT, ARCHIVE, wandb_offline_export_then_archive), 0, "its files are named",
         check=check_both_kept_beside_the_sample),
    Case("j-wandb-api-then-neptune", "j", api_then_neptune, 0, "its files are named", check=check_api_and_neptune),
    Case("j-neptune-then-wandb-api-incremental", "j", neptune_then_api_incremental, 0, "cron/beta: no run changed",
         check=check_neptune_then_api),
    Case("j-neptune-into-a-folder-held-by-another-export", "j", neptune_into_a_held_folder, 3,
         "is in use by another export", check=check_nothing_written),
    # (h) unreadable entries of an archive (root without CAP_DAC_OVERRIDE: file modes count)
    Case("h-archive-unreadable-part", "h", script_run(NEPTUNE_EXPORT, ARCHIVE, unreadable_part, limit="read-only"),
         1, "team/sae-sweep", check=check_unreadable_part_counted),
    Case("h-archive-unreadable-project-folder", "h",
         script_run(NEPTUNE_EXPORT, ARCHIVE, unreadable_project_folder, limit="read-only"), 1,
         "cannot read archive folder", check=check_other_project_exported),
    Case("h-archive-named-project-in-an-unreadable-folder", "h",
         script_run(NEPTUNE_EXPORT, (*ARCHIVE, "-p", "team/other"), unreadable_project_folder, limit="read-only"), 1,
         "cannot read archive/team_other-f15788783633d3e4: Permission denied", check=check_nothing_exported),
    Case("h-archive-unreadable-part-query", "h", topk(unreadable_part, limit="read-only"), 1,
         "cannot read archive part"),
]  # fmt: skip
