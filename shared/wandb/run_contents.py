"""What the W&B API keeps of a run beside its record and history: its `wandb-metadata.json` (the runs
table's metadata columns), its `output.log` (console lines) and its events stream (system metrics).

One GraphQL request looks up, for URL_BATCH runs at once, the URLs of the files wanted and the events'
line count; the metadata files are downloaded while the next batches are looked up. A run's console log
and events are fetched by `streams`, one request each, as the caller schedules them (`workers` at a time).

`output.log` as the client uploads it (wandb-core and the legacy client alike) holds the text alone: its
lines' stream is not known (null). The log the server merges from the file stream while no file was
uploaded marks each line as wandb-core's file stream sends it, `[ERROR ]<ISO time> <text>` ("ERROR " for
stderr): a log whose every line is so marked is read that way, its marks taken off."""

from __future__ import annotations

import codecs
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import polars as pl

from shared.base.concurrency import batched
from shared.base.errors import Incomplete, describe, is_bug
from shared.base.retry import NO_RETRY, PermanentFailure, Retry
from shared.table.schema import CONSOLE, polars_schema
from shared.wandb.log_streams import sample_value, system_rows
from shared.wandb.metadata import run_metadata
from shared.wandb.transfers import Transfers, project_of_batch, runs_query

if TYPE_CHECKING:
    import urllib3
    import wandb

METADATA_FILE, CONSOLE_FILE = "wandb-metadata.json", "output.log"
FILES = (METADATA_FILE, CONSOLE_FILE)
URL_BATCH = 25  # runs whose files one GraphQL request looks up
BATCHES_AHEAD = 4  # such batches looked up and their metadata downloaded at once
SYSTEM_PREFIX = "system."  # wandb-core's events rows: "system." + the stats record's key (offline's keys)
_MERGED_LINE = re.compile(r"(ERROR )?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6} ")
_CHUNK_BYTES = 1 << 20

# The query the public client sends for Run.history(stream="system") (wandb/apis/public/runs.py,
# _full_history), word for word. The server samples the events down to `samples`: asked for the line
# count the lookup reported, it sends them all; fewer than that is a shortfall, not an export.
EVENTS_QUERY = """
        query RunFullHistory($project: String!, $entity: String!, $name: String!, $samples: Int) {
            project(name: $project, entityName: $entity) {
                run(name: $name) { events(samples: $samples) }
            }
        }
        """


def contents_query(count: int, *, events: bool) -> str:
    """The lookup of the files named by `$names` (and the events' line count) of `count` runs at once."""
    selection = "files(names: $names) { edges { node { name url } } }" + (
        " eventsLineCount" if events else ""
    )
    return runs_query("RunContents", "$names: [String]", selection, count)


class Located(NamedTuple):
    """Where a run's contents are: each file's URL (None: the run has none), the events' line count."""

    metadata: str | None
    console: str | None
    events: int


class Contents(NamedTuple):
    """A run's metadata fields (or why they could not be had) and where its streams are, or why nothing
    of it could be looked up."""

    metadata: dict[str, Any] | str
    located: Located | str


def console_frame(run_id: str, lines: list[str]) -> pl.DataFrame:
    """schema.CONSOLE rows of the lines of one output.log (see the module's note on `stream`)."""
    marked = bool(lines) and all(_MERGED_LINE.match(line) for line in lines)
    if marked:
        streams: list[str | None] = ["stderr" if line.startswith("ERROR ") else "stdout" for line in lines]
        lines = [line[_MERGED_LINE.match(line).end() :] for line in lines]  # type: ignore[union-attr]
    else:
        streams = [None] * len(lines)
    frame = pl.DataFrame(
        {"run_id": [run_id] * len(lines), "line": range(len(lines)), "stream": streams, "text": lines},
        schema=polars_schema(tuple(CONSOLE.columns.items())),
    )
    return frame


def events_frame(run_id: str, lines: list[Any]) -> pl.DataFrame:
    """schema.SYSTEM rows of an events stream's JSON lines: each `system.` key without that prefix."""
    seconds: list[float] = []
    keys: list[str] = []
    values: list[float | None] = []
    for line in lines:
        row = json.loads(line) if isinstance(line, str) else line  # NaN/Infinity come as bare tokens
        if not isinstance(row, dict) or not isinstance(row.get("_timestamp"), int | float):
            raise PermanentFailure("an events row without a timestamp")
        for key, value in row.items():
            if key.startswith(SYSTEM_PREFIX):
                seconds.append(float(row["_timestamp"]))
                keys.append(key.removeprefix(SYSTEM_PREFIX))
                values.append(sample_value(value))
    return system_rows(run_id, seconds, keys, values)


class ContentsFetcher:
    """Each run's metadata and the locations of the streams asked for (`console`, `system`); then, per
    run, those streams as tidy rows. GraphQL goes through the wandb client, files as history's do
    (shared.wandb.transfers). A context manager: its connection pools close on leaving it."""

    def __init__(
        self,
        api: wandb.Api,
        entity: str,
        project: str,
        *,
        console: bool = False,
        system: bool = False,
        workers: int,
        timeout_s: float,
        retry: Retry = NO_RETRY,
    ) -> None:
        self.api, self.entity, self.project = api, entity, project
        self.console, self.system = console, system
        self.workers, self.timeout_s, self.retry = workers, timeout_s, retry
        self._transfers = Transfers(workers)

    def __enter__(self) -> ContentsFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self._transfers.close()

    def complete(self, runs: Iterable[Any]) -> Iterator[tuple[Any, Contents]]:
        """Each item of `runs` (with a `.run.id`) and its Contents, in order; up to BATCHES_AHEAD batches
        looked up and their metadata downloaded at once (their latencies overlap)."""
        with (
            ThreadPoolExecutor(self.workers, thread_name_prefix="metadata") as downloads,
            ThreadPoolExecutor(BATCHES_AHEAD, thread_name_prefix="contents-lookup") as lookups,
        ):

            def fetched(batch: list[Any]) -> list[Contents]:
                return list(downloads.map(self._metadata, self._locate([item.run.id for item in batch])))

            pending: deque[tuple[list[Any], Future[list[Contents]]]] = deque()
            for batch in batched(runs, URL_BATCH):
                pending.append((batch, lookups.submit(fetched, batch)))
                while pending and (pending[0][1].done() or len(pending) > BATCHES_AHEAD):
                    done, results = pending.popleft()
                    yield from zip(done, results.result(), strict=True)
            while pending:
                done, results = pending.popleft()
                yield from zip(done, results.result(), strict=True)

    def streams(self, run_id: str, contents: Contents, wanted: Iterable[str]) -> Iterator[tuple[str, Any]]:
        """Each stream of `wanted` (console, system) and its rows, or why they could not be had."""
        for stream in wanted:
            if isinstance(contents.located, str):
                yield stream, contents.located
                continue
            what = f"{stream} of run {run_id}"
            located = contents.located
            operation: Callable[[], pl.DataFrame] = (
                partial(self._console, run_id, located.console)
                if stream == "console" and located.console
                else partial(console_frame, run_id, [])
                if stream == "console"
                else partial(self._events, run_id, located.events)
            )
            try:
                yield stream, self.retry.call(what, operation)
            except Exception as error:
                if is_bug(error):
                    raise
                yield stream, describe(error).removeprefix(f"{what}: ")

    def _locate(self, run_ids: list[str]) -> list[Located | Exception]:
        """Each run's file URLs and events' line count, or the failure to look them up."""
        names = [METADATA_FILE] + ([CONSOLE_FILE] if self.console else [])
        variables = {"entity": self.entity, "project": self.project, "names": names}
        variables |= {f"run{i}": run_id for i, run_id in enumerate(run_ids)}
        what = f"files of runs {run_ids[0]}..{run_ids[-1]}"
        query = contents_query(len(run_ids), events=self.system)
        project = project_of_batch(self.api, self.retry, query, variables, what, self.timeout_s)
        if isinstance(project, Exception):
            return [project] * len(run_ids)
        found: list[Located | Exception] = []
        for i in range(len(run_ids)):
            run = project.get(f"run{i}") or {}
            urls = {
                node.get("name"): node.get("url")
                for edge in ((run.get("files") or {}).get("edges") or [])
                if isinstance(node := (edge or {}).get("node"), dict)
            }
            metadata, console = (url if isinstance(url := urls.get(name), str) else None for name in FILES)
            count = run.get("eventsLineCount")
            count = count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0
            found.append(Located(metadata, console, count))
        return found

    def _metadata(self, located: Located | Exception) -> Contents:
        """The metadata fields from the file `located` names, downloaded again while the transfer fails."""
        if isinstance(located, Exception):
            why = f"could not be looked up ({describe(located)})"
            return Contents(why, why)
        if located.metadata is None:
            return Contents({}, located)
        url = located.metadata
        try:
            return Contents(
                run_metadata(self.retry.call(METADATA_FILE, lambda: self._environment(url))), located
            )
        except Exception as error:
            if is_bug(error):
                raise
            return Contents(describe(error).removeprefix(f"{METADATA_FILE}: "), located)

    def _get(self, url: str, *, stream: bool = False) -> urllib3.BaseHTTPResponse:
        import urllib3

        try:
            response = self._transfers.pool(url).request(
                "GET", url, timeout=self.timeout_s, preload_content=not stream
            )
        except urllib3.exceptions.HTTPError as error:  # the URL is signed: never named
            raise Incomplete(
                f"download failed ({type(getattr(error, 'reason', None) or error).__name__})"
            ) from None
        if response.status != 200:
            response.release_conn()
            if 400 <= response.status < 500 and response.status not in (408, 429):
                raise PermanentFailure(f"download failed (HTTP {response.status})")
            raise Incomplete(f"download failed (HTTP {response.status})")
        return response

    def _environment(self, url: str) -> dict[str, Any]:
        try:
            environment = json.loads(self._get(url).data)
        except ValueError:  # cut short in transfer
            raise Incomplete("the downloaded file is not JSON") from None
        if not isinstance(environment, dict):
            raise PermanentFailure("the file is not a JSON object")
        return environment

    def _console(self, run_id: str, url: str) -> pl.DataFrame:
        """The run's output.log as console rows, read a chunk at a time (a log may be large)."""
        import urllib3

        response = self._get(url, stream=True)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        lines: list[str] = []
        rest = ""
        try:
            for chunk in response.stream(_CHUNK_BYTES):
                *complete, rest = (rest + decoder.decode(chunk)).split("\n")
                lines += complete
        except urllib3.exceptions.HTTPError as error:  # cut short, timed out
            raise Incomplete(f"download failed ({type(error).__name__})") from None
        finally:
            response.release_conn()
        rest += decoder.decode(b"", final=True)
        return console_frame(run_id, lines + ([rest] if rest else []))

    def _events(self, run_id: str, count: int) -> pl.DataFrame:
        if not count:
            return events_frame(run_id, [])
        variables = {"entity": self.entity, "project": self.project, "name": run_id, "samples": count}
        data = self.api._service_api.execute_graphql(EVENTS_QUERY, variables, timeout=self.timeout_s)
        run = ((data or {}).get("project") or {}).get("run")
        if run is None:
            raise PermanentFailure("the run is gone from the server")
        lines = run.get("events")
        if not isinstance(lines, list):
            raise PermanentFailure("the server sent no events")
        if len(lines) < count:
            raise PermanentFailure(f"the server sent {len(lines)} of its {count} samples")
        return events_frame(run_id, lines)
