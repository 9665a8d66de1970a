"""A live Neptune server through the `neptune` client, read-only: the runs table once, series on demand."""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl

from shared.base.concurrency import bounded_map
from shared.base.errors import BadInput, Incomplete, is_bug
from shared.base.events import Events
from shared.neptune.attributes import normalize_state
from shared.neptune.auth import neptune_token
from shared.neptune.runs import (
    NeptuneRun,
    NeptuneSource,
    SeriesBatch,
    epoch_times,
    is_logged_value,
    is_number,
    split_project,
)
from shared.neptune.streams import CONSOLE_PATH, MONITORING, OTHER_POINTS
from shared.table.schema import POINTS_SCHEMA, RUNS_SCHEMA, SERIES_SCHEMA
from shared.table.source import Asked

Series = tuple[list[float | None], list[float]]  # steps, values
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def client_message(error: Exception) -> str:
    """`Type: first line` of an error; the neptune client's messages are coloured multi-line banners."""
    lines = (line.strip() for line in _ANSI.sub("", str(error)).splitlines())
    first = next((line for line in lines if line and not line.startswith("----")), "")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def client_error(error: Exception, project: str) -> Exception:
    """A neptune client error as ours: a rejected token or unknown project is bad input, the rest a failure."""
    from neptune.exceptions import MetadataContainerNotFound, NeptuneInvalidApiTokenException

    if isinstance(error, NeptuneInvalidApiTokenException):
        return BadInput(f"the Neptune server rejected the API token (project {project})")
    if isinstance(error, MetadataContainerNotFound):
        return BadInput(f"{project}: {client_message(error)}")
    return Incomplete(f"{project}: {client_message(error)}")


def _number(value: Any) -> float | None:
    """A table cell as a float when it is a number (not a bool, not NaN from pandas' empty cells)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if isinstance(value, float) and math.isnan(value) else float(value)


def _is_empty(value: Any) -> bool:
    """An empty table cell: None, NaN, or pandas' NaT/NA (a run without that attribute)."""
    import pandas as pd  # the neptune client's own dependency; only reached with a live source

    return value is None or pd.isna(value) is True


class LazyRun:
    """A read-only Neptune run that is opened on first use and closed by the source's `close()`."""

    def __init__(self, source: LiveSource, run_id: str) -> None:
        self._source, self._run_id = source, run_id

    def __getitem__(self, path: str) -> Any:
        return self._source.open_run(self._run_id)[path]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source.open_run(self._run_id), name)

    def __repr__(self) -> str:
        return f"LazyRun({self._run_id!r})"


class LiveSource(NeptuneSource):
    """One project on a Neptune server (self-hosted or not) reached by the neptune 1.x client."""

    detail = "neptune-live"
    streams = frozenset({"history_other", "console", "system"})  # the tidy streams it reads

    def __init__(
        self, project: str, api_token: str | None = None, *, workers: int = 8, events: Events | None = None
    ) -> None:
        super().__init__(split_project(project), project, events)
        self.project = project
        self.workers = max(1, workers)
        self._token = neptune_token(api_token, self.events)
        self._neptune: Any = None
        self._project: Any = None
        self._by_id: dict[str, dict[str, Any]] = {}
        self._runs: pl.DataFrame | None = None
        self._open: dict[str, Any] = {}
        self._series: dict[tuple[str, str], Series | None] = {}  # None: the path holds a single number
        self._lock = threading.Lock()
        self._run_locks: dict[str, threading.Lock] = {}

    def _client(self) -> Any:
        if self._neptune is None:
            import neptune  # heavy: imported only when a live source is used

            self._neptune = neptune
        return self._neptune

    def runs(self, *, refresh: bool = False) -> pl.DataFrame:
        if self._runs is None or refresh:
            neptune = self._client()
            try:
                if self._project is None:
                    self._project = neptune.init_project(
                        project=self.project, api_token=self._token, mode="read-only"
                    )
                frame = self._project.fetch_runs_table(progress_bar=False).to_pandas()
            except neptune.exceptions.NeptuneException as error:
                raise client_error(error, self.project) from None
            rows = [{k: v for k, v in row.items() if not _is_empty(v)} for row in frame.to_dict("records")]
            self._by_id = {str(row["sys/id"]): row for row in rows}
            self._series.clear()
            self._runs = pl.DataFrame(
                {
                    "run_id": list(self._by_id),
                    "name": [str(row.get("sys/name") or rid) for rid, row in self._by_id.items()],
                    "state": [normalize_state(row.get("sys/state")) for row in self._by_id.values()],
                },
                schema=RUNS_SCHEMA,
            )
        return self._runs

    def open_run(self, run_id: str) -> Any:
        """The read-only run object, opened once per run and shared by every fetch."""
        with self._lock:
            lock = self._run_locks.setdefault(run_id, threading.Lock())
        with lock:
            if run_id not in self._open:
                neptune = self._client()
                try:
                    self._open[run_id] = neptune.init_run(
                        project=self.project, api_token=self._token, with_id=run_id, mode="read-only"
                    )
                except neptune.exceptions.NeptuneException as error:
                    raise client_error(error, f"{self.project}/{run_id}") from None
            return self._open[run_id]

    def fetch_values(self, run_id: str, key: str, *, timestamps: bool = False) -> Any:
        """The client's frame of a series (step, value, and timestamp if asked); None for a single number."""
        try:
            return self.open_run(run_id)[key].fetch_values(include_timestamp=timestamps, progress_bar=False)
        except AttributeError:  # a Float/Int attribute: no series behind the table value
            return None

    def _fetch(self, run_id: str, key: str) -> Series | None:
        values = self.fetch_values(run_id, key)
        if values is None:
            return None
        return [_number(s) for s in values["step"].tolist()], [float(v) for v in values["value"].tolist()]

    def _fetch_missing(self, pairs: list[tuple[str, str]]) -> None:
        """Fetch the series not cached yet, `workers` at a time; a failed fetch fails the query."""
        todo = [pair for pair in pairs if pair not in self._series]
        if not todo:
            return
        failures: list[str] = []
        with self.events.progress("series", len(todo)) as progress, ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(self._fetch, *pair): pair for pair in todo}
            for future, pair in futures.items():
                try:
                    self._series[pair] = future.result()
                except Exception as error:  # network, permissions, server errors
                    if is_bug(error):
                        raise
                    failures.append(f"{pair[0]}/{pair[1]}: {client_message(error)}")
                progress.advance()
        if failures:
            raise Incomplete(
                f"could not fetch {len(failures)} series from {self.project} (first: {failures[0]})"
            )

    def run_ids(self) -> list[str]:
        return self.runs()["run_id"].to_list()

    def points(self, asked: Asked) -> pl.LazyFrame:
        """Table values (each series' last value) or, with `series`, the full series of runs that can rank."""
        keys, run_ids, series, required = asked
        self.runs()
        ids = list(self._by_id) if run_ids is None else [r for r in run_ids if r in self._by_id]
        cells = [(r, k, _number(self._by_id[r].get(k))) for r in ids for k in keys]
        cells = [cell for cell in cells if cell[2] is not None]
        # A run lacking a required path cannot rank: its table values tell why, no series is fetched.
        complete = {r for r in ids if all(_number(self._by_id[r].get(k)) is not None for k in required)}
        wanted = [(r, k) for r, k, _ in cells if r in complete] if series else []
        self._fetch_missing(wanted)
        columns: dict[str, list[Any]] = {"run_id": [], "key": [], "step": [], "value": []}
        for run_id, key, value in cells:
            fetched = self._series.get((run_id, key)) if series and run_id in complete else None
            steps, values = fetched if fetched is not None else ([None], [value])
            columns["run_id"] += [run_id] * len(values)
            columns["key"] += [key] * len(values)
            columns["step"] += steps
            columns["value"] += values
        return pl.DataFrame(columns, schema=POINTS_SCHEMA).lazy()

    def attributes(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.runs()
        return {run_id: dict(sorted(self._by_id.get(run_id, {}).items())) for run_id in run_ids}

    def numeric_keys(self) -> list[str]:
        self.runs()
        return sorted({k for row in self._by_id.values() for k, v in row.items() if _number(v) is not None})

    def raw_run(self, run_id: str) -> LazyRun:
        return LazyRun(self, run_id)

    def close(self) -> None:
        """Stop every opened run and the project handle; forget the cached table and series."""
        handles = [*self._open.values(), *([self._project] if self._project is not None else [])]
        for handle in handles:
            with contextlib.suppress(Exception):  # closing is best effort
                handle.stop()
        self._open.clear()
        self._project = None
        self._runs = None
        self._by_id = {}
        self._series.clear()

    # ---------------------------------------------------------------- export

    def export_runs(self) -> list[NeptuneRun]:
        run_ids = self.run_ids()
        attributes = self.attributes(run_ids)
        # The table holds each series' last value: it lands in the summary with the other attributes.
        return [NeptuneRun(run_id, attributes[run_id]) for run_id in run_ids]

    def _fetch_points(self, fetch: tuple[str, str, bool]) -> pl.DataFrame | None:
        """A series' points (SERIES_SCHEMA; with `text`, a string series' as streams.OTHER_POINTS), None
        when the attribute is not a series (a Float or String: the table cell was its value)."""
        run_id, path, text = fetch
        try:
            values = self.fetch_values(run_id, path, timestamps=True)
        except Exception as error:  # the client's errors: a failure of this project, said in one line
            if is_bug(error):
                raise
            raise Incomplete(client_message(error)) from None
        if values is None:
            return None
        # The client gives naive local times (datetime.fromtimestamp); .timestamp() reads them back as local.
        stamps = [t.to_pydatetime().timestamp() for t in values["timestamp"]] if "timestamp" in values else []
        columns = {
            "run_id": [run_id] * len(values),
            "key": [path] * len(values),
            "step": [float(s) for s in values["step"]],
            "timestamp": epoch_times(stamps) if stamps else [None] * len(values),
        }
        if text:
            columns |= {"type": ["string"] * len(values), "value": [str(v) for v in values["value"]]}
            return pl.DataFrame(columns, schema=OTHER_POINTS)
        return pl.DataFrame(columns | {"value": [float(v) for v in values["value"]]}, schema=SERIES_SCHEMA)

    def export_series(self, runs: Sequence[NeptuneRun], streams: frozenset[str]) -> Iterator[SeriesBatch]:
        """The series of the runs table's cells that `streams` take, fetched `workers` at a time; each
        run's points as one batch once all of its series are in."""
        fetches = [
            (run.run_id, path, kind == "string")
            for run in runs
            for path, value in sorted(run.attributes.items())
            if (kind := _series_kind(path, value, streams)) is not None
        ]
        due = Counter(run_id for run_id, _, _ in fetches)
        fetched: dict[str, list[pl.DataFrame]] = {}
        images: dict[str, list[str]] = {}  # run → its image series, which are not read
        with self.events.progress("series", len(fetches)) as progress:
            for (run_id, _path, _text), frame in bounded_map(self._fetch_points, fetches, self.workers):
                progress.advance()
                fetched.setdefault(run_id, []).extend([frame] if frame is not None else [])
                due[run_id] -= 1
                if not due[run_id]:
                    if "history_other" in streams and (paths := self._image_series(run_id)):
                        images[run_id] = paths
                    frames = fetched.pop(run_id)
                    numbers = [frame for frame in frames if "type" not in frame.columns]
                    texts = [frame for frame in frames if "type" in frame.columns]
                    yield SeriesBatch(
                        pl.concat(numbers) if numbers else pl.DataFrame(schema=SERIES_SCHEMA),
                        pl.concat(texts) if texts else pl.DataFrame(schema=OTHER_POINTS),
                    )
        if images:
            named = "; ".join(f"{run_id}: {', '.join(paths)}" for run_id, paths in sorted(images.items()))
            self.events.warn(
                f"{self.project}: image series are not read from a server (its client downloads them only"
                f" as files), not counted in skipped_history_values: {named}"
            )

    def _image_series(self, run_id: str) -> list[str]:
        """The paths of a run's image series (FileSeries), from the structure the opened run holds."""
        from neptune.attributes.series.file_series import FileSeries

        found, nodes = [], [("", self.open_run(run_id).get_structure())]
        while nodes:
            prefix, node = nodes.pop()
            for name, child in node.items():
                path = f"{prefix}{name}"
                if isinstance(child, dict):
                    nodes.append((f"{path}/", child))
                elif isinstance(child, FileSeries):
                    found.append(path)
        return sorted(found)


def _series_kind(path: str, value: Any, streams: frozenset[str]) -> str | None:
    """`number` or `string` when the runs table's cell at `path` may be a series that one of `streams`
    takes (the table holds a float series' last number, a string series' last text), else None."""
    if is_number(value):
        taken = ("history" in streams and is_logged_value(path)) or (
            "system" in streams and path.startswith(MONITORING)
        )
        return "number" if taken else None
    if isinstance(value, str):
        taken = ("history_other" in streams and is_logged_value(path)) or (
            "console" in streams and re.match(CONSOLE_PATH, path) is not None
        )
        return "string" if taken else None
    return None
