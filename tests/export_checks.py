"""Shared by the cron-grade export tests: a small two-project dataset and comparing export folders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from tests.wandb_standin import StandinDataset, StandinRun, StandinServer, default_dataset

ENTITY = "cron"
VOLATILE_KEYS = ("exported_at", "generation")  # differs between any two exports


def utc_now() -> datetime:
    """Now as the stand-in keeps times: naive UTC, whole seconds."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def cron_dataset(days_ago: float = 3) -> StandinDataset:
    """cron/alpha (12 runs with history, some still running) and cron/beta (5 runs, no history).

    Every run was created and last heard of at least `days_ago` days ago, so an incremental export
    after a change on the server fetches exactly the runs a test changed.
    """
    source = default_dataset(now=utc_now() - timedelta(days=days_ago))
    dataset = StandinDataset(viewer=source.viewer, now=source.now)
    for name, (owner, project) in {
        "alpha": ("alice", "scratch"),
        "beta": ("vision-lab", "segmentation"),
    }.items():
        found = source.project(owner, project)
        assert found is not None
        dataset.add_project(ENTITY, name, found.runs, is_team=True)
    return dataset


def new_run(run_id: str, moment: datetime, steps: int = 6) -> StandinRun:
    """A run created at `moment`, finished, with a little numeric history."""
    start = moment.replace(tzinfo=UTC).timestamp()
    history = [
        {"_step": s, "_timestamp": start + s, "train/loss": 1 / (s + 1), "lr": 0.01} for s in range(steps)
    ]
    return StandinRun(
        id=run_id,
        display_name=f"new-{run_id}",
        created_at=moment,
        heartbeat_at=moment,
        config={"model": {"type": "gcn", "k": 3}, "mixed": f"string-{run_id}", "seed": 99},
        summary={"train/loss": 1 / steps, "status": "ok", "_runtime": float(steps)},
        history=history,
    )


def advance_run(run: StandinRun, moment: datetime, more_steps: int = 5) -> None:
    """A run that went on: more history (none of it live any more), a new summary, finished at `moment`."""
    rows = [dict(row) for row in run.history_table().rows] if run.history is not None else []
    last = rows[-1]["_step"] if rows else -1
    start = moment.replace(tzinfo=UTC).timestamp()
    rows += [
        {"_step": last + i, "_timestamp": start + i, "train/loss": 0.01 * i} for i in range(1, more_steps + 1)
    ]
    run.history, run.history_meta, run.live_from_step = rows, None, None
    run.state, run.heartbeat_at = "finished", moment
    run.summary = {**run.summary, "train/loss": 0.005, "extra/metric": 1.5}
    run.tags = [*run.tags, "resumed"]


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {key: value for key, value in data.items() if key not in VOLATILE_KEYS}


def export_content(folder: Path) -> dict[str, Any]:
    """Every export file in `folder`, comparable: frames in a fixed row order, JSON without export times."""
    content: dict[str, Any] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():  # hidden files (the lock) and folders (a HOME)
            continue
        if path.name.endswith("_runs.parquet"):
            content[path.name] = pl.read_parquet(path).sort("id")
        elif path.name.endswith("_history.parquet"):
            content[path.name] = pl.read_parquet(path).sort("run_id", "step", "key")
        elif path.suffix == ".parquet":  # the other tidy streams (history_other, console, system)
            frame = pl.read_parquet(path)
            content[path.name] = frame.sort(frame.columns)
        elif path.suffix == ".json":
            content[path.name] = _read_json(path)
        else:
            content[path.name] = path.read_bytes()
    return content


def assert_same_export(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        if isinstance(expected, pl.DataFrame):
            assert got[name].schema == expected.schema, name
            assert got[name].equals(expected, null_equal=True), name
        else:
            assert got[name] == expected, name


def assert_files_complete(folder: Path) -> None:
    """Every file at a final path reads whole: parquet footers and row groups, JSON to the end."""
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        if path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))


@contextmanager
def cron_standin(latency_s: float = 0.0) -> Iterator[StandinServer]:
    """A stand-in serving `cron_dataset()`, checked on exit for requests it does not implement."""
    with StandinServer(cron_dataset()) as server:
        server.latency_s = latency_s
        yield server
    server.assert_clean()
