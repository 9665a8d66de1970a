"""W&B run sources: a project through the API and offline run logs, listed once with config and summary."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import polars as pl

from shared.base.concurrency import bounded_map, prefetched, stoppable_sleep
from shared.base.errors import BadInput, Incomplete, describe, is_bug
from shared.base.events import Events, Progress
from shared.base.retry import NO_RETRY, Retry
from shared.base.text import name_list
from shared.table.record_source import ListedRun, RecordSource, points_frame
from shared.table.series import RUN
from shared.table.source import (
    ExportItem,
    ExportRequest,
    HistoryChunk,
    ProjectKey,
    Reported,
    RunFailed,
    RunFiles,
    StreamChunk,
    Unreadable,
)
from shared.table.vocabulary import parse_state as shared_state

OFFLINE_ENTITY, OFFLINE_PROJECT = "offline", "uncategorized"  # a log whose run record was lost names neither
IN_PROGRESS = "in progress: exported once its log holds the run"  # a log with no run record yet
SYSTEM_PART = "system metrics"  # how an export's summary names the system stream of a run it lacks


def parse_state(state: str | None) -> str | None:
    """A user's --state as W&B spells it (the states both trackers share); anything else is a usage error."""
    return None if state is None else shared_state(state)


class ApiSource(RecordSource):
    """One project through `wandb.Api`. A query lists its runs once (config and summary come with each
    page), then reads only the needed history keys of the runs that can rank, `workers` at a time, each
    run's history once. An export pages through the runs it asks for while their history is located in
    batches and downloaded `workers` at a time (shared.wandb.history), and their metadata, console logs
    and events are looked up in batches and fetched as well (shared.wandb.run_contents)."""

    detail = "wandb-api"
    updatable = True  # the server filters changed runs: an incremental export asks for those only
    # The values of its history files that are not numbers, each run's output.log and events stream.
    streams = frozenset({"history_other", "console", "system", "files"})  # and each run's files

    def __init__(
        self,
        project: str,
        api_key: str | None = None,
        *,
        entity: str | None = None,
        api: Any = None,
        server: str | None = None,
        workers: int = 8,
        timeout: float = 60,
        retry: Retry = NO_RETRY,
        events: Events | None = None,
        **options: Any,
    ) -> None:
        """`project` as entity/project (the key's default entity without one), or the bare name of a project
        of `entity` (names may hold `/`); `api` a connected
        wandb.Api (and `server` its URL as it may be shown), else one is made from `api_key` (or the
        usual places) on first use."""
        super().__init__(events=events, **options)
        self.entity, _, self.project = (
            (entity, "", project) if entity is not None else project.rpartition("/")
        )
        self.api_key, self.workers, self.timeout, self.retry = api_key, max(1, workers), timeout, retry
        self._api: Any = api
        self.server = server
        self._series: dict[tuple[str, str], tuple[list[float], list[float]]] = {}

    def _connect(self) -> Any:
        if self._api is None:
            from shared.wandb.api import connect  # imports wandb: only when the API is queried
            from shared.wandb.auth import wandb_credentials

            credentials = wandb_credentials(self.api_key, self.events)
            self._api, self.server = connect(credentials, self.timeout), credentials.server
        return self._api

    def _list(self) -> Iterator[ListedRun]:
        from shared.wandb.api import RunPages, default_entity, run_record
        from shared.wandb.failures import reported, request_failure

        api = self._connect()
        entity = self.entity or default_entity(api)
        path = f"{entity}/{self.project}"
        what = f"cannot list the runs of W&B project {path}"
        try:  # an unknown project or no access: exit 2; a server or network failure: exit 1
            runs = RunPages(api, entity, self.project, {})
        except Exception as error:  # the client raises several types
            raise request_failure(error, what, self.server) from None
        with self.events.progress("runs", runs.reported) as progress:
            for paged in reported(runs, what, self.server):
                progress.advance()
                record = run_record(paged, self.events)
                if paged.problems:
                    self.events.warn(
                        f"run {record.id} of {path}: {'; '.join(paged.problems)}; ranked without them"
                    )
                yield ListedRun(
                    record.id,
                    record.name or record.id,
                    record.state,
                    record.config,
                    record.summary,
                    paged.run,
                )
        for run_id, reason in runs.failed.items():
            self.events.warn(f"run {run_id} of {path} left out: {reason}")

    def export_items(self, request: ExportRequest) -> Iterator[ExportItem]:
        """The runs the request's plan asks for, oldest first, each record as its page arrives; their
        history fetched meanwhile. Every reply is checked (shared.wandb.api.RunPages); a run whose history
        cannot be had is named, the others go on."""
        from shared.wandb.api import (
            RunPages,
            change_filter,
            count_runs,
            created_since_filter,
            default_entity,
            run_record,
            unheld_count,
        )
        from shared.wandb.run_contents import (
            EVENTS_AT_ONCE,
            EVENTS_PER_REQUEST,
            METADATA_FILE,
            URL_BATCH,
            ContentsFetcher,
            console_parts,
        )
        from shared.wandb.run_files import RunFilesLister

        api = self._connect()
        key = (self.entity or default_entity(api), self.project)
        plan = request.plan(*key)
        stopping = threading.Event()  # set when the export is abandoned: retries in other threads end
        retry = replace(self.retry, sleep=stoppable_sleep(stopping))
        created = created_since_filter(plan.since)
        filters, counted = created, None
        if plan.changes is not None:
            counted = count_runs(api, *key, created, retry)  # what the merged files must hold
            unheld = unheld_count(api, *key, created, plan.changes, counted, retry)
            filters = change_filter(created, plan.changes, unheld, self.events)
        runs = RunPages(api, *key, filters, retry)
        files_of = RunFilesLister(
            api,
            *key,
            workers=self.workers,
            timeout_s=self.timeout,
            retry=retry,
            # A multipart console log is read from the listing: its URLs then too.
            with_url=request.include_files is not None or "console" in request.streams,
        )
        asked = [stream for stream in ("console", "system") if stream in request.streams]
        contents = ContentsFetcher(
            api,
            *key,
            console="console" in asked,
            system="system" in asked,
            workers=self.workers,
            timeout_s=self.timeout,
            retry=retry,
        )
        # Records are made where the pages are read (a thread, when history is fetched meanwhile) and
        # handed over here, each before its history and streams.
        made: SimpleQueue[ExportItem | BaseException] = SimpleQueue()
        # A run's console log, and the events of a batch of runs, are fetched beside the listing,
        # `contents.fetches` requests at a time (a log is held whole only while it is fetched and until
        # it is handed over).
        stream_fetches = ThreadPoolExecutor(contents.fetches, thread_name_prefix="run-streams")
        # Events replies are large (text, JSON and rows of 25 runs): two read at once, on their own threads.
        events_fetches = ThreadPoolExecutor(EVENTS_AT_ONCE, thread_name_prefix="run-events")
        fetching = threading.Semaphore(contents.fetches)
        events_due: list[tuple[str, Any]] = []  # runs whose events the next request asks for

        def fetch(job: Callable[[], list[tuple[str, str, Any]]]) -> None:
            try:
                for run_id, stream, rows in job():
                    made.put(
                        RunFailed(
                            key, run_id, f"{stream}: {rows}", SYSTEM_PART if stream == "system" else stream
                        )
                        if isinstance(rows, str)
                        else StreamChunk(stream, rows)
                    )
            except BaseException as error:  # a bug: raised where the items are handed over
                made.put(error)
            finally:
                fetching.release()

        def submit(job: Callable[[], list[tuple[str, str, Any]]], pool: ThreadPoolExecutor) -> None:
            while not fetching.acquire(timeout=0.5):
                if stopping.is_set():  # the export was abandoned: its fetches will not end it
                    raise Incomplete("the export was stopped")
            pool.submit(fetch, job)

        def ask_events() -> None:
            if events_due:
                submit(partial(contents.fetch_events, events_due.copy()), events_fetches)
                events_due.clear()

        def events_of(run_id: str, found: Any) -> None:
            """The run joins the next events request, asked once it holds URL_BATCH runs or
            EVENTS_PER_REQUEST samples."""
            events_due.append((run_id, found))
            samples = sum(f.located.events for _, f in events_due if not isinstance(f.located, str))
            if len(events_due) == URL_BATCH or samples >= EVENTS_PER_REQUEST:
                ask_events()

        def listed(progress: Progress) -> Iterator[Any]:
            """Every run recorded, with its metadata (looked up a batch ahead), its streams fetched; each
            run's paged run when its history is wanted, else None (after its progress)."""
            for paged, found in prefetched(contents.complete(files_of.listed(runs)), depth=2 * URL_BATCH):
                environment = found.metadata
                record = run_record(paged, self.events)
                for name, value in ({} if isinstance(environment, str) else environment).items():
                    if getattr(record, name) is None:  # the Runs reply's commit first
                        setattr(record, name, value)
                if paged.problems:
                    self.events.warn(
                        f"{key[0]}/{key[1]}: run {record.id}: {'; '.join(paged.problems)};"
                        " exported with that raw text in _config_json/_summary_json and no flattened columns"
                    )
                made.put(record)
                if isinstance(environment, str):
                    made.put(RunFailed(key, record.id, f"{METADATA_FILE}: {environment}", "metadata"))
                files = files_of.take(key, record.id)
                if request.wants_files(record):
                    made.put(files)
                if "console" in asked and request.wants_stream("console", record):
                    parts = console_parts(files.files) if isinstance(files, RunFiles) else []
                    submit(partial(contents.fetch_console, record.id, found, parts), stream_fetches)
                if "system" in asked and request.wants_stream("system", record):
                    events_of(record.id, found)
                if request.wants_history(record):
                    yield paged.run
                else:
                    progress.advance()
                    yield None
            ask_events()
            stream_fetches.shutdown(wait=True)
            events_fetches.shutdown(wait=True)
            for run_id, why in runs.failed.items():
                made.put(RunFailed(key, run_id, why))

        def handed_over() -> Iterator[ExportItem]:
            while not made.empty():
                item = made.get()
                if isinstance(item, BaseException):
                    raise item
                yield item

        try:
            with contents, self.events.progress("runs", runs.reported) as progress:
                if request.include_history:
                    wanted_history = (run for run in listed(progress) if run is not None)
                    yield from self._export_history(
                        key, wanted_history, request, handed_over, progress, retry, stopping
                    )
                else:
                    for _ in listed(progress):
                        yield from handed_over()
                yield from handed_over()
        except BaseException:
            stopping.set()
            stream_fetches.shutdown(wait=False, cancel_futures=True)
            events_fetches.shutdown(wait=False, cancel_futures=True)
            raise
        if runs.deleted:
            self.events.note(
                f"{key[0]}/{key[1]}: {len(runs.deleted)} run(s) deleted on the server while the export"
                f" paged, exported as they were read: {name_list(runs.deleted)}"
            )
        if counted is not None and runs.changed:  # runs came or went since the count: count again
            counted = count_runs(api, *key, created, retry)
        yield Reported(key, runs.reported if counted is None else counted)

    def _export_history(
        self,
        key: ProjectKey,
        runs: Iterator[Any],
        request: ExportRequest,
        handed_over: Callable[[], Iterator[ExportItem]],
        progress: Progress,
        retry: Retry,
        stopping: threading.Event,
    ) -> Iterator[ExportItem]:
        from shared.wandb.history import Downloaded, HistoryFetcher, HistoryLocation

        def download(location: HistoryLocation) -> Downloaded:
            """A run's history, downloaded again (after a backoff) while the transfer fails; a run whose
            history cannot be had is named, the others go on."""
            what = f"history of run {location.run.id}"
            try:
                return retry.call(what, lambda: history.download(location))
            except Exception as error:  # the client's own errors too (scan_history of live rows)
                if is_bug(error):
                    raise
                return Downloaded(
                    location.run.id, [], None, failure=describe(error).removeprefix(f"{what}: ")
                )

        with HistoryFetcher(
            self._connect(),
            *key,
            keys=sorted(request.history_keys) if request.history_keys else None,
            workers=self.workers,
            timeout_s=self.timeout,
            retry=retry,
            keep_other=request.include_history,
        ) as history:
            located = prefetched(history.locate(runs), depth=4 * self.workers)
            downloads = (
                downloaded for _, downloaded in bounded_map(download, located, self.workers, stopping)
            )
            for batch, frame, skipped, other in history.tidy_batches(downloads):
                yield from handed_over()
                for failed in (d for d in batch if d.failure):
                    yield RunFailed(key, failed.run_id, f"history: {failed.failure}")
                yield HistoryChunk(frame, skipped)
                if other is not None:
                    yield StreamChunk("history_other", other)
                progress.advance(len(batch))

    def export_metadata(self, entity: str, project: str) -> dict[str, Any]:
        return {"source": "wandb-api", "base_url": self.server}

    def _forget_history(self) -> None:
        self._series.clear()

    def _history(self, pairs: pl.DataFrame, *, needed: bool) -> pl.DataFrame:
        wanted = list(pairs.iter_rows())
        todo = [pair for pair in dict.fromkeys(wanted) if pair not in self._series]
        for pair in todo:
            if getattr(self._listed[pair[0]].raw, "historyLineCount", None) == 0:
                self._series[pair] = ([], [])  # no history at all: no request
        todo = [pair for pair in todo if pair not in self._series]
        if todo:
            runs, keys = list(dict.fromkeys(run for run, _ in todo)), sorted({key for _, key in todo})
            try:
                self._fetch_history(runs, keys)
            except Exception as error:  # network, permissions, server errors
                if is_bug(error):
                    raise
                raise Incomplete(
                    f"could not fetch the history series of {len(runs)} run(s) of {self.entity}/{self.project}"
                    f" ({describe(error)})"
                ) from None
        columns: dict[str, list[Any]] = {RUN: [], "key": [], "step": [], "value": []}
        for run_id, key in wanted:
            steps, values = self._series[run_id, key]
            columns[RUN] += [run_id] * len(values)
            columns["key"] += [key] * len(values)
            columns["step"] += steps
            columns["value"] += values
        return points_frame(columns)

    def _fetch_history(self, run_ids: list[str], keys: list[str]) -> None:
        """These keys of these runs, each run's history downloaded once (as the exporter does: parquet
        locations in batches, files over pooled HTTP, rows not exported yet through the client)."""
        from shared.base.concurrency import bounded_map
        from shared.wandb.api import default_entity
        from shared.wandb.history import HistoryFetcher

        api = self._connect()
        entity = self.entity or default_entity(api)
        runs = [self._listed[run_id].raw for run_id in run_ids]
        with (
            HistoryFetcher(
                api, entity, self.project, keys=keys, workers=self.workers, timeout_s=self.timeout
            ) as fetcher,
            self.events.progress("run histories", len(runs)) as progress,
        ):
            downloads = (
                downloaded
                for _, downloaded in bounded_map(fetcher.download, fetcher.locate(runs), self.workers)
            )
            for batch, table, _, _ in fetcher.tidy_batches(downloads):
                if failed := [downloaded for downloaded in batch if downloaded.failure]:
                    # an answer without their series would rank the others alone
                    raise Incomplete(f"history of run {failed[0].run_id}: {failed[0].failure}")
                tidy = pl.from_arrow(table)
                assert isinstance(tidy, pl.DataFrame)
                series = tidy.partition_by("run_id", "key", as_dict=True)
                for downloaded in batch:
                    for key in keys:  # every key asked of any run: a later query may want it of this one
                        part = series.get((downloaded.run_id, key))
                        self._series[downloaded.run_id, key] = (
                            ([], [])
                            if part is None
                            else (part["step"].cast(pl.Float64).to_list(), part["value"].to_list())
                        )
                progress.advance(len(batch))


class OfflineSource(RecordSource):
    """Offline run logs (`wandb/`, `offline-run-*` folders, `.wandb` files). A query lists them in one pass
    without history and reads the history of the needed keys from the logs of the runs that need it; an
    export reads each log once, whole, and hands over the runs of every project the logs hold."""

    detail = "wandb-offline"
    updatable = False  # read in full every time
    streams = frozenset({"history_other", "console", "system", "files"})  # the tidy streams it reads

    def __init__(
        self,
        paths: Path | Sequence[Path],
        project: str | None = None,
        *,
        events: Events | None = None,
        **options: Any,
    ) -> None:
        """`paths`: each a wandb/ folder, an offline-run-* folder or a .wandb file; `project` (entity/project
        or project) picks the runs a query sees."""
        super().__init__(events=events, **options)
        from shared.wandb.offline import locate_run_logs  # imports wandb's protobuf

        self.paths = [paths] if isinstance(paths, Path | str) else list(paths)
        self.path = self.paths[0]
        found = [locate_run_logs(path) for path in self.paths]
        self.logs = sorted({log for logs, _ in found for log in logs})
        self.unreadable = [
            entry for _, entries in found for entry in entries
        ]  # named and counted, not skipped
        self.project = project
        self._corrupt: dict[ProjectKey, dict[str, dict[str, int]]] = {}
        self._in_progress: list[str] = []  # logs that hold no run record yet
        self._logs_of: dict[str, list[Path]] = {}  # a run resumed offline has several
        self._loaded: set[tuple[str, str]] = set()
        self._frames: list[pl.DataFrame] = []

    def _belongs(self, entity: str, project: str) -> bool:
        if not self.project:
            return True
        wanted_entity, _, wanted_project = self.project.rpartition("/")
        return project == wanted_project and (not wanted_entity or entity == wanted_entity)

    def _list(self) -> Iterator[ListedRun]:
        from shared.wandb.offline import LogReadError, merged_runs, read_run_log, session_groups

        if self.unreadable:  # an answer from the other runs would silently leave its runs out
            more = f" (and {len(self.unreadable) - 1} more)" if len(self.unreadable) > 1 else ""
            raise LogReadError(f"{self.unreadable[0]}{more}: its runs would be missing from the answer")
        others: set[str] = set()
        projects_of: dict[str, str] = {}  # run id -> entity/project: a query keys runs by id alone
        with self.events.progress("run files", len(self.logs), verb="read") as progress:
            for group in session_groups(self.logs):
                sessions = []
                for log_path in group:
                    session = read_run_log(log_path, include_history=False)
                    progress.advance()
                    if session.in_progress:
                        self.events.note(f"{log_path}: {IN_PROGRESS}")
                        continue
                    sessions.append(session)
                    if session.lost_records:
                        self.events.warn(
                            f"{log_path}: skipped {session.lost_records} corrupt or truncated record(s)"
                        )
                for run, run_sessions in merged_runs(sessions):  # a run resumed offline is one run
                    record = run.record
                    where = f"{record.entity}/{record.project}"
                    if not self._belongs(record.entity, record.project):
                        others.add(where)
                        continue
                    if projects_of.setdefault(record.id, where) != where:
                        raise BadInput(
                            f"run {record.id} is in two projects of {self.path} ({projects_of[record.id]},"
                            f" {where}): name one with --project"
                        )
                    self._logs_of[record.id] = [session.path for session in run_sessions]
                    name = record.name or record.id
                    yield ListedRun(record.id, name, record.state, record.config, record.summary, run)
        if others and not self._logs_of:
            self.events.warn(
                f"no offline run of {self.project} in {self.path} (projects there: {name_list(sorted(others))})"
            )

    def _forget_history(self) -> None:
        self._loaded.clear()
        self._frames.clear()

    def _history(self, pairs: pl.DataFrame, *, needed: bool) -> pl.DataFrame:
        from shared.wandb.offline import merged_runs, read_run_log

        todo: dict[str, set[str]] = {}
        for run_id, key in pairs.iter_rows():
            if (run_id, key) not in self._loaded:
                todo.setdefault(run_id, set()).add(key)
        for run_id, keys in todo.items():
            sessions = [read_run_log(log, history_keys=keys) for log in self._logs_of[run_id]]
            history = merged_runs(sessions)[0][0].history
            self._frames.append(history.select(RUN, "key", pl.col("step").cast(pl.Float64), "value"))
            self._loaded |= {(run_id, key) for key in keys}
        if not self._frames:
            return points_frame({})
        return pl.concat(self._frames).join(pairs, on=[RUN, "key"], how="semi")

    def export_items(self, request: ExportRequest) -> Iterator[ExportItem]:
        """Every run of every project the logs hold (a run resumed offline is one run), with its history;
        a log or folder that cannot be read is named and counted, and the others go on, unless no log
        can be read. A log that holds no run record yet (a job in progress) is named, and left for later."""
        from shared.wandb.offline import (
            LogReadError,
            OfflineLogError,
            merged_runs,
            read_run_log,
            session_groups,
        )
        from shared.wandb.run_files import offline_run_files

        history_keys = set(request.history_keys) if request.history_keys else None
        found: dict[ProjectKey, int] = {}
        unreadable: list[OfflineLogError | LogReadError] = []
        for entry in self.unreadable:
            yield Unreadable(str(entry), str(entry.path))
        too_old = 0
        with self.events.progress("run files", len(self.logs), verb="read") as progress:
            for group in session_groups(self.logs):
                sessions = []
                for log_path in group:
                    try:
                        run = read_run_log(
                            log_path,
                            include_history=request.include_history,
                            history_keys=history_keys,
                            include_console="console" in request.streams,
                            include_system="system" in request.streams,
                        )
                    except (OfflineLogError, LogReadError) as error:
                        if len(self.logs) == 1 and not self.unreadable:
                            raise
                        unreadable.append(error)
                        yield Unreadable(str(error), str(log_path))
                        continue
                    finally:
                        progress.advance()
                    if run.in_progress:
                        self.events.note(f"{log_path}: {IN_PROGRESS}")
                        self._in_progress.append(str(log_path))
                    else:
                        sessions.append(run)
                for run, run_sessions in merged_runs(sessions):
                    key = (run.record.entity or OFFLINE_ENTITY, run.record.project or OFFLINE_PROJECT)
                    record = replace(run.record, entity=key[0], project=key[1])
                    plan = request.plan(*key)
                    if (
                        plan.since is not None
                        and record.created_at is not None
                        and record.created_at < plan.since
                    ):
                        too_old += 1
                        continue
                    found[key] = found.get(key, 0) + 1  # each run found is one run
                    self._note_corruption(key, run_sessions)
                    if not plan.selects(record):
                        continue
                    yield record
                    if request.wants_history(record):
                        yield HistoryChunk(run.history, {record.id: run.skipped_values}, project=key)
                    for name in ("history_other", "console", "system"):
                        if request.wants_stream(name, record):
                            yield StreamChunk(name, getattr(run, name), project=key)
                    if request.wants_files(record):
                        logs = [session.path for session in run_sessions]
                        yield RunFiles(key, record.id, offline_run_files(logs))
        if unreadable and len(unreadable) == len(self.logs):
            first = f"no readable run log among {len(self.logs)}: {unreadable[0]}"
            if self.unreadable or any(isinstance(error, LogReadError) for error in unreadable):
                raise LogReadError(first)  # cannot be read, rather than not a log: not the user's typo
            raise OfflineLogError(first)
        if too_old:
            since = request.plan(OFFLINE_ENTITY, OFFLINE_PROJECT).since
            self.events.note(f"{too_old} run(s) created before --since ({since:%Y-%m-%d %H:%M} UTC) left out")
        for key, count in found.items():
            yield Reported(key, count)

    def _note_corruption(self, key: ProjectKey, sessions: Sequence[Any]) -> None:
        for session in sessions:
            if session.lost_records:
                self.events.warn(
                    f"{session.path}: skipped {session.lost_records} corrupt or truncated record(s),"
                    f" {session.lost_bytes} bytes"
                )
                lost = {"lost_records": session.lost_records, "lost_bytes": session.lost_bytes}
                self._corrupt.setdefault(key, {})[str(session.path)] = lost

    def export_metadata(self, entity: str, project: str) -> dict[str, Any]:
        return {
            "source": "wandb-offline",
            # Absolute: an export of the same logs from another folder records the same (see the pipeline).
            "offline_paths": [str(Path(path).absolute()) for path in self.paths],
            "corrupt_logs": self._corrupt.get((entity, project), {}),
            # Whose runs they will be is not known yet: every project of these logs lists them.
            "runs_in_progress": self._in_progress,
        }
