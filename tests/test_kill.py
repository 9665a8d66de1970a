"""Killed exports and logs still being written: nothing half-written at a final path, reruns complete the work."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from shared.wandb.offline import read_run_log
from tests.current_data import load_script
from tests.export_checks import (
    ENTITY,
    assert_files_complete,
    assert_same_export,
    cron_standin,
    export_content,
)
from tests.offline_client import offline_wandb
from tests.wandb_standin import StandinServer

ROOT = Path(__file__).resolve().parent.parent
export_runs = load_script("export_runs")
CRON = ["-e", ENTITY, "-p", "alpha,beta", "--include-history", "--incremental", "--workers", "2"]
KILLS = 20


@pytest.fixture
def wandb_standin() -> Iterator[StandinServer]:
    """Overrides the session server for `wandb_env`: a small dataset, so that many exports stay quick."""
    # Latency spreads the export out, so random kills land while files are written however fast
    # the exporter gets (without it, the window after the first file shrank to a few ms).
    with cron_standin(latency_s=0.02) as server:
        yield server


def start_export(folder: Path) -> subprocess.Popen[bytes]:
    """The cron export as cron runs it: its own process (the environment points it at the stand-in)."""
    argv = [sys.executable, str(ROOT / "wandb-tools/export_runs.py"), *CRON, "-o", str(folder)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def export_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


def wait_for_first_file(folder: Path, child: subprocess.Popen[bytes]) -> float:
    """Seconds until the export writes its first file at a final path (or ends)."""
    started = time.monotonic()
    while not export_files(folder) and child.poll() is None:
        time.sleep(0.005)
    return time.monotonic() - started


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_only_complete_files_and_a_rerun_completes_the_export(
    wandb_env, tmp_path
):
    """Half the kills land anywhere in a run (start-up included), half after its first file is written."""
    reference = tmp_path / "reference"
    assert export_runs.main([*CRON, "-o", str(reference)]) == 0
    want = export_content(reference)

    timing = start_export(tmp_path / "timing")
    started = time.monotonic()
    first_file = wait_for_first_file(tmp_path / "timing", timing)
    assert timing.wait(timeout=300) == 0
    duration = time.monotonic() - started

    moments = random.Random(20261130)
    killed_while_writing = 0
    for attempt in range(KILLS):
        folder = tmp_path / f"killed-{attempt}"
        child = start_export(folder)
        if attempt % 2:
            wait_for_first_file(folder, child)
            time.sleep(moments.uniform(0, duration - first_file))
        else:
            time.sleep(moments.uniform(0, duration))
        killed_while_writing += child.poll() is None and bool(export_files(folder))
        child.kill()
        child.wait()
        if folder.is_dir():
            assert_files_complete(folder)
        assert export_runs.main([*CRON, "-o", str(folder)]) == 0, f"rerun after kill {attempt}"
        assert_same_export(export_content(folder), want)
    assert killed_while_writing >= KILLS // 4, "the kills should land while files are being written"


def test_sigterm_is_one_error_line_and_a_rerun_resumes_after_the_completed_project(
    wandb_env, tmp_path, capsys
):
    """What cron, systemd and `timeout` send: the export stops as after Ctrl-C, and says so (exit 143)."""
    reference = tmp_path / "reference"
    assert export_runs.main([*CRON, "-o", str(reference)]) == 0
    want = export_content(reference)
    capsys.readouterr()
    wandb_env.latency_s = 0.2  # beta takes seconds: the signal lands while it is exported

    folder = tmp_path / "terminated"
    lock = folder / ".export.lock"
    argv = [sys.executable, str(ROOT / "wandb-tools/export_runs.py"), *CRON, "-o", str(folder)]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while child.poll() is None and '"completed": ["' not in (lock.read_text() if lock.is_file() else ""):
        time.sleep(0.005)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        "error: interrupted (SIGTERM)"
    ]
    assert "Traceback" not in stderr
    assert not list(folder.glob(".*.tmp"))
    assert_files_complete(folder)
    assert json.loads(lock.read_text())["completed"] == [f"{ENTITY}/alpha"]

    wandb_env.latency_s = 0.0
    assert export_runs.main([*CRON, "-o", str(folder)]) == 0
    assert "resuming the export" in capsys.readouterr().err
    assert_same_export(export_content(folder), want)


# ---------------------------------------------------------------------------- logs being written


def finished_log(folder: Path) -> Path:
    """The run log under `folder`, once wandb-core has written its exit record (after `finish()` returns)."""
    log = next(folder.glob("wandb/offline-run-*/run-*.wandb"))
    deadline = time.monotonic() + 30
    while read_run_log(log, include_history=False).record.state != "finished":
        assert time.monotonic() < deadline, "wandb-core did not finish the log"
        time.sleep(0.1)
    return log


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated environment for `wandb.init(mode="offline")`; yields the run folder's parent."""
    with offline_wandb(monkeypatch, tmp_path):
        yield tmp_path


def test_a_log_being_written_reads_as_running_up_to_its_last_complete_record(offline_env, tmp_path, capsys):
    import wandb

    run = wandb.init(mode="offline", dir=offline_env, entity="lab", project="live", name="in-progress")
    log = next(offline_env.glob("wandb/offline-run-*/run-*.wandb"))
    seen = []
    try:
        for step in range(2400):
            run.log({"loss": 1 / (step + 1), "step_squared": step * step})
            if step % 600 == 599:
                time.sleep(0.2)  # wandb-core writes the log in 32 KiB blocks, as they fill
                live = read_run_log(log)
                assert live.record.state == "running" and (live.lost_records, live.lost_bytes) == (0, 0)
                seen.append(live.history.height)
        output = tmp_path / "export"
        assert export_runs.main(["--offline", str(log.parent), "-o", str(output)]) == 0
        exported = pl.read_parquet(output / "lab_live_runs.parquet")
        assert exported["state"].to_list() == ["running"]
        assert "corrupt or truncated" not in capsys.readouterr().err
    finally:
        run.finish()
    assert seen == sorted(seen) and seen[0] > 0 and seen[-1] <= 2 * 2400
    final = read_run_log(finished_log(offline_env))
    assert final.history.height == 2 * 2400
    rows = set(final.history.select("step", "key", "value").rows())
    assert set(live.history.select("step", "key", "value").rows()) <= rows


def test_a_log_cut_anywhere_never_fails_and_is_running_while_fresh_crashed_when_old(offline_env, tmp_path):
    import wandb

    run = wandb.init(mode="offline", dir=offline_env, entity="lab", project="cut", name="cut")
    for step in range(1500):
        run.log({"loss": 1 / (step + 1)})
    run.finish()
    log = finished_log(offline_env)
    complete = read_run_log(log)
    rows = set(complete.history.select("step", "key", "value").rows())
    data = log.read_bytes()
    cuts = random.Random(7)
    later = datetime.now(UTC) + timedelta(hours=1)
    for index in range(30):
        cut = tmp_path / f"cut-{index}" / log.name
        cut.parent.mkdir()
        cut.write_bytes(data[: cuts.randrange(7, len(data))])
        fresh, old = read_run_log(cut), read_run_log(cut, now=later)
        assert set(fresh.history.select("step", "key", "value").rows()) <= rows
        if old.record.state == "finished":  # cut after the exit record: nothing of the run is missing
            assert fresh.record.state == "finished"
            continue
        assert (fresh.record.state, old.record.state) == ("running", "crashed")
        assert (fresh.lost_records, fresh.lost_bytes) == (0, 0), "a growing tail is no loss"
        assert old.lost_records <= 1, "a job killed mid-record loses that record only"
