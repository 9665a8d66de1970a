"""Neptune runs as the run table holds them (the mapping is documented in docs/neptune_export.md), and
NeptuneSource, what the archive, offline and live sources share: describing runs and streaming them to the
export pipeline. Each source reads its runs and series its own way (`export_runs`, `export_series`)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import polars as pl

from shared.base.errors import describe, is_bug
from shared.base.events import Events
from shared.neptune.attributes import BOOKKEEPING, CONFIG_NAMESPACES, config_of, normalize_state
from shared.neptune.streams import OTHER_POINTS, console_lines, history_other, system_points
from shared.table.run_files import RunFile
from shared.table.schema import HISTORY_COLUMNS, SERIES_SCHEMA, RunRecord
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

_MONITORED_HOST = re.compile(r"monitoring/[^/]+/hostname")  # one per process, under its own hash


@dataclass
class NeptuneRun:
    """One run as any source holds it: simple attributes by path and each float series' last value."""

    run_id: str
    attributes: dict[str, Any]
    last_values: dict[str, float] = field(default_factory=dict)
    created_at: datetime | None = None  # used when the run has no sys/creation_time
    heartbeat_at: datetime | None = None  # used when it has neither sys/modification_time nor sys/ping_time


@dataclass
class SeriesBatch:
    """Series points of some runs, as a source reads them together: the float series (`numbers`,
    schema.SERIES_FRAME; the step may be the exporter's decimal), the series that are not numbers
    (`others`, streams.OTHER_POINTS), and how many points of each run were left out (`skipped`)."""

    numbers: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=SERIES_SCHEMA))
    others: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=OTHER_POINTS))
    skipped: dict[str, int] = field(default_factory=dict)


def utc(value: Any) -> datetime | None:
    """An aware UTC datetime from a datetime (naive = UTC), a pandas Timestamp or an ISO string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if hasattr(value, "to_pydatetime"):  # pandas' Timestamp (the live runs table)
        value = value.to_pydatetime()
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _string_set(value: Any) -> list[str]:
    """A string set as a sorted list; the live runs table joins it with commas."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return sorted({str(item).strip() for item in items} - {""})


def _plain(value: Any) -> Any:
    """A value JSON and the flattener take: datetimes as ISO text, string sets as sorted lists."""
    if isinstance(value, datetime):
        return utc(value).isoformat()
    if isinstance(value, set | frozenset | tuple | list):
        return sorted(str(item) for item in value)
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def epoch_times(values: Sequence[Any]) -> list[datetime | None]:
    """Epoch seconds as UTC datetimes (None for what is not a finite number)."""
    return [datetime.fromtimestamp(v, UTC) if is_number(v) and math.isfinite(v) else None for v in values]


def _config_namespace(path: str) -> str | None:
    return next((ns for ns in CONFIG_NAMESPACES if path.startswith(ns)), None)


def is_logged_value(path: str) -> bool:
    """A path the summary and history keep: neither the client's bookkeeping nor the config."""
    return not path.startswith(BOOKKEEPING) and _config_namespace(path) is None


def config_tree(attributes: dict[str, Any]) -> dict[str, Any]:
    """The config namespaces as one nested dict without the namespace: `parameters/model/type` → model.type.

    A path that clashes with one of an earlier namespace (CONFIG_NAMESPACES order) stays whole at the
    top, `config/lr` next to `lr`, so nothing is overwritten.
    """
    order = {ns: index for index, ns in enumerate(CONFIG_NAMESPACES)}
    config_paths = [(ns, path) for path in attributes if (ns := _config_namespace(path))]
    tree: dict[str, Any] = {}
    for namespace, path in sorted(config_paths, key=lambda item: (order[item[0]], item[1])):
        *parents, leaf = path[len(namespace) :].split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        if isinstance(node, dict) and leaf not in node:
            node[leaf] = _plain(attributes[path])
        else:
            tree[path] = _plain(attributes[path])
    return tree


def summary_of(run: NeptuneRun) -> dict[str, Any]:
    """Every other logged value by full path (W&B's summary keys look the same: `train/loss`)."""
    values = {path: _plain(value) for path, value in run.attributes.items()} | run.last_values
    return {path: values[path] for path in sorted(values) if is_logged_value(path)}


def run_state(attributes: dict[str, Any]) -> str:
    """`failed` when sys/failed is true, `running` while sys/state is Active, else `finished`."""
    if str(attributes.get("sys/failed")).strip().lower() == "true":
        return "failed"
    return "running" if normalize_state(attributes.get("sys/state")) == "active" else "finished"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def run_metadata(attributes: dict[str, Any]) -> dict[str, Any]:
    """The metadata core columns Neptune records: the host (`sys/hostname`, else a monitored process's),
    the entry point, and the commit (`source_code/git`: its commit id in a runs table); the rest is null."""
    monitored = (attributes[path] for path in sorted(attributes) if _MONITORED_HOST.fullmatch(path))
    return {
        "host": _text(attributes.get("sys/hostname")) or next(filter(None, map(_text, monitored)), None),
        "program": _text(attributes.get("source_code/entrypoint")),
        "git_commit": _text(attributes.get("source_code/git")),
    }


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    return {"true": True, "false": False}.get(text)


LINEAGE_PATHS = (
    "sys/experiment/name",
    "sys/experiment/is_head",
    "sys/forking/parent",
    "sys/forking/step",
    "sys/forking/depth",
)
FORK_MARK = "sys/forking/parent"  # only a forked run has it


def lineage_fields(attributes: dict[str, Any]) -> dict[str, Any]:
    """A Neptune 3 run's experiment and fork (the schema's `experiment` … `fork_depth`): the parent is named
    by its run id as the archive has it (its custom run id); each is None where the run has none."""
    parent = _text(attributes.get("sys/forking/parent"))
    step, depth = attributes.get("sys/forking/step"), attributes.get("sys/forking/depth")
    return {
        "experiment": _text(attributes.get("sys/experiment/name")),
        "is_head": _flag(attributes.get("sys/experiment/is_head")),
        "parent_run_id": parent,
        "fork_step": float(step) if parent and is_number(step) and math.isfinite(step) else None,
        "fork_depth": int(depth) if parent and is_number(depth) else None,
    }


def record_id(run: NeptuneRun) -> str:
    """A run's id in the run table: a Neptune 3 run's custom run id (neptune-exporter names its runs by it,
    and forks name their parents by it), else sys/id."""
    custom = run.attributes.get("sys/custom_run_id")
    if custom and custom == run.run_id:
        return run.run_id
    return str(run.attributes.get("sys/id") or run.run_id)


def run_record(run: NeptuneRun, workspace: str, project: str) -> RunRecord:
    """The run-table record of a Neptune run (the mapping is documented in docs/neptune_export.md)."""
    attributes = run.attributes
    run_id = record_id(run)
    created = utc(attributes.get("sys/creation_time")) or run.created_at
    seen = [utc(attributes.get(path)) for path in ("sys/modification_time", "sys/ping_time")]
    heartbeat = max((stamp for stamp in seen if stamp), default=run.heartbeat_at)
    runtime = attributes.get("sys/running_time")
    if not is_number(runtime) and created and heartbeat:
        runtime = (heartbeat - created).total_seconds()
    return RunRecord(
        id=run_id,
        entity=workspace,
        project=project,
        name=str(attributes.get("sys/name") or run_id),
        state=run_state(attributes),
        created_at=created,
        heartbeat_at=heartbeat,
        runtime_s=float(runtime) if is_number(runtime) else None,
        tags=_string_set(attributes.get("sys/tags")),
        group=",".join(_string_set(attributes.get("sys/group_tags"))) or None,
        user=attributes.get("sys/owner") or None,
        notes=attributes.get("sys/description") or None,
        **run_metadata(attributes),
        **lineage_fields(attributes),
        config=config_tree(attributes),
        summary=summary_of(run),
    )


def tidy_history(points: pl.DataFrame, ids: dict[str, str]) -> tuple[pl.DataFrame, int]:
    """Float-series points (run_id, key, step, timestamp, value) as history rows; also how many steps
    were fractional (Neptune steps are decimals, the history's are integers: they are rounded down)."""
    points = points.filter(~pl.any_horizontal(pl.col("key").str.starts_with(ns) for ns in BOOKKEEPING))
    step = pl.col("step").cast(pl.Float64)
    fractional = points.select((step != step.floor()).sum()).item() if points.height else 0
    tidy = points.select(
        pl.col("run_id").cast(pl.String).replace(ids),
        step.floor().cast(pl.Int64).alias("step"),
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")),
        pl.col("key").cast(pl.String),
        pl.col("value").cast(pl.Float64),
    )
    return tidy.cast(HISTORY_COLUMNS), fractional


OFFLINE_PROJECT = ("offline", "uncategorized")  # the offline log does not record its project


def split_project(project_id: str) -> ProjectKey:
    """`workspace/project` → (workspace, project); a bare name gets the `neptune` workspace."""
    workspace, _, name = project_id.strip().rpartition("/")
    return workspace or "neptune", name


class NeptuneSource:
    """What every Neptune source shares. A subclass reads its runs (`export_runs`, `attributes`) and their
    series points (`export_series`); this turns them into run records, tidy history and streams."""

    detail: ClassVar[str]
    updatable: ClassVar[bool] = False  # read in full every time; its exports keep no state
    streams: ClassVar[frozenset[str]] = frozenset()  # the tidy streams its `export_series` reads

    def __init__(self, key: ProjectKey, project_id: str | None, events: Events | None) -> None:
        self.key = key  # the (workspace, project) its runs are exported as
        self.project_id = project_id  # as Neptune names it, when known
        self.events = events or Events()
        self._fractional: int | None = None  # history points whose fractional step was rounded down

    def attributes(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Every simple (non-series) attribute of these runs, by path."""
        raise NotImplementedError

    def export_runs(self) -> list[NeptuneRun]:
        """Every run of the source, with its simple attributes and each float series' last value."""
        raise NotImplementedError

    def export_series(self, runs: Sequence[NeptuneRun], streams: frozenset[str]) -> Iterator[SeriesBatch]:
        """These runs' series points for the `streams` named (history, history_other, console, system), a
        batch at a time: the float series for history and, under `monitoring/`, the system metrics; the
        others for history_other and, `monitoring/*/stdout|stderr`, the console. A batch holds every point
        of each run it holds points of (a run's console output is split into lines in one piece)."""
        raise NotImplementedError

    def export_files(self, runs: Sequence[NeptuneRun]) -> Iterator[tuple[str, list[RunFile]]]:
        """Each of these runs' files (a source that lists them names "files" in its `streams`)."""
        return iter(())

    def lineage_attributes(self) -> dict[str, dict[str, Any]]:
        """The experiment and fork of each run that has one (`lineage_fields`, by the source's run id).
        Only a neptune-exporter archive of Neptune 3 runs has them: the other sources read Neptune 2 runs."""
        return {}

    def fork_attributes(self) -> dict[str, dict[str, Any]]:
        """`lineage_attributes` of the forked runs alone (a source may find those for less)."""
        return {run: fields for run, fields in self.lineage_attributes().items() if fields["parent_run_id"]}

    def unreadable_entries(self) -> dict[str, str]:
        """The files of the source left out because they cannot be read (path → why): each is a run lost."""
        return {}

    def describe(self, run_ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        attributes = self.attributes(list(run_ids))
        return {
            run_id: (str(attributes[run_id].get("sys/name") or run_id), config_of(attributes[run_id]))
            for run_id in run_ids
        }

    def export_items(self, request: ExportRequest) -> Iterator[ExportItem]:
        self.events.note(f"reading {'/'.join(self.key)} ({self.detail})")
        runs = self.export_runs()
        yield Reported(self.key, len(runs))
        for entry, reason in self.unreadable_entries().items():
            yield Unreadable(f"{'/'.join(self.key)}: cannot read {entry}: {reason}", entry, self.key)
        ids: dict[str, str] = {}  # the source's run id -> the record's (sys/id)
        history_of: list[NeptuneRun] = []
        files_of: list[NeptuneRun] = []
        with self.events.progress("runs", len(runs), verb="mapped") as progress:
            for run in runs:
                progress.advance()
                try:
                    record = run_record(run, *self.key)
                except Exception as error:  # one run's odd attributes must not cost the project
                    if is_bug(error):
                        raise
                    reason = f"its attributes could not be read ({describe(error)})"
                    yield RunFailed(self.key, run.run_id, reason)
                    continue
                if not request.selects(record):
                    continue
                ids[run.run_id] = record.id
                yield record
                if any(request.wants_stream(name, record) for name in ("history_other", "console", "system")):
                    history_of.append(run)  # every stream asked for is read of the runs whose history is
                if request.wants_files(record):
                    files_of.append(run)
        for run_id, files in self.export_files(files_of) if files_of else ():
            yield RunFiles(self.key, ids[run_id], files)
        self._fractional = None
        history = request.include_history
        console, system = "console" in request.streams, "system" in request.streams
        wanted = {run.run_id for run in history_of}
        fractional_steps = 0
        streams = frozenset({"history", "history_other"} if history else ()) | (
            request.streams & {"console", "system"}
        )
        for batch in self.export_series(history_of, streams) if history_of else ():
            points, texts = batch.numbers, batch.others
            if len(wanted) < len(runs):  # the files hold a run's history only with its row
                points = points.filter(pl.col("run_id").cast(pl.String).is_in(list(wanted)))
                texts = texts.filter(pl.col("run_id").cast(pl.String).is_in(list(wanted)))
            if system:
                yield StreamChunk("system", system_points(points, ids))
            if history:
                frame, fractional = tidy_history(points, ids)
                fractional_steps += fractional
                skipped = {ids[run]: count for run, count in batch.skipped.items() if run in wanted}
                yield HistoryChunk(frame, skipped)
                yield StreamChunk("history_other", history_other(texts, ids))
            if console:
                yield StreamChunk("console", console_lines(texts, ids))
        if not history:
            return
        self._fractional = fractional_steps
        if self._fractional:
            self.events.warn(
                f"{'/'.join(self.key)}: {self._fractional} history points had fractional steps, rounded"
                " down to integers"
            )

    def export_metadata(self, entity: str, project: str) -> dict[str, Any]:
        metadata = {"source": "neptune", "neptune_project": self.project_id}
        if self._fractional is not None:
            metadata["fractional_steps_rounded_down"] = self._fractional
        return metadata
