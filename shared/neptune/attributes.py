"""What Neptune's attributes mean to the run table: run states, the namespaces that hold a run's config."""

from __future__ import annotations

from typing import Any

STATE_ALIASES = {"active": "active", "running": "active", "inactive": "inactive", "idle": "inactive"}
# Written by the client itself: sys/ becomes the core columns; hardware monitoring (paths carry a
# per-process hash, so every run would add its own columns) and source-code records are left out.
BOOKKEEPING = ("sys/", "monitoring/", "source_code/")
# Namespaces whose simple attributes form a run's config (the original tool read `config`, `parameters`, `params`).
CONFIG_NAMESPACES = ("parameters/", "config/", "params/", "hparams/", "hyperparameters/")


def normalize_state(value: Any) -> str | None:
    """Neptune's run state in our two words: `Active`/`running` → active, `Inactive`/`idle` → inactive."""
    if value is None:
        return None
    return STATE_ALIASES.get(str(value).strip().lower())


def config_of(attributes: dict[str, Any]) -> dict[str, Any]:
    """The config part of a run's simple attributes: paths under the CONFIG_NAMESPACES, in path order."""
    return {path: attributes[path] for path in sorted(attributes) if path.startswith(CONFIG_NAMESPACES)}
