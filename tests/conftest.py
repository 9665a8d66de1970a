"""Shared fixtures: a local W&B backend stand-in and an isolated environment for the real W&B client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wandb_standin import StandinServer, default_dataset

# Variables that would point the client somewhere else or change how it authenticates.
_WANDB_VARIABLES_TO_CLEAR = (
    "WANDB_ENTITY",
    "WANDB_PROJECT",
    "WANDB_ORGANIZATION",
    "WANDB_MODE",
    "WANDB_IDENTITY_TOKEN_FILE",
)


def _stop_wandb_service() -> None:
    """wandb-core is one process per Python process and keeps the environment it started with."""
    import wandb

    wandb.teardown()


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
