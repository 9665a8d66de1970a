"""Shared fixtures: a local W&B backend stand-in and an isolated environment for the real W&B client."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wandb_standin import StandinServer, default_dataset

# Most tests run the scripts as subprocesses, and each of those imports wandb, polars and pyarrow. With
# PYTHONDONTWRITEBYTECODE set (as in some shells and containers) no import is ever cached as bytecode, so
# every subprocess compiled some 1,100 modules from source again: 1.7 s of a 2.7 s export. The tests and
# their subprocesses write bytecode caches (beside the sources, .gitignored), whatever the shell says.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# Variables that would point the client somewhere else or change how it authenticates.
_WANDB_VARIABLES_TO_CLEAR = (
    "WANDB_ENTITY",
    "WANDB_PROJECT",
    "WANDB_ORGANIZATION",
    "WANDB_MODE",
    "WANDB_IDENTITY_TOKEN_FILE",
)


# How long the client's service may take to stop. A test that pointed the client at a closed port leaves
# wandb-core retrying its login request; once (under a loaded full run) its teardown then waited for good.
# The tools bound the same wait themselves (shared.cli.main.EXIT_GRACE_S).
_SERVICE_STOP_S = 30.0


def _stop_wandb_service() -> None:
    """wandb-core is one process per Python process and keeps the environment it started with: stop it,
    killing it if it does not stop in time."""
    import wandb

    def teardown() -> None:
        with contextlib.suppress(SystemExit):  # the client's teardown exits with a killed service's status
            wandb.teardown()

    stopping = threading.Thread(target=teardown, name="wandb-teardown", daemon=True)
    stopping.start()
    stopping.join(_SERVICE_STOP_S)
    if stopping.is_alive():
        for service in _own_wandb_core_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(service, signal.SIGKILL)
        stopping.join(_SERVICE_STOP_S)
        assert not stopping.is_alive(), "the wandb service did not stop, even killed"


def _own_wandb_core_processes() -> list[int]:
    """The wandb-core processes this process started (from /proc: no psutil here)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if fields.get("Name", "").strip() == "wandb-core" and fields.get("PPid", "").strip() == str(
                os.getpid()
            ):
                found.append(int(status.parent.name))
    return found


@pytest.fixture(scope="session")
def wandb_standin() -> Iterator[StandinServer]:
    """The stand-in W&B server on 127.0.0.1 (random port), seeded with `default_dataset()`.

    Shared by the whole session: do not mutate its dataset (start your own `StandinServer` for that).
    At the end it fails if the client sent any operation, route or field the stand-in does not know.
    """
    server = StandinServer(default_dataset()).start()
    try:
        yield server
    finally:
        server.stop()
    server.assert_clean()


@pytest.fixture
def wandb_env(
    wandb_standin: StandinServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[StandinServer]:
    """Point the real client at the stand-in, with a fake key and a throwaway home, config and cache.

    Sets WANDB_BASE_URL, WANDB_API_KEY, HOME, WANDB_DIR, WANDB_CONFIG_DIR, WANDB_CACHE_DIR,
    WANDB_DATA_DIR and WANDB_SILENT=true; removes WANDB_ENTITY, WANDB_PROJECT (and WANDB_ORGANIZATION,
    WANDB_MODE, WANDB_IDENTITY_TOKEN_FILE). The wandb service is stopped before and after the test so
    that the one the test starts sees these variables (wandb-core reads WANDB_CACHE_DIR from its own
    environment). The server's request counters start at zero. Yields the server.
    """
    _stop_wandb_service()
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for variable, folder in (
        ("WANDB_DIR", "wandb"),
        ("WANDB_CONFIG_DIR", "wandb-config"),
        ("WANDB_CACHE_DIR", "wandb-cache"),
        ("WANDB_DATA_DIR", "wandb-data"),
    ):
        (home / folder).mkdir(parents=True)
        monkeypatch.setenv(variable, str(home / folder))
    monkeypatch.setenv("WANDB_BASE_URL", wandb_standin.url)
    monkeypatch.setenv("WANDB_API_KEY", wandb_standin.api_key)
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in _WANDB_VARIABLES_TO_CLEAR:
        monkeypatch.delenv(variable, raising=False)
    wandb_standin.reset_counts()
    yield wandb_standin
    _stop_wandb_service()


# ------------------------------------------------------------------ pytest -n (pytest-xdist)

# Work units that take longest, started first so that no worker is left with one at the end
# (prefixes of `work_unit` names; the rest follow, those with the most tests first, as xdist orders them).
_SLOW_FIRST = (
    "tests/test_hostile_sweep.py::test_hostile_case[b]",
    "tests/test_hostile_sweep.py::test_hostile_case[d]",
    "tests/test_kill.py",
    "tests/test_bad_input.py",
    "tests/test_hostile_sweep.py::test_hostile_case[c]",
    "tests/test_hostile_sweep.py::test_hostile_case[a]",
    "tests/test_hostile_sweep.py",
    "tests/test_bench_smoke_all.py",
    "tests/test_security.py",
    "tests/test_faults.py",
)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadgroup` hands out the work units of tests/batches.py: a batch of a batched test or a
    whole test module, each to one worker, the slowest first.

    (pytest-xdist 3.8's own loadgroup marks tests by rewriting their node ids, which pytest 9.2 no longer
    reads: its groups were silently split, and each worker then ran a whole batch.)
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    from tests.batches import work_unit

    def rank(unit: str) -> int:
        return next((i for i, slow in enumerate(_SLOW_FIRST) if unit.startswith(slow)), len(_SLOW_FIRST))

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

        def _assign_work_unit(self, node) -> None:
            if not getattr(self, "_slowest_first", False):
                ordered = sorted(self.workqueue.items(), key=lambda item: rank(item[0]))  # stable
                self.workqueue.clear()
                self.workqueue.update(ordered)
                self._slowest_first = True
            super()._assign_work_unit(node)

    return WorkUnitScheduling(config, log)
