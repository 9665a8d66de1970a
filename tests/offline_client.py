"""The real wandb client set up to write offline runs in an isolated home, for tests that make them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest


@contextmanager
def offline_wandb(patch: pytest.MonkeyPatch, home: Path) -> Iterator[ModuleType]:
    """`wandb`, ready for `wandb.init(mode="offline")`: nothing points it at a server, its home, config and
    cache folders are below `home`, and wandb-core is stopped before and after (it keeps the environment
    it started with)."""
    for variable in ("WANDB_ENTITY", "WANDB_PROJECT", "WANDB_DIR", "WANDB_BASE_URL", "WANDB_API_KEY"):
        patch.delenv(variable, raising=False)
    patch.setenv("WANDB_MODE", "offline")
    patch.setenv("WANDB_SILENT", "true")
    for variable, folder in (
        ("HOME", "home"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
    ):
        (home / folder).mkdir(parents=True, exist_ok=True)
        patch.setenv(variable, str(home / folder))
    import wandb

    wandb.teardown()
    try:
        yield wandb
    finally:
        wandb.teardown()
