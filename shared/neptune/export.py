"""Neptune runs (neptune-exporter archive, .neptune offline folder, live server) → the W&B exporter's files."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from shared.base.concurrency import bounded_map
from shared.base.errors import UsageError, describe
from shared.cli.terminal import ItemProgress, log, warn
from shared.export.project import ProjectExport, ProjectResult
from shared.neptune.archive import ArchiveSource, find_project_folder, project_folders
from shared.neptune.attributes import CONFIG_NAMESPACES, normalize_state
from shared.neptune.live import LiveSource
from shared.neptune.offline import OfflineSource
from shared.neptune.sources import check_project_names, source_kind, source_path
from shared.table.schema import HISTORY_COLUMNS, RunRecord
from shared.table.source import RunSource

# Written by the client itself: sys/ becomes the core columns; hardware monitoring (paths carry a
# per-process hash, so every run would add its own columns) and source-code records are left out.
BOOKKEEPING = ("sys/", "monitoring/", "source_code/")
OFFLINE_PROJECT = ("offline", "uncategorized")  # the offline log does not record its project
ARCHIVE_FILES_PER_READ = 256  # archive files read at once for history: bounds memory on big archives


@dataclass
class NeptuneRun:
    """One run as any source holds it: simple attributes by path and each float series' last value."""

    run_id: str
    attributes: dict[str, Any]
    last_values: dict[str, float] = field(default_factory=dict)
    created_at: datetime | None = None  # used when the run has no sys/creation_time
    heartbeat_at: datetime | None = None  # used when it has neither sys/modification_time nor sys/ping_time


def _utc(value: Any) -> datetime | None:
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
        return _utc(value).isoformat()
    if isinstance(value, set | frozenset | tuple | list):
        return sorted(str(item) for item in value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _config_namespace(path: str) -> str | None:
    return next((ns for ns in CONFIG_NAMESPACES if path.startswith(ns)), None)


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
    return {
        path: values[path]
        for path in sorted(values)
        if not path.startswith(BOOKKEEPING) and _config_namespace(path) is None
    }


def run_state(attributes: dict[str, Any]) -> str:
    """`failed` when sys/failed is true, `running` while sys/state is Active, else `finished`."""
    if str(attributes.get("sys/failed")).strip().lower() == "true":
        return "failed"
    return "running" if normalize_state(attributes.get("sys/state")) == "active" else "finished"


def run_record(run: NeptuneRun, workspace: str, project: str) -> RunRecord:
    """The run-table record of a Neptune run (the mapping is documented in docs/neptune_export.md)."""
    attributes = run.attributes
    run_id = str(attributes.get("sys/id") or run.run_id)
    created = _utc(attributes.get("sys/creation_time")) or run.created_at
    seen = [_utc(attributes.get(path)) for path in ("sys/modification_time", "sys/ping_time")]
    heartbeat = max((stamp for stamp in seen if stamp), default=run.heartbeat_at)
    runtime = attributes.get("sys/running_time")
    if not _is_number(runtime) and created and heartbeat:
        runtime = (heartbeat - created).total_seconds()
    return RunRecord(
        id=run_id,
        entity=workspace,
        project=project,
        name=str(attributes.get("sys/name") or run_id),
        state=run_state(attributes),
        created_at=created,
        heartbeat_at=heartbeat,
        runtime_s=float(runtime) if _is_number(runtime) else None,
        tags=_string_set(attributes.get("sys/tags")),
        group=",".join(_string_set(attributes.get("sys/group_tags"))) or None,
        user=attributes.get("sys/owner") or None,
        notes=attributes.get("sys/description") or None,
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


class RunReader(Protocol):
    """What the export needs from a source: its runs, then (optionally) their float-series points."""

    detail: str
    source: RunSource  # closed when the project is done

    def runs(self) -> list[NeptuneRun]: ...

    def history(self, runs: Sequence[NeptuneRun]) -> Iterator[tuple[pl.DataFrame, int]]:
        """Frames of (run_id, key, step, timestamp, value) and how many non-float points were left out."""
        ...


class ArchiveReader:
    """One project folder of a neptune-exporter archive, read with a few lazy scans."""

    detail = "neptune-archive"

    def __init__(self, source: ArchiveSource) -> None:
        self.source = source

    def _series_rows(self, files: Sequence[str] | None = None) -> pl.LazyFrame:
        return self.source._scan(files).filter(pl.col("step").is_not_null())

    def runs(self) -> list[NeptuneRun]:
        run_ids = self.source.runs()["run_id"].to_list()
        attributes = self.source.attributes(run_ids)
        last = (
            self._series_rows()
            .filter(pl.col("attribute_type") == "float_series")
            .group_by("run_id", "attribute_path")
            .agg(
                pl.col("float_value").sort_by(pl.col("step").cast(pl.Float64)).last()
            )  # streams; arg_max did not
            .sort("run_id", "attribute_path")
            .collect(engine="streaming")
        )
        last_values: dict[str, dict[str, float]] = {}
        for run_id, path, value in last.iter_rows():
            last_values.setdefault(run_id, {})[path] = value
        return [NeptuneRun(r, attributes[r], last_values.get(r, {})) for r in run_ids]

    def history(self, runs: Sequence[NeptuneRun]) -> Iterator[tuple[pl.DataFrame, int]]:
        files = self.source.files
        with ItemProgress("archive files", len(files), verb="read") as progress:
            for start in range(0, len(files), ARCHIVE_FILES_PER_READ):
                chunk = files[start : start + ARCHIVE_FILES_PER_READ]
                rows = self._series_rows(chunk).select(
                    "run_id",
                    pl.col("attribute_path").alias("key"),
                    "step",
                    "timestamp",
                    # neptune-exporter's pandas conversion stores a NaN point as null
                    pl.col("float_value").fill_null(math.nan).alias("value"),
                    (pl.col("attribute_type") == "float_series").alias("is_float"),
                )
                frame = rows.collect()
                yield frame.filter("is_float").drop("is_float"), frame.height - frame["is_float"].sum()
                progress.advance(len(chunk))


def _epoch_seconds(values: Sequence[Any]) -> list[datetime | None]:
    return [datetime.fromtimestamp(v, UTC) if _is_number(v) and math.isfinite(v) else None for v in values]


class OfflineReader:
    """The runs of a .neptune folder, replayed from their operation logs."""

    detail = "neptune-offline"

    def __init__(self, source: OfflineSource) -> None:
        self.source = source

    def runs(self) -> list[NeptuneRun]:
        found = []
        for run_id in self.source.run_ids():
            run = self.source.raw_run(run_id)
            last = {  # the value at the highest step; of equal steps the one logged last
                path: values[max(range(len(steps)), key=lambda i, steps=steps: (steps[i], i))]
                for path, (steps, values) in run.series.items()
                if steps
            }
            heartbeat = _epoch_seconds([run.last_at])[0]
            found.append(NeptuneRun(run_id, run.attributes(), last, _utc(run.created_at), heartbeat))
        return found

    def history(self, runs: Sequence[NeptuneRun]) -> Iterator[tuple[pl.DataFrame, int]]:
        for record in runs:
            run = self.source.raw_run(record.run_id)
            columns: dict[str, list[Any]] = {
                "run_id": [],
                "key": [],
                "step": [],
                "timestamp": [],
                "value": [],
            }
            for path, (steps, values) in run.series.items():
                columns["run_id"] += [run.run_id] * len(steps)
                columns["key"] += [path] * len(steps)
                columns["step"] += steps
                columns["timestamp"] += _epoch_seconds(run.series_times.get(path, []))
                columns["value"] += values
            yield pl.DataFrame(columns, schema=_POINTS), 0  # the replay keeps float series only


_POINTS = {
    "run_id": pl.String,
    "key": pl.String,
    "step": pl.Float64,
    "timestamp": pl.Datetime("us", "UTC"),
    "value": pl.Float64,
}


class LiveReader:
    """A project on a Neptune server: the runs table once, then each float series once (with history)."""

    detail = "neptune-live"

    def __init__(self, source: LiveSource, workers: int) -> None:
        self.source, self.workers = source, workers

    def runs(self) -> list[NeptuneRun]:
        run_ids = self.source.run_ids()
        attributes = self.source.attributes(run_ids)
        # The table holds each series' last value: it lands in the summary with the other attributes.
        return [NeptuneRun(run_id, attributes[run_id]) for run_id in run_ids]

    def _fetch(self, pair: tuple[str, str]) -> pl.DataFrame | None:
        run_id, path = pair
        values = self.source.fetch_values(run_id, path, timestamps=True)
        if values is None:
            return None
        # The client gives naive local times (datetime.fromtimestamp); .timestamp() reads them back as local.
        stamps = [t.to_pydatetime().timestamp() for t in values["timestamp"]] if "timestamp" in values else []
        return pl.DataFrame(
            {
                "run_id": [run_id] * len(values),
                "key": [path] * len(values),
                "step": [float(s) for s in values["step"]],
                "timestamp": _epoch_seconds(stamps) if stamps else [None] * len(values),
                "value": [float(v) for v in values["value"]],
            },
            schema=_POINTS,
        )

    def history(self, runs: Sequence[NeptuneRun]) -> Iterator[tuple[pl.DataFrame, int]]:
        pairs = [
            (run.run_id, path)
            for run in runs
            for path, value in run.attributes.items()
            if _is_number(value) and not path.startswith(BOOKKEEPING) and _config_namespace(path) is None
        ]
        with ItemProgress("series", len(pairs)) as progress:
            for _pair, frame in bounded_map(self._fetch, pairs, self.workers):
                progress.advance()
                if frame is not None:
                    yield frame, 0


@dataclass
class ExportTarget:
    """One Neptune project to export and where its runs come from."""

    workspace: str
    project: str
    reader: RunReader
    project_id: str | None  # as Neptune names it (workspace/project), when known


def split_project(project_id: str) -> tuple[str, str]:
    """`workspace/project` → (workspace, project); a bare name gets the `neptune` workspace."""
    workspace, _, name = project_id.strip().rpartition("/")
    return workspace or "neptune", name


def archive_targets(path: Path, projects: Sequence[str]) -> list[ExportTarget]:
    """The named projects of an archive (an unknown one is a usage error naming those present), else all."""
    if projects:
        found = [find_project_folder(path, project) for project in projects]
    else:
        found = [find_project_folder(folder, None) for folder in project_folders(path)]
    targets = []
    for folder, project_id in found:
        workspace, name = split_project(project_id or folder.name)
        source = ArchiveSource(folder)
        source.check()  # every part, before anything is written
        targets.append(ExportTarget(workspace, name, ArchiveReader(source), project_id))
    return targets


def export_targets(
    projects: Sequence[str], source: str | Path | None, *, api_token: str | None, workers: int
) -> list[ExportTarget]:
    """What to export, checked before anything is fetched or written (token, folders, project names)."""
    check_project_names(projects)
    if source is None:
        if not projects:
            raise UsageError("name a Neptune project (-p workspace/project) or a folder (--source PATH)")
        return [
            ExportTarget(*split_project(p), LiveReader(LiveSource(p, api_token, workers=workers), workers), p)
            for p in projects
        ]
    source = source_path(source)
    if source_kind(source) == "archive":
        return archive_targets(source, projects)
    if len(projects) > 1:
        raise UsageError(
            "offline runs go to one project: give at most one -p with --source on a .neptune folder"
        )
    workspace, name = split_project(projects[0]) if projects else OFFLINE_PROJECT
    return [
        ExportTarget(workspace, name, OfflineReader(OfflineSource(source)), projects[0] if projects else None)
    ]


def export_project(
    target: ExportTarget, folder: Path, *, include_history: bool, metadata: dict[str, Any]
) -> ProjectResult:
    """Read one project's runs (and history) and write its files; nothing is left half-written."""
    metadata = {
        "source": "neptune",
        "source_detail": target.reader.detail,
        "neptune_project": target.project_id,
        **metadata,
    }
    if include_history:
        metadata["fractional_steps_rounded_down"] = 0
    export = ProjectExport(
        folder, target.workspace, target.project, include_history=include_history, metadata=metadata
    )
    try:
        log(f"reading {target.workspace}/{target.project} ({target.reader.detail})")
        runs = target.reader.runs()
        export.runs_reported = len(runs)
        ids: dict[str, str] = {}
        with ItemProgress("runs", len(runs), verb="mapped") as progress:
            for run in runs:
                progress.advance()
                try:
                    record = run_record(run, target.workspace, target.project)
                except Exception as error:  # one run's odd attributes must not cost the project
                    export.fail_run(run.run_id, f"its attributes could not be read ({describe(error)})")
                    continue
                ids[run.run_id] = record.id
                export.add_run(record)
        if include_history:
            for points, skipped in target.reader.history(runs):
                if export.failed_runs:  # the files hold a run's history only with its row
                    points = points.filter(~pl.col("run_id").cast(pl.String).is_in(list(export.failed_runs)))
                frame, fractional = tidy_history(points, ids)
                export.add_history(frame, skipped)
                export.metadata["fractional_steps_rounded_down"] += fractional
            if export.metadata["fractional_steps_rounded_down"]:
                warn(
                    f"{target.workspace}/{target.project}: {export.metadata['fractional_steps_rounded_down']} "
                    "history points had fractional steps, rounded down to integers"
                )
        return export.finish()
    except BaseException:
        export.abort()
        raise
    finally:
        target.reader.source.close()
