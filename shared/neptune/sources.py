"""Neptune run sources (live server, neptune-exporter archive, .neptune offline folder): telling them apart and opening one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shared.base.errors import EMPTY_PATH, UsageError
from shared.neptune.attributes import normalize_state
from shared.table.source import RunSource
from shared.table.vocabulary import NEPTUNE_STATES as STATES


def parse_state(state: str | None) -> str | None:
    """A user's --state as `active`/`inactive`; anything else is a usage error."""
    if state is None:
        return None
    normalized = normalize_state(state)
    if normalized is None:
        raise UsageError(f"unknown run state {state!r} (Neptune runs are {' or '.join(STATES)})")
    return normalized


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
    from shared.neptune.archive import is_archive
    from shared.neptune.offline import is_offline_folder

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
        from shared.neptune.live import LiveSource

        return LiveSource(project, api_token, workers=workers)
    path = source_path(source)
    if source_kind(path) == "offline":
        from shared.neptune.offline import OfflineSource

        return OfflineSource(path)
    from shared.neptune.archive import ArchiveSource

    return ArchiveSource(path, project, cache=cache)
