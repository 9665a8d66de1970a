"""Neptune run sources (live server, neptune-exporter archive, .neptune offline folder): telling them apart and opening one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from shared.base.errors import EMPTY_PATH, BadInput
from shared.base.events import Events
from shared.neptune.runs import NeptuneSource
from shared.table.vocabulary import STATE_ALIASES
from shared.table.vocabulary import parse_state as shared_state

if TYPE_CHECKING:
    from shared.neptune.archive import UnreadableFolder


# All that Neptune's runs table tells: the states its two words are aliases of, as it says them.
_NEPTUNE_STATES = {state: alias for alias, state in STATE_ALIASES.items()}


def parse_state(state: str | None) -> str | None:
    """A user's --state (the states both trackers share) as Neptune's runs table says it, `active` or
    `inactive`; another state is a usage error (its runs table does not tell failed runs apart)."""
    if state is None:
        return None
    shared = shared_state(state)
    if shared not in _NEPTUNE_STATES:
        raise BadInput(
            f"--state {state}: a Neptune runs table tells only running (active) from finished (inactive)"
            " runs; an export of it (export_runs.py) also marks the failed ones"
        )
    return _NEPTUNE_STATES[shared]


def check_project_names(projects: Sequence[str]) -> None:
    """A usage error unless every name is workspace/project (archives hold names with spaces, too)."""
    bad = [project for project in projects if project.count("/") != 1 or not all(project.split("/"))]
    if bad:
        raise BadInput(f"a Neptune project is workspace/project, not {', '.join(map(repr, bad))}")


def source_path(source: str | Path) -> Path:
    """The folder a user named; an empty name is a usage error (as a Path it would be the current folder)."""
    if isinstance(source, str) and not source:
        raise BadInput(EMPTY_PATH)
    return Path(source).expanduser()


def source_kind(path: Path) -> str:
    """`archive` or `offline` for a folder we can read; a usage error naming both layouts otherwise."""
    from shared.neptune.archive import is_archive

    if not path.exists():
        raise BadInput(f"{path} does not exist")
    if is_archive(path):  # the cheaper test first: an archive folder may hold thousands of files
        return "archive"
    from shared.neptune.offline import is_offline_folder

    if is_offline_folder(path):
        return "offline"
    from shared.neptune.archive import nested_archives

    below = nested_archives(path)
    hint = f"; {', '.join(map(str, below))} hold(s) project folders: name one as the source" if below else ""
    raise BadInput(
        f"{path} is neither a neptune-exporter data folder (<data>/<project>/*.parquet) nor a .neptune "
        f"folder with offline runs (.neptune/offline/run__*/data-*.log){hint}"
    )


def open_source(
    project: str | None,
    *,
    source: str | Path | None = None,
    api_token: str | None = None,
    workers: int = 8,
    cache: bool = True,
    events: Events | None = None,
) -> NeptuneSource:
    """The source for a project: the live server when `source` is None, else the folder at `source`.

    `cache`: an archive may keep series summaries in the user's cache folder (see shared.table.summary_cache).
    """
    if source is None:
        if not project:
            raise BadInput("a Neptune project (workspace/project) or a source folder is needed")
        from shared.neptune.live import LiveSource

        return LiveSource(project, api_token, workers=workers, events=events)
    path = source_path(source)
    if source_kind(path) == "offline":
        from shared.neptune.offline import OfflineSource

        return OfflineSource(path, events=events)
    from shared.neptune.archive import ArchiveSource, note_other_folders

    note_other_folders(path, events or Events())
    return ArchiveSource(path, project, cache=cache, events=events)


def export_sources(
    projects: Sequence[str],
    source: str | Path | None,
    *,
    api_token: str | None = None,
    workers: int = 8,
    events: Events | None = None,
) -> list[NeptuneSource | UnreadableFolder]:
    """A source per project to export, checked before anything is fetched or written (token, folders,
    project names, every archive part): projects on a server, the named projects of an archive (else
    all of them), or the runs of a .neptune folder filed under one project."""
    check_project_names(projects)
    if source is None:
        if not projects:
            raise BadInput("name a Neptune project (-p workspace/project) or a folder (--source PATH)")
        from shared.neptune.live import LiveSource

        return [LiveSource(project, api_token, workers=workers, events=events) for project in projects]
    path = source_path(source)
    if source_kind(path) == "offline":
        if len(projects) > 1:
            raise BadInput(
                "offline runs go to one project: give at most one -p with --source on a .neptune folder"
            )
        from shared.neptune.offline import OfflineSource

        return [OfflineSource(path, projects[0] if projects else None, events=events)]
    from shared.neptune.archive import (
        ArchiveSource,
        UnreadableFolder,
        note_other_folders,
        project_folders,
        unreadable_folders,
    )

    note_other_folders(path, events or Events())
    folders = [(path, project) for project in projects] or [
        (folder, None) for folder in project_folders(path)
    ]
    found = [
        ArchiveSource(folder, project, cache=False, whole=False, events=events) for folder, project in folders
    ]
    for archive in found:
        archive.check()  # every part, before anything is written
    if projects:  # a named project is found or not; any other folder that cannot be read is named
        return found
    return [*found, *(UnreadableFolder(folder, why) for folder, why in unreadable_folders(path).items())]
