"""The one export pipeline: any source's runs into per-project files in a folder.

It takes the folder's lock, names each project's files so that no two projects share them, plans
incremental updates, hands the source an ExportRequest (shared.table.source), counts what arrives against
what the source reported, writes every file atomically (shared.export.project) and merges an update into
the files an earlier export left. One project's failure is named and the others go on; bad input stops all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from shared.base.errors import BadInput, describe, is_bug
from shared.base.events import Events
from shared.base.limits import read_text_file
from shared.base.storage import prepare_output_folder, write_json
from shared.export.incremental import (
    ProjectUpdate,
    intact_result,
    plan_line,
    plan_update,
    save_state,
    stored_result,
)
from shared.export.kept_files import FILES_FOLDER, FileStore
from shared.export.lock import FolderLock
from shared.export.project import ProjectExport, ProjectResult, export_files, tracker_of
from shared.table.exports import export_stem
from shared.table.run_files import files_frame
from shared.table.schema import FILES, RunRecord
from shared.table.source import (
    ExportRequest,
    ExportSource,
    HistoryChunk,
    ProjectKey,
    ProjectPlan,
    Reported,
    RunFailed,
    RunFiles,
    StreamChunk,
    Unreadable,
)


@dataclass(frozen=True)
class ExportOptions:
    """What every project of an export is asked for, and where its files go."""

    folder: Path
    include_history: bool = False
    history_keys: tuple[str, ...] | None = None  # only these history keys (None: every one)
    since: datetime | None = None  # only runs created since
    since_text: str | None = None  # --since as given: an update keeps the first export's boundary of `7d`
    incremental: bool = False  # fetch only what changed since the files were made, and merge
    streams: frozenset[str] = frozenset()  # the optional tidy streams asked for (schema.OPTIONAL_STREAMS)
    include_files: str | None = None  # --include-files: the run files this glob matches are kept
    file_workers: int = 8  # run files fetched at once
    # Added to every project's metadata (versions, paths).
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def history_key_list(self) -> list[str] | None:
        """The history keys as the state and the metadata record them."""
        return list(self.history_keys) if self.history_keys else None

    def state_options(self) -> dict[str, Any]:
        """The options an update must share with the export that made the files."""
        options = {
            "include_history": self.include_history,
            "history_keys": self.history_key_list,
            "since": self.since_text,
        }
        options |= {"streams": sorted(self.streams)} if self.streams else {}
        return options | ({"include_files": self.include_files} if self.include_files else {})


@dataclass(frozen=True)
class ExportTarget:
    """A source to export, and the project its runs belong to (None: the source names its projects as it
    reads them, as offline W&B logs do)."""

    source: ExportSource
    project: ProjectKey | None = None

    @property
    def name(self) -> str:
        return "/".join(self.project) if self.project else self.source.detail


@dataclass
class ExportOutcome:
    """What an export wrote, and what it could not: projects not exported and files not read, each named."""

    results: list[ProjectResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def export_runs(
    targets: Sequence[ExportTarget], options: ExportOptions, events: Events | None = None
) -> ExportOutcome:
    """Export every target into `options.folder` (see the module's docstring); each source is closed when
    its projects are done. A killed export run again within 12 hours skips the projects it completed."""
    events = events or Events()
    outcome = ExportOutcome()
    prepare_output_folder(options.folder)
    with FolderLock(options.folder, events) as lock:
        known = [target.project for target in targets if target.project]
        for target in targets:  # every project's final paths are checked before any file is touched
            if target.project:
                export_files(options.folder, *target.project, tracker_of(target.source.detail))
        done = lock.resume(_task(targets, options)) if known else []
        for target in targets:
            try:
                if target.name in done and target.project and (stored := _resumed(target, options, events)):
                    outcome.results.append(stored)
                    continue
                _export_target(target, options, events, lock, outcome)
            except BadInput:  # a rejected key or an unknown project: bad input for every project
                raise
            except Exception as error:  # one project's failure must not stop the others; it is named
                if is_bug(error) or target.project is None:  # a source of several projects fails as one
                    raise
                events.error(f"{target.name} not exported: {describe(error)}")
                outcome.failures.append(target.name)
            finally:
                target.source.close()
    return outcome


def _task(targets: Sequence[ExportTarget], options: ExportOptions) -> dict[str, Any]:
    """What an interrupted export was doing: a rerun of the same task resumes it."""
    return {
        "projects": [target.name for target in targets],
        "sources": sorted({target.source.detail for target in targets}),
        "since": options.since_text,
        "incremental": options.incremental,
        "history": options.include_history,
        "history_keys": options.history_key_list,
        "streams": sorted(options.streams),
        "include_files": options.include_files,
    }


def _resumed(target: ExportTarget, options: ExportOptions, events: Events) -> ProjectResult | None:
    """The files an interrupted export completed for this project, if they are all still there."""
    assert target.project is not None
    stored = intact_result(export_files(options.folder, *target.project, tracker_of(target.source.detail)))
    if stored is None:
        events.note(f"{target.name}: the files its resumed export completed are gone; exporting it again")
    return stored


class _Project:
    """One project of a running export: its plan, its files being collected, what the source reported."""

    def __init__(
        self, key: ProjectKey, source: ExportSource, options: ExportOptions, events: Events, started: datetime
    ) -> None:
        self.key, self.name, self.options, self.events, self.started = (
            key,
            "/".join(key),
            options,
            events,
            started,
        )
        self.update: ProjectUpdate | None = None
        tracker = tracker_of(source.detail)
        if options.incremental:
            self.update, reason = plan_update(options.folder, *key, tracker, options.state_options(), events)
            events.note(plan_line(*key, self.update, reason))
        self.since = options.since
        if self.update is not None and self.update.state.since is not None:
            self.since = datetime.fromisoformat(self.update.state.since)  # the first export's boundary holds
        self.plan = ProjectPlan(self.since, self.update.changes if self.update else None)
        filters = {"since": self.since and self.since.isoformat(), "history_keys": options.history_key_list}
        metadata = {**options.metadata, "source_detail": source.detail, "filters": filters}
        self.export = ProjectExport(
            options.folder,
            *key,
            include_history=options.include_history,
            metadata=metadata,
            tracker=tracker,
            events=events,
            streams=options.streams,
        )
        self.reported: int | None = None  # the source's own count
        self.unreadable: dict[str, str] = {}  # entries of the source it could not read: each a run lost
        self.skipped_by_run: dict[str, int] = {}
        self.finished = False
        self.store: FileStore | None = None
        if options.include_files:
            root = options.folder / FILES_FOLDER / export_stem(self.export.files.runs)
            self.store = FileStore(root, options.include_files, options.file_workers)

    def add_files(self, item: RunFiles) -> None:
        self.export.add_stream(FILES.name, files_frame(item.run_id, item.files))
        if self.store is not None:
            self.store.keep(item.run_id, item.files)

    def keep_files(self) -> None:
        """Wait for the files --include-files keeps; each one not kept is named, and the export is incomplete."""
        if self.store is None:
            return
        kept = self.store.finish()
        self.export.metadata["include_files"] = {"glob": self.options.include_files, **kept.summary()}
        for run_id, reasons in kept.failed.items():
            self.export.failed_files[run_id] = reasons
            for reason in reasons:
                self.events.warn(f"{self.name}: run {run_id}: file {reason}: not kept")
        if kept.already_there:
            self.events.note(
                f"{self.name}: {kept.already_there} of {kept.matched} matching file(s) already in"
                f" {self.store.root} with the listed size and md5: not fetched again"
            )

    def add_history(self, chunk: HistoryChunk) -> None:
        self.export.add_history(chunk.rows, sum(chunk.skipped.values()))
        for run_id, count in chunk.skipped.items():  # a run's history may come in several chunks
            self.skipped_by_run[run_id] = self.skipped_by_run.get(run_id, 0) + count

    def finish(self, source: ExportSource) -> ProjectResult:
        """Write the files (merged with the stored ones for an update), or leave them as they are when
        nothing changed; save the state an update reads."""
        export, update = self.export, self.update
        self.keep_files()
        export.metadata |= source.export_metadata(*self.key)
        export.runs_reported = self.reported
        if self.unreadable:  # reported by no count of the source's: each held a run at least
            export.runs_reported = (self.reported or 0) + len(self.unreadable)
            export.failed_runs |= self.unreadable
        if update is not None and not export.records and not export.failed_runs:
            self.events.note(f"{self.name}: no run changed; files left as they are")
            export.abort()
            result = stored_result(export.files)
            if result.runs < (export.runs_reported or 0):
                result.shortfall = (
                    f"{self.name}: {export.runs_reported - result.runs} of {export.runs_reported} runs"
                    " missing (the source counts more runs than it lists)"
                )
        else:
            if update is not None:
                self.events.note(
                    f"{self.name}: {len(export.records)} new or changed run(s) merged into the files"
                )
                update.merge_into(export)
            result = export.finish()
        self.finished = True
        if self.options.incremental or source.updatable:
            options = self.options.state_options()
            save_state(export, options, self.since, self.started, self.skipped_by_run, update)
        return result


def _export_target(
    target: ExportTarget, options: ExportOptions, events: Events, lock: FolderLock, outcome: ExportOutcome
) -> None:
    """Stream one source's items into its projects' files; each project's result lands in `outcome`."""
    started = datetime.now(UTC)
    projects: dict[ProjectKey, _Project] = {}

    def project(entity: str, name: str) -> _Project:
        if (entity, name) not in projects:
            projects[entity, name] = _Project((entity, name), target.source, options, events, started)
        return projects[entity, name]

    if target.project:
        project(*target.project)  # planned before the source is asked
    unreadable: list[Unreadable] = []
    keys = frozenset(options.history_keys) if options.history_keys else None
    reads = getattr(target.source, "streams", frozenset())  # the tidy streams it reads, and "files"
    # A stream asked for that the source does not read yet (history_other: its values count as skipped).
    if unread := sorted(options.streams - reads):
        events.warn(
            f"{target.name}: {target.source.detail} does not read {', '.join(unread)} yet: that file stays empty"
        )
    request = ExportRequest(
        options.include_history,
        keys,
        plan=lambda entity, name: project(entity, name).plan,
        streams=options.streams,
        include_files=options.include_files,
    )
    if options.include_files and "files" not in reads:
        events.warn(f"{target.name}: {target.source.detail} does not list run files: none are kept")
    try:
        for item in target.source.export_items(request):
            if isinstance(item, RunRecord):
                project(item.entity, item.project).export.add_run(item)
            elif isinstance(item, HistoryChunk):
                owner = item.project or target.project
                assert owner is not None, "a source of several projects names each chunk's project"
                project(*owner).add_history(item)
            elif isinstance(item, StreamChunk):
                owner = item.project or target.project
                assert owner is not None, "a source of several projects names each chunk's project"
                project(*owner).export.add_stream(item.stream, item.rows)
            elif isinstance(item, RunFiles):
                project(*item.project).add_files(item)
            elif isinstance(item, RunFailed):
                project(*item.project).export.fail_run(item.run_id, item.reason, item.part)
            elif isinstance(item, Reported):
                project(*item.project).reported = item.count
            elif isinstance(item, Unreadable):
                events.warn(item.message)
                outcome.failures.append(item.message)
                unreadable.append(item)
        _count_unreadable(unreadable, projects, project)
        for key in sorted(projects):
            result = projects[key].finish(target.source)
            outcome.results.append(result)
            if not result.shortfall:  # else a rerun exports it again: runs are missing
                lock.completed(projects[key].name)
        if target.project is None and not unreadable and options.since is None:  # it saw all its runs
            exported = {record.id for each in projects.values() for record in each.export.records}
            _supersede_vanished(options.folder, target.source, set(projects), exported, events)
    except BaseException:
        for unfinished in projects.values():
            if not unfinished.finished:
                unfinished.export.abort()
                if unfinished.store is not None:
                    unfinished.store.abort()
        raise


def _count_unreadable(
    unreadable: Sequence[Unreadable],
    projects: Mapping[ProjectKey, _Project],
    project: Callable[[str, str], _Project],
) -> None:
    """Each entry the source could not read counts as a run reported and failed: in its project when the
    source knows it, else in every project of the source (which one it held is not known)."""
    for item in unreadable:
        entry = item.entry or item.message
        if item.project is not None:
            project(*item.project).unreadable[entry] = item.message
            continue
        for owner in list(projects.values()):
            owner.unreadable[entry] = (
                f"{item.message}; whose run it held is not known: each project counts it"
            )


def _supersede_vanished(
    folder: Path, source: ExportSource, produced: set[ProjectKey], exported: set[str], events: Events
) -> None:
    """Mark the files an earlier export of the same offline logs wrote for a project this complete export
    no longer produces (its runs were in progress then and belong to another project now, or are gone
    from the logs): their metadata gets `superseded`, so neither a user nor a reader takes them for
    current. Readers of the folder skip them when each of their runs is in this export (`runs_only_here`
    empty), and read them with a warning otherwise. Nothing is deleted."""
    paths = source.export_metadata("", "").get("offline_paths")
    if not paths:
        return
    for metadata_file in sorted(folder.glob("*_metadata.json")):
        try:
            recorded = json.loads(read_text_file(metadata_file, "export metadata"))
            key = (recorded["entity"], recorded["project"])
        except (OSError, ValueError, KeyError, TypeError, BadInput):
            continue  # not an export's metadata as this one writes it: not ours to judge
        if (
            key in produced
            or "superseded" in recorded
            or recorded.get("source_detail") != source.detail
            or recorded.get("offline_paths") != paths
        ):
            continue
        runs_file = metadata_file.with_name(str((recorded.get("files") or {}).get("runs") or ""))
        try:
            run_ids = pl.read_parquet(runs_file, glob=False, columns=["id"])["id"].to_list()
        except (OSError, pl.exceptions.PolarsError):
            continue  # its runs file is gone or unreadable: no export to mark
        only_here = sorted({str(run_id) for run_id in run_ids} - exported)
        recorded["superseded"] = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "why": "a later export of the same offline logs no longer holds this project",
            "runs_only_here": only_here,  # gone from the logs since: this file is their only copy
        }
        write_json(recorded, metadata_file)
        readers = (
            "readers of the folder skip them"
            if not only_here
            else f"{len(only_here)} of its runs are only there"
        )
        events.warn(
            f"{metadata_file.name}: {'/'.join(key)} is no longer in these offline logs (its runs were in"
            f" progress then, or are gone): its files are marked superseded ({readers})"
        )
