"""`.neptune/offline/run__*` folders of the neptune client: replay the JSON-lines operation log into a run."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from shared.base.errors import Incomplete
from shared.base.events import Events
from shared.base.limits import check_regular_file, read_text_file
from shared.neptune.files import upload_files
from shared.neptune.runs import (
    OFFLINE_PROJECT,
    NeptuneRun,
    NeptuneSource,
    SeriesBatch,
    epoch_times,
    split_project,
    utc,
)
from shared.neptune.streams import OTHER_POINTS
from shared.table.run_files import RunFile, local_file
from shared.table.schema import POINTS_SCHEMA, RUNS_SCHEMA, SERIES_SCHEMA
from shared.table.source import Asked

_DATA_FILE = re.compile(r"^data-(\d+)\.log$")
_ASSIGN = {"AssignFloat": float, "AssignInt": int, "AssignBool": bool, "AssignString": str}
OFFLINE_STATE = "inactive"  # an offline run never reached a server; nothing of it runs there
IN_PROGRESS = "in progress: exported once its log holds the run"  # a run folder with no operation yet
RUNNING_WINDOW = timedelta(minutes=10)  # a log written to this recently may be in the middle of a line


@dataclass
class OfflineRun:
    """A run rebuilt from its operations: simple attributes, string sets and float series."""

    run_id: str
    folder: Path
    created_at: str | None = None
    scalars: dict[str, Any] = field(default_factory=dict)
    string_sets: dict[str, set[str]] = field(default_factory=dict)
    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)  # path → steps, values
    series_times: dict[str, list[float | None]] = field(
        default_factory=dict
    )  # path → each point's ts (epoch s)
    strings: dict[str, list[tuple[float, float | None, str]]] = field(
        default_factory=dict
    )  # path → (step, ts, value)
    images: dict[str, list[tuple[float, float | None, str]]] = field(
        default_factory=dict
    )  # path → (step, ts, the image as JSON): a FileSeries, which the offline client logs images to
    # path -> the files its uploads name: (path in the run, where it is on this machine)
    uploads: dict[str, list[tuple[str, Path]]] = field(default_factory=dict)
    last_at: float | None = None  # when the newest operation was logged (epoch s): the last sign of life
    started: bool = False  # some operation was logged: a run folder without one is a run being started
    skipped_lines: int = 0
    problems: list[str] = field(default_factory=list)  # what could not be read, for the caller to say

    def attributes(self) -> dict[str, Any]:
        """Simple attributes by path (string sets as sorted lists)."""
        sets = {path: sorted(values) for path, values in self.string_sets.items()}
        return dict(sorted({**self.scalars, **sets}.items()))


def _data_files(folder: Path) -> list[Path]:
    """`data-<first version>.log` files in operation order."""
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _DATA_FILE.match(p.name))]
    return [path for _, path in sorted(found)]


class Container(NamedTuple):
    """What an offline folder's metadata.json says it holds, and why it could not be read (if so)."""

    kind: str
    id: str
    created: str | None
    problem: str | None


@cache  # looked up while finding run folders and again while reading one
def _container(folder: Path) -> Container:
    """The container from metadata.json, else from the folder name."""
    parts = folder.name.split("__")
    kind, container_id = (parts[0], parts[1]) if len(parts) > 1 else ("run", parts[0])
    created = problem = None
    try:
        metadata = json.loads(read_text_file(folder / "metadata.json", "offline run metadata"))
        kind = metadata.get("containerType", kind)
        container_id = metadata.get("containerId", container_id)
        created = metadata.get("createdAt")
    except FileNotFoundError:
        pass
    except (OSError, ValueError, AttributeError, RecursionError) as error:  # damaged: the name says
        problem = f"{folder / 'metadata.json'}: unreadable ({str(error)[:200]}); run read by its folder name"
    return Container(kind, container_id, created, problem)


class UnreadableRun(NamedTuple):
    """An offline run folder (or the folder holding them) that could not be listed or read."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: cannot read ({self.reason})"


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


class RunFolders(NamedTuple):
    """What a `.neptune` folder holds: run folders with logs, run folders with no log yet (a run being
    started), and folders that could not be read (named, never skipped in silence)."""

    runs: list[Path]
    starting: list[Path]
    unreadable: list[UnreadableRun]


def _is_run_folder(folder: Path) -> bool:
    return folder.is_dir() and bool(_data_files(folder)) and _container(folder).kind == "run"


def locate_run_folders(path: Path) -> RunFolders:
    """Offline run folders at or under `path` (a project folder, its `.neptune`, `offline/`, or one run).

    A `run__*` folder that cannot be listed is unreadable: a run the export counts as failed."""
    for base in (path / ".neptune" / "offline", path / "offline", path):
        try:
            if not base.is_dir():
                continue
            if _is_run_folder(base):
                return RunFolders([base], [], [])
            entries = sorted(entry for entry in base.iterdir() if entry.is_dir())
        except OSError as error:
            return RunFolders([], [], [UnreadableRun(base, _reason(error))])
        found = RunFolders([], [], [])
        for folder in entries:
            try:
                if _is_run_folder(folder):
                    found.runs.append(folder)
                elif folder.name.startswith("run__") and _container(folder).kind == "run":
                    found.starting.append(folder)  # the client made it; its first operations are on their way
            except OSError as error:
                if folder.name.startswith("run__"):  # by its name a run; other containers are not exported
                    found.unreadable.append(UnreadableRun(folder, _reason(error)))
        if found.runs or found.unreadable:
            return found
    return RunFolders([], [], [])


def is_offline_folder(path: Path) -> bool:
    """True when `path` holds at least one offline run folder (readable or not)."""
    if not path.is_dir():
        return False
    found = locate_run_folders(path)
    return bool(found.runs or found.unreadable)


def operations(folder: Path) -> Iterator[tuple[dict[str, Any], Any] | None]:
    """Each logged operation (`obj` of a line) with its log time (`at`), in order; None for a line that
    does not parse. A last line cut short in a log written to within RUNNING_WINDOW is the one the client
    is writing: left for the next read, not counted."""
    for data_file in _data_files(folder):
        check_regular_file(data_file, "offline run log")  # a named pipe would wait for a writer forever
        with data_file.open(encoding="utf-8", errors="replace") as lines:
            written = datetime.fromtimestamp(os.fstat(lines.fileno()).st_mtime, UTC)
            for line in lines:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    entry = record["obj"], record.get("at")
                except (ValueError, KeyError, TypeError, RecursionError):
                    if not line.endswith("\n") and datetime.now(UTC) - written <= RUNNING_WINDOW:
                        continue
                    entry = None
                yield entry


def _apply(run: OfflineRun, op: dict[str, Any], last_step: dict[str, float]) -> None:
    """Apply one operation to the run being rebuilt (artifacts are not kept; an upload's file is named where
    it is, shared.neptune.files)."""
    kind, path = op.get("type"), "/".join(op.get("path", []))
    if kind in _ASSIGN:
        run.scalars[path] = _ASSIGN[kind](op["value"])
    elif kind == "AssignDatetime":
        run.scalars[path] = datetime.fromtimestamp(op["value"] / 1000, tz=UTC)
    elif kind == "AddStrings":
        run.string_sets.setdefault(path, set()).update(op["values"])
    elif kind == "RemoveStrings":
        run.string_sets.setdefault(path, set()).difference_update(op["values"])
    elif kind == "ClearStringSet":
        run.string_sets[path] = set()
    elif kind == "LogFloats":
        steps, values = run.series.setdefault(path, ([], []))
        times = run.series_times.setdefault(path, [])
        for point in op["values"]:
            value = float("nan") if point.get("value") is None else float(point["value"])
            step = point.get("step")
            if step is None:  # unnumbered: next after the last step, 0 first (order is what matters)
                step = last_step[path] + 1 if path in last_step else 0.0
            last_step[path] = float(step)
            steps.append(float(step))
            values.append(value)
            times.append(point.get("ts"))
    elif kind in ("LogStrings", "LogImages"):
        points = (run.strings if kind == "LogStrings" else run.images).setdefault(path, [])
        for point in op["values"]:
            step = point.get("step")
            if step is None:
                step = last_step[path] + 1 if path in last_step else 0.0
            last_step[path] = float(step)
            value = str(point["value"]) if kind == "LogStrings" else _image_json(point["value"])
            points.append((float(step), point.get("ts"), value))
    elif kind in ("ClearStringLog", "ClearImageLog"):
        (run.strings if kind == "ClearStringLog" else run.images)[path] = []
        last_step.pop(path, None)
    elif kind == "ClearFloatLog":
        run.series[path] = ([], [])
        run.series_times[path] = []
        last_step.pop(path, None)
    elif kind == "UploadFile":
        name = f"{path}.{op['ext']}" if op.get("ext") else path
        held = op.get("file_path") or str(run.folder / "upload_path" / op["tmp_file_name"])
        run.uploads[path] = [(name, Path(held))]
    elif kind == "UploadFileSet":
        added = upload_files(path, [str(pattern) for pattern in op["file_globs"]])
        run.uploads[path] = (run.uploads.get(path, []) if op.get("reset") in ("False", False) else []) + added
    elif kind == "DeleteAttribute":
        tables = (
            run.scalars,
            run.string_sets,
            run.series,
            run.series_times,
            run.strings,
            run.images,
            run.uploads,
        )
        for table in tables:
            table.pop(path, None)
        last_step.pop(path, None)


def _image_json(value: Any) -> str:
    """An image of a FileSeries as history_other's media JSON: the offline log holds the image itself
    (base64, `data`), its `name` and `description`; the client's own reader takes a bare string as data."""
    image = value if isinstance(value, dict) else {"data": value}
    fields = {name: image.get(name) for name in ("data", "name", "description")}
    return json.dumps({"_type": "image"} | fields, sort_keys=True)


def read_offline_run(folders: Sequence[Path]) -> OfflineRun:
    """Replay the operations of one run (one or more execution folders, oldest first)."""
    _, run_id, created, problem = _container(folders[0])
    run = OfflineRun(run_id=run_id, folder=folders[0], created_at=created)
    if problem:
        run.problems.append(problem)
    last_step: dict[str, float] = {}
    for folder in folders:
        for entry in operations(folder):
            run.started = True
            if entry is None:
                run.skipped_lines += 1
                continue
            op, at = entry
            try:
                _apply(run, op, last_step)
            except (KeyError, TypeError, ValueError):
                run.skipped_lines += 1
            if isinstance(at, int | float) and (run.last_at is None or at > run.last_at):
                run.last_at = float(at)
    # Clients up to 1.7 write no metadata.json and no operation times: each point's `ts` is all there is.
    point_times = [t for times in run.series_times.values() for t in times if isinstance(t, int | float)]
    if point_times and run.created_at is None:
        run.created_at = datetime.fromtimestamp(min(point_times), UTC).isoformat()
    if point_times and run.last_at is None:
        run.last_at = float(max(point_times))
    if run.skipped_lines:
        run.problems.append(
            f"offline run {run_id}: skipped {run.skipped_lines} unreadable operation(s) in {folders[0]}"
        )
    return run


class OfflineSource(NeptuneSource):
    """Offline runs of a `.neptune` folder; read once, kept in memory. The log holds no project name:
    `project` (workspace/project) is the one its runs are exported as."""

    detail = "neptune-offline"
    streams = frozenset({"history_other", "console", "system", "files"})  # the tidy streams it reads

    def __init__(self, path: Path, project: str | None = None, *, events: Events | None = None) -> None:
        super().__init__(split_project(project) if project else OFFLINE_PROJECT, project, events)
        self.path = path
        self._runs: dict[str, OfflineRun] | None = None
        self.unreadable: list[UnreadableRun] = []  # named and counted as failed runs, never skipped
        self.in_progress: list[str] = []  # run folders with no operation logged yet

    def _load(self) -> dict[str, OfflineRun]:
        """The runs, for a query: one that cannot be read fails it (an answer would silently lack it)."""
        runs = self._read()
        if self.unreadable:
            more = f" (and {len(self.unreadable) - 1} more)" if len(self.unreadable) > 1 else ""
            raise Incomplete(f"{self.unreadable[0]}{more}: its run would be missing from the answer")
        return runs

    def _read(self) -> dict[str, OfflineRun]:
        """The runs that can be read (an export names and counts the others)."""
        if self._runs is None:
            found = locate_run_folders(self.path)
            self.unreadable = list(found.unreadable)
            self.in_progress = [str(folder) for folder in found.starting]
            grouped: dict[str, list[Path]] = {}
            for folder in found.runs:
                run_id = _container(folder).id
                grouped.setdefault(run_id, []).append(folder)
            by_time = {
                run_id: sorted(fs, key=lambda f: _container(f).created or "")
                for run_id, fs in grouped.items()
            }
            self._runs = {}
            for run_id, folders in sorted(by_time.items()):
                try:
                    run = read_offline_run(folders)
                except OSError as error:  # permission denied, removed meanwhile: that run is lost, not all
                    self.unreadable.append(UnreadableRun(folders[0], _reason(error)))
                    continue
                if run.started:
                    self._runs[run_id] = run
                else:
                    self.in_progress.append(str(folders[0]))
            for run in self._runs.values():
                for problem in run.problems:
                    self.events.warn(problem)
            for folder in self.in_progress:
                self.events.note(f"{folder}: {IN_PROGRESS}")
        return self._runs

    def runs(self, *, refresh: bool = False) -> pl.DataFrame:
        if refresh:
            self._runs = None
        runs = self._load().values()
        return pl.DataFrame(
            {
                "run_id": [r.run_id for r in runs],
                "name": [r.scalars.get("sys/name") or r.run_id for r in runs],
                "state": [OFFLINE_STATE] * len(runs),
            },
            schema=RUNS_SCHEMA,
        )

    def run_ids(self) -> list[str]:
        return list(self._load())

    def points(self, asked: Asked) -> pl.LazyFrame:
        keys, run_ids = asked.keys, asked.run_ids
        wanted = set(run_ids) if run_ids is not None else None
        columns: dict[str, list[Any]] = {"run_id": [], "key": [], "step": [], "value": []}
        for run in self._load().values():
            if wanted is not None and run.run_id not in wanted:
                continue
            for key in keys:
                steps, values = run.series.get(key, ([], []))
                scalar = run.scalars.get(key)
                if not steps and isinstance(scalar, int | float) and not isinstance(scalar, bool):
                    steps, values = [None], [float(scalar)]
                columns["run_id"] += [run.run_id] * len(steps)
                columns["key"] += [key] * len(steps)
                columns["step"] += steps
                columns["value"] += values
        return pl.DataFrame(columns, schema=POINTS_SCHEMA).lazy()

    def attributes(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        runs = self._load()
        return {run_id: runs[run_id].attributes() if run_id in runs else {} for run_id in run_ids}

    def numeric_keys(self) -> list[str]:
        keys = set()
        for run in self._load().values():
            keys.update(run.series)
            keys.update(
                k for k, v in run.scalars.items() if isinstance(v, int | float) and not isinstance(v, bool)
            )
        return sorted(keys)

    def raw_run(self, run_id: str) -> OfflineRun | None:
        return self._load().get(run_id)

    def close(self) -> None:
        self._runs = None

    # ---------------------------------------------------------------- export

    def unreadable_entries(self) -> dict[str, str]:
        self._read()
        return {str(entry.path): entry.reason for entry in self.unreadable}

    def export_metadata(self, entity: str, project: str) -> dict[str, Any]:
        return super().export_metadata(entity, project) | {"runs_in_progress": self.in_progress}

    def export_runs(self) -> list[NeptuneRun]:
        found = []
        for run in self._read().values():
            last = {  # the value at the highest step; of equal steps the one logged last
                path: values[max(range(len(steps)), key=lambda i, steps=steps: (steps[i], i))]
                for path, (steps, values) in run.series.items()
                if steps
            }
            heartbeat = epoch_times([run.last_at])[0]
            found.append(NeptuneRun(run.run_id, run.attributes(), last, utc(run.created_at), heartbeat))
        return found

    def export_files(self, runs: Sequence[NeptuneRun]) -> Iterator[tuple[str, list[RunFile]]]:
        for record in runs:
            uploads = self._read()[record.run_id].uploads
            named = {name: held for files in uploads.values() for name, held in files}
            yield record.run_id, [local_file(name, held) for name, held in sorted(named.items())]

    def export_series(self, runs: Sequence[NeptuneRun], streams: frozenset[str]) -> Iterator[SeriesBatch]:
        numbers = bool(streams & {"history", "system"})
        others = bool(streams & {"history_other", "console"})
        for record in runs:  # a run at a time: it is read whole anyway
            run = self._read()[record.run_id]
            columns: dict[str, list[Any]] = {name: [] for name in SERIES_SCHEMA}
            for path, (steps, values) in run.series.items() if numbers else ():
                columns["run_id"] += [run.run_id] * len(steps)
                columns["key"] += [path] * len(steps)
                columns["step"] += steps
                columns["timestamp"] += epoch_times(run.series_times.get(path, []))
                columns["value"] += values
            logged = [("string", run.strings), ("media", run.images)] if others else []
            points = [
                (path, *point, kind)
                for kind, series in logged
                for path, texts in series.items()
                for point in texts
            ]
            strings = pl.DataFrame(
                {
                    "run_id": [run.run_id] * len(points),
                    "key": [point[0] for point in points],
                    "step": [point[1] for point in points],
                    "timestamp": epoch_times([point[2] for point in points]),
                    "type": [point[4] for point in points],
                    "value": [point[3] for point in points],
                },
                schema=OTHER_POINTS,
            )
            yield SeriesBatch(pl.DataFrame(columns, schema=SERIES_SCHEMA), strings)
