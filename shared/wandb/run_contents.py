"""What the W&B API keeps of a run beside its record and history: its `wandb-metadata.json` (the runs
table's metadata columns), its `output.log` (console lines) and its events stream (system metrics).

One GraphQL request looks up, for URL_BATCH runs at once, the URLs of the files wanted and the events'
line count; the metadata files are downloaded while the next batches are looked up. A run's console log
is fetched by `fetch_console`, the events of up to URL_BATCH runs by `fetch_events` in one request, as
the caller schedules them.

A run logged with `console_multipart` has no `output.log`: its console is in parts, `logs/output_<date>_
<time>_<n>.log`, read from the run's files listing in the order their names give.

`output.log` as the client uploads it (wandb-core and the legacy client alike) holds the text alone: its
lines' stream is not known (null). The log the server merges from the file stream while no file was
uploaded marks each line as wandb-core's file stream sends it, `[ERROR ]<ISO time> <text>` ("ERROR " for
stderr): a log whose every line is so marked is read that way, its marks taken off."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

import polars as pl

from shared.base.errors import Incomplete, describe, is_bug
from shared.base.retry import NO_RETRY, PermanentFailure, Retry
from shared.table.run_files import RunFile
from shared.table.schema import CONSOLE, polars_schema
from shared.wandb.log_streams import empty_system, sample_value, system_rows
from shared.wandb.metadata import run_metadata
from shared.wandb.transfers import Transfers, in_batches, runs_of_batch, runs_query

if TYPE_CHECKING:
    import wandb

METADATA_FILE, CONSOLE_FILE = "wandb-metadata.json", "output.log"
FILES = (METADATA_FILE, CONSOLE_FILE)
URL_BATCH = 25  # runs whose files one GraphQL request looks up
BATCHES_AHEAD = 4  # such batches looked up and their metadata downloaded at once
SYSTEM_PREFIX = "system."  # wandb-core's events rows: "system." + the stats record's key (offline's keys)
_MERGED_LINE = re.compile(r"(?:ERROR )?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}) ")
_CHUNK_BYTES = 1 << 20
_CONSOLE_PART = re.compile(r"logs/output_[\d_]+\.log")  # console_multipart: logs/output_<date>_<time>_<n>.log

EVENTS_PER_REQUEST = 20_000  # samples one events request may bring (of URL_BATCH runs at most)
FETCHES_PER_WORKER = 2  # console logs fetched at once, per worker: they wait mostly on the server
EVENTS_AT_ONCE = 2  # events requests to read at once: each holds its reply thrice (text, JSON, rows)


def contents_query(count: int, *, events: bool) -> str:
    """The lookup of the files named by `$names` (and the events' line count) of `count` runs at once."""
    selection = "files(names: $names) { edges { node { name url } } }" + (
        " eventsLineCount" if events else ""
    )
    return runs_query("RunContents", "$names: [String]", selection, count)


def events_query(count: int) -> str:
    """The events of `count` runs at once: the field the public client's Run.history(stream="system")
    reads (wandb/apis/public/runs.py, _full_history). The server samples each run's events down to
    `samples`: asked for the largest line count the lookup reported, it sends each run all of its own;
    fewer than its count is a shortfall, not an export."""
    return runs_query("RunEvents", "$samples: Int", "events(samples: $samples)", count)


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
    """schema.CONSOLE rows of the lines of one output.log (see the module's note on `stream`; the times
    of a merged log are UTC, a raw log has none)."""
    matches = [_MERGED_LINE.match(line) for line in lines]
    times: list[str | None] = [None] * len(lines)
    if lines and all(matches):
        streams: list[str | None] = ["stderr" if line.startswith("ERROR ") else "stdout" for line in lines]
        times = [match[1] for match in matches]  # type: ignore[index]
        lines = [line[match.end() :] for line, match in zip(lines, matches, strict=True)]  # type: ignore[union-attr]
    else:
        streams = [None] * len(lines)
    schema = polars_schema(tuple(CONSOLE.columns.items()))
    columns = {"run_id": [run_id] * len(lines), "line": range(len(lines)), "timestamp": times}
    frame = pl.DataFrame(
        columns | {"stream": streams, "text": lines}, schema=schema | {"timestamp": pl.String}
    )
    timestamp = pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_zone="UTC", strict=False)
    return frame.with_columns(timestamp).cast(schema)


def console_parts(files: Sequence[RunFile]) -> list[RunFile]:
    """The parts of a multipart console log among a run's files, oldest first (by the numbers in their
    names: date, time, then a counter that is not zero-padded)."""
    parts = [file for file in files if _CONSOLE_PART.fullmatch(file.path)]
    return sorted(parts, key=lambda file: [int(n) for n in re.findall(r"\d+", file.path)])


def events_rows(runs: list[tuple[str, list[Any]]]) -> tuple[pl.DataFrame, dict[str, str]]:
    """schema.SYSTEM rows of runs' events (JSON lines): each `system.` key without that prefix, a sample
    that is not a number as null; and why a run's could not be read. Read as one JSON-lines frame (runs
    hold thousands of rows of a dozen keys); when polars cannot (NaN, mixed types), a line at a time."""
    lines = [line for _, run_lines in runs for line in run_lines]
    if lines and all(isinstance(line, str) for line in lines):
        try:
            wide = pl.read_ndjson("\n".join(lines).encode())
        except pl.exceptions.PolarsError:
            wide = None
        if wide is not None and "_timestamp" in wide.columns:
            timestamps = wide["_timestamp"]
            if timestamps.dtype.is_numeric() and not timestamps.null_count():
                owners = pl.Series("run_id", [run_id for run_id, run_lines in runs for _ in run_lines])
                return _wide_events(wide.with_columns(owners)), {}
    frames, failed = [], {}
    for run_id, run_lines in runs:
        try:
            frames.append(events_frame(run_id, run_lines))
        except (ValueError, PermanentFailure) as error:  # a row that is not JSON, or without a timestamp
            failed[run_id] = describe(error)
    return (pl.concat(frames) if frames else empty_system()), failed


def events_frame(run_id: str, lines: list[Any]) -> pl.DataFrame:
    """schema.SYSTEM rows of one run's events, a line at a time."""
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


def _wide_events(wide: pl.DataFrame) -> pl.DataFrame:
    """Tidy rows of events read as one frame (a column per key): one per row and key the row holds."""
    columns = [name for name in wide.columns if name.startswith(SYSTEM_PREFIX)]
    if not columns:
        return empty_system()
    present = wide.select(
        "run_id",
        pl.col("_timestamp").cast(pl.Float64).alias("seconds"),
        *(
            pl.struct(
                pl.col(name).is_not_null().alias("held"),
                (
                    pl.col(name).cast(pl.Float64)
                    if wide[name].dtype.is_numeric()
                    else pl.lit(None, pl.Float64)  # text, booleans, objects: not a number
                ).alias("value"),
            ).alias(name.removeprefix(SYSTEM_PREFIX))
            for name in columns
        ),
    )
    tidy = (
        present.unpivot(index=["run_id", "seconds"], variable_name="key", value_name="sample")
        .unnest("sample")
        .filter(pl.col("held"))
        .sort("run_id", "seconds", maintain_order=True)
    )
    return system_rows(tidy["run_id"], tidy["seconds"], tidy["key"], tidy["value"])


class ContentsFetcher:
    """Each run's metadata and the locations of the streams asked for (`console`, `system`); then those
    streams as tidy rows, a run's console log or a batch of runs' events at a time. GraphQL goes through the wandb client, files as history's do
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
        self.fetches = FETCHES_PER_WORKER * workers  # console logs fetched at once
        self._transfers = Transfers(self.fetches)

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

            yield from in_batches(lookups, fetched, runs, URL_BATCH, BATCHES_AHEAD)

    def fetch_console(
        self, run_id: str, contents: Contents, parts: Sequence[RunFile] = ()
    ) -> list[tuple[str, str, Any]]:
        """The run's console rows: its output.log's lines, then those of the `parts` of a multipart log
        (`console_parts`; none without either); or why they could not be had, as (run id, "console",
        rows or reason)."""
        if isinstance(contents.located, str):
            return [(run_id, "console", contents.located)]
        url = contents.located.console
        if url is None and not parts:
            return [(run_id, "console", console_frame(run_id, []))]
        what = f"console of run {run_id}"
        try:
            lines = self.retry.call(what, lambda: self._console(url)) if url is not None else []
            for part in parts:
                if part.read is None:
                    return [(run_id, "console", f"{part.path} has no download URL")]
                lines += self.retry.call(what, lambda part=part: self._part(part))
            return [(run_id, "console", console_frame(run_id, lines))]
        except Exception as error:
            if is_bug(error):
                raise
            return [(run_id, "console", describe(error).removeprefix(f"{what}: "))]

    def fetch_events(self, runs: list[tuple[str, Contents]]) -> list[tuple[str, str, Any]]:
        """The system rows of `runs` (one request for all that have events) and why a run's could not
        be had; as (run id, "system", reason) and ("", "system", the rows of them all)."""
        failed = {run_id: contents.located for run_id, contents in runs if isinstance(contents.located, str)}
        asked = [
            (run_id, contents.located.events)
            for run_id, contents in runs
            if not isinstance(contents.located, str) and contents.located.events
        ]
        sent: list[tuple[str, list[Any]]] = []
        if asked:
            variables = {"entity": self.entity, "project": self.project}
            variables |= {"samples": max(count for _, count in asked)}
            what = f"events of runs {asked[0][0]}..{asked[-1][0]}"
            query = events_query(len(asked))
            run_ids = [run_id for run_id, _ in asked]
            replies = runs_of_batch(self.api, self.retry, query, variables, run_ids, what, self.timeout_s)
            for i, (run_id, count) in enumerate(asked):
                if isinstance(replies, Exception):
                    failed[run_id] = f"could not be had ({describe(replies)})"
                elif isinstance(lines := _sent_events(replies[i], count), str):
                    failed[run_id] = lines
                else:
                    sent.append((run_id, lines))
        rows, unreadable = events_rows(sent)
        return [(run_id, "system", why) for run_id, why in (failed | unreadable).items()] + [
            ("", "system", rows)
        ]

    def _locate(self, run_ids: list[str]) -> list[Located | Exception]:
        """Each run's file URLs and events' line count, or the failure to look them up."""
        names = [METADATA_FILE] + ([CONSOLE_FILE] if self.console else [])
        variables = {"entity": self.entity, "project": self.project, "names": names}
        what = f"files of runs {run_ids[0]}..{run_ids[-1]}"
        query = contents_query(len(run_ids), events=self.system)
        replies = runs_of_batch(self.api, self.retry, query, variables, run_ids, what, self.timeout_s)
        if isinstance(replies, Exception):
            return [replies] * len(run_ids)
        found: list[Located | Exception] = []
        for run in replies:
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

    def _environment(self, url: str) -> dict[str, Any]:
        try:
            environment = json.loads(self._transfers.get(url, self.timeout_s).data)
        except ValueError:  # cut short in transfer
            raise Incomplete("the downloaded file is not JSON") from None
        if not isinstance(environment, dict):
            raise PermanentFailure("the file is not a JSON object")
        return environment

    def _console(self, url: str) -> list[str]:
        """The lines of the run's output.log, read a chunk at a time (a log may be large)."""
        with self._transfers.stream(url, self.timeout_s) as response:
            return _log_lines(response)

    @staticmethod
    def _part(part: RunFile) -> list[str]:
        """The lines of one part of a multipart console log, through the files listing's download."""
        assert part.read is not None
        with part.read() as response:
            return _log_lines(response)


def _log_lines(response: Any) -> list[str]:
    """The lines of a log as a urllib3 response streams it (UTF-8, a bad byte replaced)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    lines: list[str] = []
    rest = ""
    for chunk in response.stream(_CHUNK_BYTES):
        *complete, rest = (rest + decoder.decode(chunk)).split("\n")
        lines += complete
    rest += decoder.decode(b"", final=True)
    return lines + ([rest] if rest else [])


def _sent_events(run: Any, count: int) -> list[Any] | str:
    """The events lines the server sent of a run, or why they are not all there."""
    if not run or not isinstance(run, dict):  # the server answered nothing of it
        return "the run is gone from the server"
    lines = run.get("events")
    if not isinstance(lines, list) or len(lines) < count:
        return f"the server sent {len(lines) if isinstance(lines, list) else 0} of its {count} samples"
    return lines
