"""The hostile sweep's machinery: running a script in a folder of its own, the scenarios' building
blocks and the checks every case gets (tests/test_hostile_sweep.py collects the cases; tests/sweep_*.py
add theirs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from tests.export_checks import (
    ENTITY,
    assert_files_complete,
    cron_dataset,
)
from tests.test_bad_input import CANNOT_LIMIT, LIMITED_EXEC, isolated_env
from tests.wandb_standin import HookResult, RequestInfo, StandinDataset, StandinServer

ROOT = Path(__file__).resolve().parent.parent
W, N = "wandb-tools", "neptune-tools"
EXPORT, LIST = f"{W}/export_runs.py", f"{W}/list_entities.py"
AGGREGATE, ANALYZE, WANDB_TOPK = f"{W}/aggregate_runs.py", f"{W}/analyze_runs.py", f"{W}/query_topk.py"
NEPTUNE_EXPORT = f"{N}/export_runs.py"
KEY = "k3y" + "5ecret" * 6 + "x"  # 40 characters, like a W&B key
BETA = ("-e", ENTITY, "-p", "beta", "-o", "out")  # 5 runs, no history
ALPHA = ("-e", ENTITY, "-p", "alpha", "-o", "out", "--include-history")  # 12 runs with history
FAST = ("--max-retry-time", "3", "--timeout", "5")
SAMPLE_PROJECT = "graph_denoise_team_spectral_denoising"


# ------------------------------------------------------------------ running scripts


@dataclass
class Outcome:
    code: int | None  # None: killed at its timeout
    stdout: str
    stderr: str
    folder: Path
    seconds: float
    server_runs: dict[str, list[str]] | None = None  # project -> the run ids the server lists
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


def start(script: str, argv: list[str], folder: Path, env: dict[str, str], limit: str | None = None):
    if limit:
        command = [sys.executable, "-c", LIMITED_EXEC, limit, str(ROOT / script), *argv]
    else:
        command = [sys.executable, str(ROOT / script), *argv]
    # A session of its own: a hang is killed with everything it started (wandb-core).
    return subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(child: subprocess.Popen, folder: Path, timeout: float, started: float) -> Outcome:
    try:
        stdout, stderr = child.communicate(timeout=timeout)
        code: int | None = child.returncode
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = child.communicate()
        code = None
    return Outcome(code, stdout, stderr, folder, time.monotonic() - started)


def run(
    script: str,
    argv: list[str] | tuple[str, ...],
    folder: Path,
    env: dict[str, str],
    *,
    timeout: float = 90,
    limit: str | None = None,
) -> Outcome:
    started = time.monotonic()
    outcome = finish(start(script, list(argv), folder, env, limit), folder, timeout, started)
    if limit and outcome.code == CANNOT_LIMIT:
        outcome.skipped = f"cannot apply {limit}"
    return outcome


def server_env(folder: Path, server: StandinServer) -> dict[str, str]:
    return isolated_env(folder / "home") | {"WANDB_BASE_URL": server.url, "WANDB_API_KEY": server.api_key}


def listed_runs(dataset: StandinDataset) -> dict[str, list[str]]:
    """Each project's run ids as the server lists them (a run listed twice counts once)."""
    return {
        name: sorted({run.id for run in project.runs if isinstance(run.raw_fields.get("name", run.id), str)})
        for name, project in dataset.entities[ENTITY].projects.items()
    }


Mutate = Callable[[StandinDataset, StandinServer], None]


def api_export(
    argv: tuple[str, ...],
    mutate: Mutate | None = None,
    *,
    timeout: float = 90,
    limit: str | None = None,
    setup: Callable[[Path], None] | None = None,
    script: str = EXPORT,
    env: dict[str, str] | None = None,
) -> Callable[[Path], Outcome]:
    """A scenario: a stand-in serving cron_dataset() changed by `mutate`, one script run against it."""

    def scenario(folder: Path) -> Outcome:
        dataset = cron_dataset()
        with StandinServer(dataset) as server:
            if mutate:
                mutate(dataset, server)
            if setup:
                setup(folder)
            outcome = run(script, argv, folder, server_env(folder, server) | (env or {}), timeout=timeout,
                          limit=limit)  # fmt: skip
        outcome.server_runs = listed_runs(dataset)
        return outcome

    return scenario


def script_run(
    script: str, argv: tuple[str, ...], setup: Callable[[Path], None] | None = None, *, timeout: float = 90,
    limit: str | None = None, env: dict[str, str] | None = None,
) -> Callable[[Path], Outcome]:  # fmt: skip
    """A scenario without a server: `setup` prepares the folder, then one script run."""

    def scenario(folder: Path) -> Outcome:
        if setup:
            setup(folder)
        return run(script, argv, folder, isolated_env(folder / "home") | (env or {}), timeout=timeout,
                   limit=limit)  # fmt: skip

    return scenario


def beta(dataset: StandinDataset):
    found = dataset.project(ENTITY, "beta")
    assert found is not None
    return found


def alpha(dataset: StandinDataset):
    found = dataset.project(ENTITY, "alpha")
    assert found is not None
    return found


def history_run(dataset: StandinDataset):
    """A finished alpha run whose history is all in its exported file."""
    return next(run for run in alpha(dataset).runs if run.history is not None and run.live_from_step is None)


# ------------------------------------------------------------------ checks


def runs_frame(outcome: Outcome, project: str = "beta", out: str = "out") -> pl.DataFrame:
    return pl.read_parquet(outcome.folder / out / f"{ENTITY}_{project}_runs.parquet")


def row_of(outcome: Outcome, run_id: str, project: str = "beta") -> dict[str, Any]:
    frame = runs_frame(outcome, project)
    return frame.filter(pl.col("id") == run_id).row(0, named=True)


def metadata_of(outcome: Outcome, project: str, out: str = "out") -> dict[str, Any]:
    return json.loads((outcome.folder / out / f"{ENTITY}_{project}_metadata.json").read_text())


def check_accounted(outcome: Outcome, out: str = "out") -> None:
    """Every run the server lists is in the files; else exit 1 with the project named as incomplete."""
    if outcome.server_runs is None or not (outcome.folder / out).is_dir():
        return
    for project, ids in outcome.server_runs.items():
        runs_path = outcome.folder / out / f"{ENTITY}_{project}_runs.parquet"
        if not runs_path.is_file() or runs_path.is_symlink():  # a case's fifo or link: not the export's
            continue
        assert_files_complete(outcome.folder / out)
        exported = set(pl.read_parquet(runs_path)["id"].to_list())
        recorded = metadata_of(outcome, project, out)
        assert recorded["runs_exported"] == len(exported)
        missing = set(ids) - exported
        if outcome.code == 0:
            assert not missing, f"{project}: exit 0 with runs missing: {sorted(missing)}"
            assert not recorded["failed_runs"], recorded["failed_runs"]
        elif missing or recorded["failed_runs"]:
            assert outcome.code == 1 and f"{ENTITY}/{project}" in outcome.stderr


def last_error_line(outcome: Outcome) -> str:
    lines = outcome.stderr.strip().splitlines()
    return lines[-1] if lines else ""


# ------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    id: str
    category: str  # a letter: its section in test_hostile_sweep.py or a tests/sweep_*.py module (CATEGORIES)
    scenario: Callable[[Path], Outcome]
    code: int
    message: str = ""  # in stderr; for a failure, in its last line
    check: Callable[[Outcome], None] | None = None
    out: str = "out"  # the output folder, for the temp-file and accounting checks
    marks: tuple[Any, ...] = ()


def copied_export(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """The sample export copied to `export/`, then changed."""

    def setup(folder: Path) -> None:
        source = INPUTS["export"]
        target = folder / "export"
        target.mkdir()
        for path in source.iterdir():
            if not path.name.startswith("."):
                (target / path.name).write_bytes(path.read_bytes())
        change(target)

    return setup


INPUTS: dict[str, Path] = {}


def hold_history_files(
    server: StandinServer, answer: HookResult, release: threading.Event | None = None
) -> threading.Event:
    """Each history file request is answered with `answer` (once `release` is set, if given); the event
    returned is set at the first. A run's wandb-metadata.json, fetched before its history, is not held."""
    requested = threading.Event()

    def hook(request: RequestInfo) -> HookResult | None:
        if request.operation is None and not request.path.endswith("/wandb-metadata.json"):
            requested.set()
            if release is not None:
                release.wait(60)
            return answer
        return None

    server.request_hook = hook
    return requested


def history_requested(requested: threading.Event, child: subprocess.Popen) -> None:
    """Wait until `child` asks for a history file; a child that never does is killed and fails the case."""
    if not requested.wait(60):
        os.killpg(child.pid, signal.SIGKILL)
        raise AssertionError("no history was requested")
