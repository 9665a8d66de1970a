"""The source contract: what every run source gives queries and exports.

Five sources implement all of it: W&B's API and offline run logs (shared.wandb.sources), Neptune's archives,
offline folders and live servers (shared.neptune). Folders written by the exporters are a query source too
(shared.table.export_folder). A query reads the runs, their names and configs, and the numeric points of the
metrics it needs (`QuerySource`); an export streams every run as a record, then its tidy history
(`ExportSource.export_items`), and the pipeline in shared.export writes the files. Frames use plain run ids
and metric keys as logged; the frames' schemas are in shared.table.schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from shared.table.run_files import RunFile
from shared.table.schema import RunRecord

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

ProjectKey = tuple[str, str]  # (entity or workspace, project)


class Asked(NamedTuple):
    """The points a query asks a source for."""

    keys: Sequence[str]
    run_ids: Sequence[str] | None = None  # None: every run
    series: bool = True  # False: each series' last value will do (a runs table or summary has it)
    required: Sequence[str] = ()  # runs lacking one of these may be left out: they cannot be ranked


class QuerySource(Protocol):
    """What a top-k query reads (shared.query.api.TopkQuery)."""

    def runs(self, *, refresh: bool = False) -> pl.DataFrame:
        """Every run: run_id, name, state (schema.RUNS_SCHEMA), cached until `refresh`."""
        ...

    def run_ids(self) -> list[str]:
        """Every run id (cheap once points were read: an archive notes them during that pass)."""
        ...

    def describe(self, run_ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Each run's name and config."""
        ...

    def points(self, asked: Asked) -> pl.LazyFrame:
        """Numeric points (schema.POINTS_SCHEMA) of the keys asked for; a single number has step null."""
        ...

    def numeric_keys(self) -> list[str]:
        """Keys that hold numbers in some run (for suggestions when a name is unknown)."""
        ...

    def raw_run(self, run_id: str) -> Any:
        """The closest thing to the run object this source has."""
        ...

    def close(self) -> None:
        """Release whatever the source opened and forget what it cached."""
        ...


@runtime_checkable
class SummarySource(Protocol):
    """A source that can answer an aggregation from stored per-series summaries (archives)."""

    def summary_points(
        self, keys: Sequence[str], run_ids: Sequence[str] | None, aggregation: str, n_steps: int
    ) -> pl.LazyFrame | None:
        """Points that aggregate like the full series of these keys, or None to read the points."""
        ...


class Changes(NamedTuple):
    """An incremental export's view of a project's files: when they were made (less a margin for clocks)
    and the heartbeat each complete run had then. A run is fetched again when it is new, or was created or
    seen since `cutoff`; its history when it is new or its heartbeat moved."""

    cutoff: datetime
    heartbeats: Mapping[str, str | None]  # run id -> heartbeat_at (ISO, UTC) as the files hold it

    def includes(self, record: RunRecord) -> bool:
        moments = [moment for moment in (record.created_at, record.heartbeat_at) if moment is not None]
        return record.id not in self.heartbeats or any(moment >= self.cutoff for moment in moments)

    def history_moved(self, record: RunRecord) -> bool:
        return record.id not in self.heartbeats or self.heartbeats[record.id] != iso_utc(record.heartbeat_at)


def iso_utc(moment: datetime | None) -> str | None:
    """A time as the export state writes it (ISO, UTC)."""
    return moment.astimezone(UTC).isoformat() if moment is not None else None


class ProjectPlan(NamedTuple):
    """What an export asks of one project's runs."""

    since: datetime | None = None  # only runs created since
    changes: Changes | None = None  # incremental: only runs changed since the files were made

    def selects(self, record: RunRecord) -> bool:
        if self.since is not None and record.created_at is not None and record.created_at < self.since:
            return False
        return self.changes is None or self.changes.includes(record)

    def wants_history(self, record: RunRecord) -> bool:
        return self.changes is None or self.changes.history_moved(record)


class ExportRequest(NamedTuple):
    """What an export asks of a source. `plan` says, per project, which runs to hand over (a source filters
    on its server where it can, else with `selects`) and whose history to read (`wants_history`)."""

    include_history: bool = False
    history_keys: frozenset[str] | None = None
    plan: Callable[[str, str], ProjectPlan] = lambda entity, project: ProjectPlan()
    streams: frozenset[str] = frozenset()  # names of schema.OPTIONAL_STREAMS asked for
    include_files: str | None = None  # --include-files: a RunFile's `read` is needed (else it may be None)

    def selects(self, record: RunRecord) -> bool:
        return self.plan(record.entity, record.project).selects(record)

    def wants_history(self, record: RunRecord) -> bool:
        return self.include_history and self.plan(record.entity, record.project).wants_history(record)

    def wants_stream(self, stream: str, record: RunRecord) -> bool:
        """Whether `record`'s rows of the tidy stream named `stream` (console, system) are to be read: a
        stream asked for, of a run whose history is read in this export (an update re-reads changed runs)."""
        wanted = stream in self.streams or (stream == "history_other" and self.include_history)
        return wanted and self.plan(record.entity, record.project).wants_history(record)

    def wants_files(self, record: RunRecord) -> bool:
        """Whether `record`'s files are to be listed: every export lists them, an update those of the runs
        whose history it reads again (the stored listing of the others is kept)."""
        return self.plan(record.entity, record.project).wants_history(record)


class HistoryChunk(NamedTuple):
    """Tidy history rows (schema.HISTORY) of runs already handed over, and how many values of each run
    were left out for not being numbers."""

    rows: pa.Table | pl.DataFrame
    skipped: Mapping[str, int] = MappingProxyType({})
    project: ProjectKey | None = None  # whose runs: needed only from a source that holds several projects


class StreamChunk(NamedTuple):
    """Tidy rows of a stream beside history (schema.STREAMS, by name: history_other, console, system) of
    runs already handed over."""

    stream: str
    rows: pa.Table | pl.DataFrame
    project: ProjectKey | None = None  # whose runs: needed only from a source that holds several projects


class RunFiles(NamedTuple):
    """The files a run already handed over holds (schema.FILES rows, and `--include-files` keeps those it
    matches)."""

    project: ProjectKey
    run_id: str
    files: Sequence[RunFile]


class RunFailed(NamedTuple):
    """A run (or a part of it) the source could not read: the export names it and ends incomplete. `part`:
    what of a run that was exported is missing (history, console, system metrics, metadata, files
    listing)."""

    project: ProjectKey
    run_id: str
    reason: str
    part: str = "history"


class Reported(NamedTuple):
    """The source's own count of a project's runs (all of them under `since`, changed or not)."""

    project: ProjectKey
    count: int


class Unreadable(NamedTuple):
    """A file or folder of the source that could not be read at all. The export names it, counts it as a
    run reported and failed (keyed by `entry`, its path) and ends incomplete; in `project` when the source
    knows whose it is, else in every project of the source (whose runs it held is not known)."""

    message: str
    entry: str = ""
    project: ProjectKey | None = None


ExportItem = RunRecord | HistoryChunk | StreamChunk | RunFiles | RunFailed | Reported | Unreadable


class ExportSource(Protocol):
    """What the export pipeline reads (shared.export.pipeline)."""

    detail: str  # the source's kind in metadata (`source_detail`): wandb-api, neptune-archive, ...
    # The tidy streams beside history it reads (schema.STREAMS' names); a source without it reads none.
    streams: ClassVar[frozenset[str]]
    updatable: ClassVar[bool]  # filters changed runs itself: its exports keep the state --incremental reads

    def export_items(self, request: ExportRequest) -> Iterator[ExportItem]:
        """Every selected run as a record, each run's history (if asked) after its record, failures, and
        each project's Reported count; in whatever order and concurrency suits the source."""
        ...

    def export_metadata(self, entity: str, project: str) -> dict[str, Any]:
        """What a project's metadata should also say about this source (versions, paths, what was lost)."""
        ...

    def close(self) -> None: ...


class RunSource(QuerySource, ExportSource, Protocol):
    """The whole contract: what every tracker's source implements."""
