"""--incremental (cron mode), the folder lock and resuming: export_runs.py against a private stand-in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from shared.base.errors import FolderLocked
from shared.cli.main import run_main
from shared.export.lock import LOCK_NAME
from tests.current_data import load_script
from tests.export_checks import (
    ENTITY,
    advance_run,
    assert_same_export,
    cron_standin,
    export_content,
    new_run,
    utc_now,
)
from tests.wandb_standin import HookResult, RequestInfo, StandinServer

ROOT = Path(__file__).resolve().parent.parent
export_runs = load_script("export_runs")
ALPHA = ["-e", ENTITY, "-p", "alpha", "--include-history"]


@pytest.fixture
def wandb_standin() -> Iterator[StandinServer]:
    """Overrides the session server for `wandb_env`: these tests change the server's runs."""
    with cron_standin() as server:
        yield server


def export(folder: Path, *argv: str) -> int:
    return export_runs.main([*argv, "-o", str(folder)])


def test_incremental_export_equals_a_full_export_after_runs_are_added_and_updated(
    wandb_env, tmp_path, capsys
):
    incremental, full = tmp_path / "incremental", tmp_path / "full"
    assert export(incremental, *ALPHA, "--incremental") == 0
    assert "full export (no previous export state)" in capsys.readouterr().err
    before = pl.read_parquet(incremental / "cron_alpha_runs.parquet")

    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    now = utc_now()
    changed = alpha.runs[:2]
    for run in changed:
        advance_run(run, now)
    added = [new_run("fresh001", now), new_run("fresh002", now + timedelta(seconds=1))]
    alpha.runs.extend(added)
    wandb_env.clear_cache()
    wandb_env.reset_counts()

    assert export(incremental, *ALPHA, "--incremental") == 0
    err = capsys.readouterr().err
    assert "4 new or changed run(s) merged into the files" in err
    fetched = changed + added
    assert wandb_env.requests["GET /files"] == sum(wandb_env.parquet_file_count(r) for r in fetched)
    updated = pl.read_parquet(incremental / "cron_alpha_runs.parquet")
    assert updated.height == before.height + 2
    untouched = sorted({r.id for r in alpha.runs} - {r.id for r in fetched})
    assert (
        updated.filter(pl.col("id").is_in(untouched))
        .sort("id")
        .select(before.columns)
        .equals(before.filter(pl.col("id").is_in(untouched)).sort("id"), null_equal=True)
    )
    assert set(updated.filter(pl.col("id").is_in([r.id for r in changed]))["state"]) == {"finished"}
    assert "metric_extra_metric" in updated.columns  # a key only the changed runs have
    assert updated.schema["config_mixed"] == pl.String

    assert export(full, *ALPHA) == 0
    assert_same_export(export_content(incremental), export_content(full))


def test_no_change_leaves_the_files_alone_and_moves_the_state_on(wandb_env, tmp_path, capsys):
    assert export(tmp_path, *ALPHA, "--incremental") == 0
    runs_file = tmp_path / "cron_alpha_runs.parquet"
    stamp = runs_file.stat().st_mtime_ns
    state = json.loads((tmp_path / "cron_alpha_state.json").read_text())
    wandb_env.reset_counts()
    capsys.readouterr()

    assert export(tmp_path, *ALPHA, "--incremental", "--json") == 0
    captured = capsys.readouterr()
    assert "cron/alpha: no run changed; files left as they are" in captured.err
    assert json.loads(captured.out)["exported"][0]["runs"] == 12
    assert runs_file.stat().st_mtime_ns == stamp
    # One request counts the project's runs, one those the files lack (by id), one asks for the changed.
    assert wandb_env.requests["Runs"] == 3 and wandb_env.requests["GET /files"] == 0
    later = json.loads((tmp_path / "cron_alpha_state.json").read_text())
    assert later["runs"] == state["runs"] and later["exported_at"] > state["exported_at"]


def test_changed_options_or_missing_files_mean_a_full_export(wandb_env, tmp_path, capsys):
    assert export(tmp_path, *ALPHA, "--incremental") == 0
    assert export(tmp_path, *ALPHA, "--incremental", "--history-keys", "train/loss") == 0
    assert "full export (options changed since the previous export" in capsys.readouterr().err
    assert set(pl.read_parquet(tmp_path / "cron_alpha_history.parquet")["key"]) == {"train/loss"}
    (tmp_path / "cron_alpha_history.parquet").unlink()
    assert export(tmp_path, *ALPHA, "--incremental", "--history-keys", "train/loss") == 0
    assert "files of the previous export are missing: cron_alpha_history.parquet" in capsys.readouterr().err
    (tmp_path / "cron_alpha_runs.parquet").write_bytes(b"PAR1 overwritten by something else")
    assert export(tmp_path, *ALPHA, "--incremental", "--history-keys", "train/loss") == 0
    assert "full export (cron_alpha_runs.parquet is unreadable" in capsys.readouterr().err
    assert pl.read_parquet(tmp_path / "cron_alpha_runs.parquet").height == 12


def test_offline_exports_are_not_incremental(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_runs.main(["--offline", str(tmp_path), "--incremental", "-o", str(tmp_path / "out")])
    assert (
        exit_info.value.code == 2
        and "--incremental updates exports of the W&B API" in capsys.readouterr().err
    )


def test_since_boundary_is_kept_from_the_first_incremental_export(wandb_env, tmp_path):
    runs = wandb_env.dataset.project(ENTITY, "alpha").runs
    cutoff = sorted(r.created_at for r in runs)[6]
    argv = [*ALPHA, "--incremental", "--since", cutoff.isoformat()]
    assert export(tmp_path, *argv) == 0
    first = json.loads((tmp_path / "cron_alpha_state.json").read_text())
    assert first["since"].startswith(cutoff.isoformat())
    assert export(tmp_path, *argv) == 0
    assert pl.read_parquet(tmp_path / "cron_alpha_runs.parquet").height == sum(
        r.created_at >= cutoff for r in runs
    )


# ------------------------------------------------------------------------------------------ lock


def hold_lock(folder: Path) -> subprocess.Popen[str]:
    """Another process holding the folder's lock until it is killed."""
    code = (
        "import sys, time; from pathlib import Path; from shared.export.lock import FolderLock\n"
        "with FolderLock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_export_on_the_same_folder_exits_3_naming_the_holder(wandb_env, tmp_path, capsys):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_main(lambda: export(tmp_path, *ALPHA))
        assert exit_info.value.code == 3
        err = capsys.readouterr().err
        started = json.loads((tmp_path / LOCK_NAME).read_text())["started_at"]
        assert f"is in use by another export (PID {holder.pid} on" in err and f"started {started}" in err
        assert not (tmp_path / "cron_alpha_runs.parquet").exists()
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: its record is left, and taken over with a warning.
    assert export(tmp_path, *ALPHA) == 0
    assert f"taking over the lock of export PID {holder.pid}" in capsys.readouterr().err
    assert not (tmp_path / LOCK_NAME).exists(), "released at the end"


def test_a_lock_file_left_by_a_dead_process_is_taken_over(wandb_env, tmp_path, capsys):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    record = {"pid": pid, "host": "elsewhere", "started_at": "2026-01-02T03:04:05+00:00"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(record))
    (tmp_path / ".cron_alpha_runs.parquet.abcd1234.tmp").write_bytes(b"PAR1 half-written")
    assert export(tmp_path, *ALPHA) == 0
    err = capsys.readouterr().err
    assert f"taking over the lock of export PID {pid} on elsewhere (started 2026-01-02T03:04:05+00:00)" in err
    assert not list(tmp_path.glob(".*.tmp")), "the dead export's temp files are cleared"


def test_locked_error_is_raised_before_anything_is_fetched(wandb_env, tmp_path):
    holder = hold_lock(tmp_path)
    try:
        wandb_env.reset_counts()
        with pytest.raises(FolderLocked):
            export(tmp_path, *ALPHA)
        assert wandb_env.requests["Runs"] == 0
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------------------------------- resume


def test_a_killed_export_resumes_without_fetching_completed_projects_again(wandb_env, tmp_path, capsys):
    """SIGKILL while cron/beta is being fetched (its listing stalls): the rerun skips cron/alpha."""
    listings = []

    def stall_beta(request: RequestInfo) -> HookResult | None:
        """The projects are exported in order: the second listing is cron/beta's."""
        if request.operation == "Runs":
            listings.append(request)
            return HookResult(delay_s=30) if len(listings) > 1 else None
        return None

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(ROOT / "wandb-tools/export_runs.py"), "-e", ENTITY, "-p", "alpha,beta"]
    argv += ["--include-history", "-o", str(tmp_path)]
    wandb_env.request_hook = stall_beta
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "cron_alpha_state.json").exists():
            assert child.poll() is None and time.monotonic() < deadline, "the export ended early"
            time.sleep(0.05)
        time.sleep(0.5)  # now inside cron/beta's stalled listing
    finally:
        child.kill()
        child.wait()
        wandb_env.request_hook = None
    record = json.loads((tmp_path / LOCK_NAME).read_text())
    assert record["completed"] == ["cron/alpha"] and record["pid"] == child.pid
    alpha_files = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("cron_alpha_*")}
    moved = tmp_path.parent / f"{tmp_path.name}-alpha-moved"  # the same export, cron/alpha's files gone
    moved.mkdir()
    for path in tmp_path.iterdir():
        if path.is_file() and not path.name.startswith("cron_alpha_"):
            shutil.copy2(path, moved / path.name)

    wandb_env.reset_counts()
    assert export(tmp_path, "-e", ENTITY, "-p", "alpha,beta", "--include-history", "--json") == 0
    captured = capsys.readouterr()
    assert "1 project(s) it completed are not fetched again (cron/alpha)" in captured.err
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("cron_alpha_*")} == alpha_files
    assert wandb_env.requests["Runs"] == 1, "only cron/beta is listed"
    summary = json.loads(captured.out)
    assert [(p["project"], p["runs"]) for p in summary["exported"]] == [("alpha", 12), ("beta", 5)]

    # The completed project's files were moved away before the rerun: it is exported again.
    assert export(moved, "-e", ENTITY, "-p", "alpha,beta", "--include-history", "--json") == 0
    captured = capsys.readouterr()
    assert "cron/alpha: the files its resumed export completed are gone; exporting it again" in captured.err
    assert [(p["project"], p["runs"]) for p in json.loads(captured.out)["exported"]] == [
        ("alpha", 12),
        ("beta", 5),
    ]
    assert_same_export(export_content(moved), export_content(tmp_path))


@pytest.mark.parametrize("with_runs", [True, False], ids=["from-newest-heartbeat", "no-runs-full"])
def test_an_export_state_from_the_future_is_not_trusted(wandb_env, tmp_path, capsys, with_runs):
    """A state whose export time lies ahead of now (a clock ahead, a copied folder) made every update
    answer "no run changed" while runs changed."""
    beta = ["-e", ENTITY, "-p", "beta", "--incremental"]
    assert export(tmp_path, *beta) == 0
    state_path = tmp_path / "cron_beta_state.json"
    state = json.loads(state_path.read_text())
    state["exported_at"] = (utc_now() + timedelta(days=30)).isoformat() + "+00:00"
    if not with_runs:
        state["runs"] = {}  # no run time to start from: a full export
    state_path.write_text(json.dumps(state))
    changed = wandb_env.dataset.project(ENTITY, "beta").runs[0]
    changed.heartbeat_at, changed.state, changed.tags = utc_now(), "crashed", ["changed"]
    wandb_env.clear_cache()
    capsys.readouterr()
    assert export(tmp_path, *beta) == 0
    err = capsys.readouterr().err
    assert "later than now" in err and "a clock ahead or a copied folder; not trusted" in err
    assert ("fetching the runs changed since" in err) == with_runs
    runs = pl.read_parquet(tmp_path / "cron_beta_runs.parquet")
    assert runs.filter(pl.col("id") == changed.id)["state"].to_list() == ["crashed"]
    assert runs.height == 5
    later = json.loads(state_path.read_text())["exported_at"]
    assert later < (utc_now() + timedelta(minutes=1)).isoformat()  # the next update starts from now


def test_a_since_duration_resolved_on_a_clock_ahead_is_resolved_again(wandb_env, tmp_path, capsys):
    """`--since 30d` resolved at the first export on a host whose clock ran 31 days ahead: a boundary in
    the future left out every run created since."""
    beta = ["-e", ENTITY, "-p", "beta", "--incremental", "--since", "30d"]
    assert export(tmp_path, *beta) == 0
    state_path = tmp_path / "cron_beta_state.json"
    state = json.loads(state_path.read_text())
    ahead = timedelta(days=31)
    state["since"] = (utc_now() - timedelta(days=30) + ahead).isoformat() + "+00:00"
    state["exported_at"] = (utc_now() + ahead).isoformat() + "+00:00"
    state_path.write_text(json.dumps(state))
    wandb_env.dataset.project(ENTITY, "beta").runs.append(new_run("fresh001", utc_now()))
    wandb_env.clear_cache()
    capsys.readouterr()
    assert export(tmp_path, *beta) == 0
    err = capsys.readouterr().err
    assert "the previous export resolved --since 30d to" in err and "resolved again" in err
    assert "fresh001" in pl.read_parquet(tmp_path / "cron_beta_runs.parquet")["id"].to_list()
    since = datetime.fromisoformat(json.loads(state_path.read_text())["since"])
    assert since < datetime.now(UTC) - timedelta(days=29)


def test_a_since_date_the_user_wrote_in_the_future_stays(wandb_env, tmp_path, capsys):
    future = (utc_now() + timedelta(days=3)).date().isoformat()
    beta = ["-e", ENTITY, "-p", "beta", "--incremental", "--since", future]
    for _ in range(2):
        assert export(tmp_path, *beta) == 0
    assert "resolved again" not in capsys.readouterr().err
    assert json.loads((tmp_path / "cron_beta_state.json").read_text())["since"].startswith(future)
