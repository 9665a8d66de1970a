"""W&B export orchestration: cloud projects or offline run files → per-project export files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.base.concurrency import bounded_map, prefetched, stoppable_sleep
from shared.base.errors import ToolFailure, describe
from shared.base.retry import NO_RETRY, Retry
from shared.base.storage import prepare_output_folder
from shared.cli.terminal import ItemProgress, log, warn
from shared.export.incremental import log_plan, plan_update, save_state, stored_result
from shared.export.lock import FolderLock
from shared.export.project import ProjectExport, ProjectResult
from shared.wandb.api import RunPages, count_runs, created_since_filter, run_record
from shared.wandb.history import Downloaded, HistoryFetcher, HistoryLocation


def export_api_project(
    api: Any,
    entity: str,
    project: str,
    folder: Path,
    *,
    since: datetime | None,
    include_history: bool,
    history_keys: list[str] | None,
    workers: int,
    metadata: dict[str, Any],
    timeout_s: float = 60,
    retry: Retry = NO_RETRY,
    incremental: bool = False,
    since_text: str | None = None,
) -> ProjectResult:
    """Export one cloud project; history fetches overlap with paging through the runs.

    With `incremental`, only runs changed since the previous export (and runs the files lack) are fetched
    and merged into its files (see shared/incremental.py). Either way the files are counted against the
    server's run count (`ProjectResult.shortfall`) and the project's export state is saved beside them.
    """
    started_at = datetime.now(UTC)
    stopping = threading.Event()  # set when the export is abandoned: retries in other threads end
    retry = replace(retry, sleep=stoppable_sleep(stopping))
    options = {"include_history": include_history, "history_keys": history_keys, "since": since_text}
    update, reason = plan_update(folder, entity, project, options) if incremental else (None, "")
    if incremental:
        log_plan(entity, project, update, reason)
    if update is not None and update.state.since is not None:
        since = datetime.fromisoformat(update.state.since)  # the boundary of the first export holds
    filters = created_since_filter(since)
    reported = None
    if update is not None:
        reported = count_runs(api, entity, project, filters, retry)  # what the merged files must hold
        filters = update.change_filter(filters, reported)
    metadata = {**metadata, "filters": {**metadata.get("filters", {}), "since": since and since.isoformat()}}
    export = ProjectExport(folder, entity, project, include_history=include_history, metadata=metadata)
    skipped_by_run: dict[str, int] = {}
    runs = RunPages(api, entity, project, filters, retry)
    try:
        with ItemProgress("runs", runs.reported) as progress:

            def records_added() -> Iterator[Any]:
                """Every run is recorded; those whose history is to be fetched are passed on."""
                for paged in runs:
                    record = run_record(paged)
                    if paged.problems:
                        warn(
                            f"{entity}/{project}: run {record.id}: {'; '.join(paged.problems)};"
                            " exported with that raw text in _config_json/_summary_json and no flattened columns"
                        )
                    export.add_run(record)
                    if include_history and (update is None or update.needs_history(record)):
                        yield paged.run
                    else:
                        progress.advance()
                for run_id, why in runs.failed.items():
                    export.fail_run(run_id, why)

            def download(location: HistoryLocation) -> Downloaded:
                """A run's history, downloaded again (after a backoff) while the transfer fails; a run whose
                history cannot be had is named, the others go on."""
                what = f"history of run {location.run.id}"
                try:
                    return retry.call(what, lambda: history.download(location))
                except ToolFailure as error:
                    return Downloaded(
                        location.run.id, [], None, failure=describe(error).removeprefix(f"{what}: ")
                    )

            if include_history:
                with HistoryFetcher(
                    api, entity, project, keys=history_keys, workers=workers, timeout_s=timeout_s, retry=retry
                ) as history:
                    located = prefetched(history.locate(records_added()), depth=4 * workers)
                    downloads = (
                        downloaded for _, downloaded in bounded_map(download, located, workers, stopping)
                    )
                    for batch, frame, skipped in history.tidy_batches(downloads):
                        for failed in (d for d in batch if d.failure):
                            export.fail_run(failed.run_id, f"history: {failed.failure}")
                        export.add_history(frame, sum(skipped.values()))
                        skipped_by_run |= skipped
                        progress.advance(len(batch))
            else:
                for _run in records_added():
                    pass
        export.runs_reported = runs.reported if reported is None else reported
        if update is not None and not export.records and not export.failed_runs:
            log(f"{entity}/{project}: no run changed; files left as they are")
            result = stored_result(export.files)
            if result.runs < export.runs_reported:
                result.shortfall = (
                    f"{entity}/{project}: {export.runs_reported - result.runs} of {export.runs_reported} runs"
                    " missing (the server counts more runs than it lists)"
                )
        else:
            if update is not None:
                log(f"{entity}/{project}: {len(export.records)} new or changed run(s) merged into the files")
                update.merge_into(export)
            result = export.finish()
    except BaseException:
        stopping.set()
        export.abort()
        raise
    save_state(export, options, since, started_at, skipped_by_run, update)
    return result


def export_offline(
    paths: list[Path],
    folder: Path,
    *,
    include_history: bool,
    history_keys: list[str] | None,
    since: datetime | None,
    metadata: dict[str, Any],
) -> tuple[list[ProjectResult], list[str]]:
    """Read offline run logs and write one set of files per entity/project found in them.

    Also returns the logs that could not be read at all (named with the reason): one bad file among
    many must not stop a nightly export, nor vanish silently. When no log can be read, the first
    error is raised.
    """
    from shared.wandb.offline import OfflineLogError, find_run_logs, merged_runs, read_run_log, session_groups

    logs = sorted({log for path in paths for log in find_run_logs(path)})
    prepare_output_folder(folder)
    exports: dict[tuple[str, str], ProjectExport] = {}
    unreadable: list[str] = []
    too_old = 0
    with FolderLock(folder):
        try:
            with ItemProgress("run files", len(logs), verb="read") as progress:
                for group in session_groups(logs):
                    sessions = []
                    for log_path in group:
                        try:
                            sessions.append(
                                read_run_log(
                                    log_path,
                                    include_history=include_history,
                                    history_keys=set(history_keys) if history_keys else None,
                                )
                            )
                        except OfflineLogError as error:
                            if len(logs) == 1:
                                raise
                            warn(str(error))
                            unreadable.append(str(error))
                        finally:
                            progress.advance()
                    for run, run_sessions in merged_runs(sessions):  # a run resumed offline is one run
                        record = run.record
                        if since is not None and record.created_at is not None and record.created_at < since:
                            too_old += 1
                            continue
                        key = (record.entity or "offline", record.project or "uncategorized")
                        if key not in exports:
                            exports[key] = ProjectExport(
                                folder,
                                *key,
                                include_history=include_history,
                                metadata={**metadata, "corrupt_logs": {}},
                            )
                        export = exports[key]
                        export.runs_reported = (export.runs_reported or 0) + 1  # each run found is one run
                        for session in run_sessions:
                            if session.lost_records:
                                warn(
                                    f"{session.path}: skipped {session.lost_records} corrupt or truncated"
                                    f" record(s), {session.lost_bytes} bytes"
                                )
                                export.metadata["corrupt_logs"][str(session.path)] = {
                                    "lost_records": session.lost_records,
                                    "lost_bytes": session.lost_bytes,
                                }
                        export.add_run(record)
                        if include_history:
                            export.add_history(run.history, run.skipped_values)
            if len(unreadable) == len(logs):
                raise OfflineLogError(f"no readable run log among {len(logs)}: {unreadable[0]}")
            if too_old:
                log(f"{too_old} run(s) created before --since ({since:%Y-%m-%d %H:%M} UTC) left out")
            return [exports[key].finish() for key in sorted(exports)], unreadable
        except BaseException:
            for unfinished in exports.values():
                unfinished.abort()
            raise
