"""Neptune run sources (live server, neptune-exporter archive, .neptune offline folder): shared shape and detection."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from shared.cli import EMPTY_PATH, UsageError
from shared.topk_args import NEPTUNE_STATES as STATES

RUNS_SCHEMA = {"run_id": pl.String, "name": pl.String, "state": pl.String}
POINTS_SCHEMA = {"run_id": pl.String, "key": pl.String, "step": pl.Float64, "value": pl.Float64}
STATE_ALIASES = {"active": "active", "running": "active", "inactive": "inactive", "idle": "inactive"}
# Namespaces whose simple attributes form a run's config (the original tool read `config`, `parameters`, `params`).
CONFIG_NAMESPACES = ("parameters/", "config/", "params/", "hparams/", "hyperparameters/")


class RunSource(Protocol):
    """What NeptuneQuery needs from a source; every frame uses plain run ids and attribute paths."""

    def runs(self, *, refresh: bool = False) -> pl.DataFrame:
        """Every run: run_id, name, state (`active`/`inactive`), cached until `refresh`."""
        ...

    def run_ids(self) -> list[str]:
        """Every run id (cheap once points were read: an archive notes them during that pass)."""
        ...

    def points(
        self,
        keys: Sequence[str],
        run_ids: Sequence[str] | None = None,
        *,
        series: bool = True,
        required: Sequence[str] = (),
    ) -> pl.LazyFrame:
        """Numeric points (run_id, key, step, value) of these paths; a single number has step null.

        Without `series` a source may give only each series' last value (the live runs table has it);
        runs lacking one of the `required` paths may be left out (they cannot be ranked anyway).
        """
        ...

    def attributes(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Every simple (non-series) attribute of these runs, by path."""
        ...

    def numeric_keys(self) -> list[str]:
        """Attribute paths that hold numbers in some run (for suggestions when a name is unknown)."""
        ...

    def raw_run(self, run_id: str) -> Any:
        """The closest thing to the run object this source has."""
        ...

    def close(self) -> None:
        """Release whatever the source opened."""
        ...


def normalize_state(value: Any) -> str | None:
    """Neptune's run state in our two words: `Active`/`running` → active, `Inactive`/`idle` → inactive."""
    if value is None:
        return None
    return STATE_ALIASES.get(str(value).strip().lower())


def parse_state(state: str | None) -> str | None:
    """A user's --state as `active`/`inactive`; anything else is a usage error."""
    if state is None:
        return None
    normalized = normalize_state(state)
    if normalized is None:
        raise UsageError(f"unknown run state {state!r} (Neptune runs are {' or '.join(STATES)})")
    return normalized


def config_of(attributes: dict[str, Any]) -> dict[str, Any]:
    """The config part of a run's simple attributes: paths under the CONFIG_NAMESPACES, in path order."""
    return {path: attributes[path] for path in sorted(attributes) if path.startswith(CONFIG_NAMESPACES)}


def check_project_names(projects: Sequence[str]) -> None:
    """A usage error unless every name is workspace/project (archives hold names with spaces, too)."""
    bad = [project for project in projects if project.count("/") != 1 or not all(project.split("/"))]
    if bad:
        raise UsageError(f"a Neptune project is workspace/project, not {', '.join(map(repr, bad))}")


def source_path(source: str | Path) -> Path:
    """The folder a user named; an empty name is a usage error (as a Path it would be the current folder)."""
    if isinstance(source, str) and not source:
        raise UsageError(EMPTY_PATH)
    return Path(source).expanduser()


def source_kind(path: Path) -> str:
    """`archive` or `offline` for a folder we can read; a usage error naming both layouts otherwise."""
    from shared.neptune_archive import is_archive
    from shared.neptune_offline import is_offline_folder

    if not path.exists():
        raise UsageError(f"{path} does not exist")
    if is_archive(path):  # the cheaper test first: an archive folder may hold thousands of files
        return "archive"
    if is_offline_folder(path):
        return "offline"
    raise UsageError(
        f"{path} is neither a neptune-exporter data folder (<data>/<project>/*.parquet) nor a .neptune "
        "folder with offline runs (.neptune/offline/run__*/data-*.log)"
    )


def open_source(
    project: str | None,
    *,
    source: str | Path | None = None,
    api_token: str | None = None,
    workers: int = 8,
    cache: bool = True,
) -> RunSource:
    """The source for a project: the live server when `source` is None, else the folder at `source`.

    `cache`: an archive may keep series summaries in the user's cache folder (see shared.summary_cache).
    """
    if source is None:
        if not project:
            raise UsageError("a Neptune project (workspace/project) or a source folder is needed")
        from shared.neptune_live import LiveSource

        return LiveSource(project, api_token, workers=workers)
    path = source_path(source)
    if source_kind(path) == "offline":
        from shared.neptune_offline import OfflineSource

        return OfflineSource(path)
    from shared.neptune_archive import ArchiveSource

    return ArchiveSource(path, project, cache=cache)
