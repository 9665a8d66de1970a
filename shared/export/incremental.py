"""Incremental (cron) exports: per-project state beside the files, the changes a source is asked for, and
the stored runs and history merged with the fetched ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from shared.base.errors import BadInput
from shared.base.events import Events
from shared.base.limits import parse_since, read_text_file
from shared.base.storage import write_json
from shared.export.project import ExportFiles, ProjectExport, ProjectResult, export_files
from shared.table.exports import history_file_of
from shared.table.flatten import parse_object
from shared.table.history import ROW_GROUP
from shared.table.schema import CORE, FILES, HISTORY_SCHEMA, RAW_JSON_COLUMNS, SECTIONS, RunRecord
from shared.table.source import Changes, iso_utc

if TYPE_CHECKING:
    import pyarrow as pa

STATE_FORMAT = 1
# Runs whose last change lies up to this long before the previous export started are fetched again:
# the cutoff is our clock, the run times are the server's, and a change may land while we page.
CLOCK_MARGIN = timedelta(minutes=10)
# What an update reads back from the runs file; a core column added since the file was written reads as null.
RUNS_FILE_COLUMNS = [*CORE, *RAW_JSON_COLUMNS]
REQUIRED_COLUMNS = ["id", "created_at", "heartbeat_at", *RAW_JSON_COLUMNS]  # what makes it this export's


@dataclass
class ProjectState:
    """What one project's files hold: the options they were made with, from when, and each run's last change."""

    options: dict[str, Any]  # a change of options means the files cannot be updated, only replaced
    since: str | None  # the created-since boundary (ISO), resolved once at the first export
    exported_at: str  # when the export that wrote the files started (ISO, UTC)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> heartbeat_at, skipped values

    @classmethod
    def load(cls, path: Path, events: Events) -> ProjectState | None:
        """The state in `path`; None when there is none or it is unreadable (then a full export is made)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
                raise ValueError(f"not an export state of format {STATE_FORMAT}")
            state = cls(data["options"], data["since"], data["exported_at"], data["runs"])
            state.check()
            return state
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
            events.warn(
                f"{path}: unreadable export state ({str(error)[:200]}); exporting the project in full"
            )
            return None

    def check(self) -> None:
        """ValueError unless every field has the type and form an export writes."""
        if not isinstance(self.options, dict) or not isinstance(self.runs, dict):
            raise ValueError("options and runs must be objects")
        for moment in (self.since, self.exported_at):
            if moment is not None:
                datetime.fromisoformat(moment)  # ValueError / TypeError on anything else
        for run in self.runs.values():
            if not isinstance(run, dict) or not isinstance(run.get("skipped_history_values", 0), int):
                raise ValueError("a run's entry is not an object with a count of skipped values")
            if not isinstance(run.get("heartbeat_at"), str | None):
                raise ValueError("a run's heartbeat is not a time")
            if run.get("heartbeat_at"):
                datetime.fromisoformat(run["heartbeat_at"])  # read when the state's own time is not trusted

    def save(self, path: Path) -> None:
        write_json({"format": STATE_FORMAT, **self.__dict__}, path)


def stored_records(runs_path: Path) -> list[RunRecord]:
    """The runs of an exported runs parquet, rebuilt losslessly from the core columns and the raw JSON."""
    import pyarrow.parquet as pq

    present = set(pq.read_schema(runs_path).names)
    frame = pl.read_parquet(
        runs_path, glob=False, columns=[name for name in RUNS_FILE_COLUMNS if name in present]
    )
    records = []
    for row in frame.iter_rows(named=True):
        sections: dict[str, Any] = {}
        for section in SECTIONS:
            value = parse_object(row[section.raw])[0]
            sections[section.field] = value or {}
            sections[f"raw_{section.field}"] = None if value is not None else row[section.raw]
        records.append(RunRecord(**{name: row.get(name) for name in CORE}, **sections))
    return records


def stored_history(history_path: Path, leave_out: set[str]) -> Iterator[pa.Table]:
    """The rows of an exported history parquet, a row group's worth at a time, without those of the runs
    in `leave_out` (arrow throughout: the history writer takes these tables as they are)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    dropped = pa.array(sorted(leave_out), pa.string())
    with pq.ParquetFile(history_path) as source:
        for batch in source.iter_batches(batch_size=ROW_GROUP):
            yield pa.Table.from_batches([batch]).filter(
                pc.invert(pc.is_in(batch["run_id"], value_set=dropped))
            )


@dataclass
class ProjectUpdate:
    """Bringing one project's files up to date: which runs to fetch, and what to keep from the files."""

    state: ProjectState
    files: ExportFiles
    include_history: bool

    @cached_property
    def changes(self) -> Changes:
        """What the source is asked for: runs changed since the previous export started (less
        CLOCK_MARGIN), and runs the files do not hold complete."""
        cutoff = datetime.fromisoformat(self.state.exported_at) - CLOCK_MARGIN
        return Changes(cutoff, {run_id: run.get("heartbeat_at") for run_id, run in self.state.runs.items()})

    def merge_into(self, export: ProjectExport) -> None:
        """Complete `export` (holding the fetched runs) with the stored runs and history it does not replace."""
        fetched = {record.id for record in export.records}
        kept = [record for record in stored_records(self.files.runs) if record.id not in fetched]
        # Oldest first, as the server lists them; stored before fetched where creation times are equal.
        export.records = sorted(
            kept + export.records, key=lambda r: r.created_at or datetime.min.replace(tzinfo=UTC)
        )
        refetched = {
            record.id
            for record in export.records
            if record.id in fetched and self.changes.history_moved(record)
        }
        # Every stream's stored rows, less those of the runs whose history (and streams) are read again.
        for name, path in export.stream_paths.items():
            for frame in stored_history(path, refetched):
                export.add_stream(name, frame)
        if not self.include_history:
            return
        for frame in stored_history(self.files.history, refetched):
            export.add_history(frame)
        export.skipped_values += sum(
            stored.get("skipped_history_values", 0)
            for run_id, stored in self.state.runs.items()
            if run_id not in refetched
        )


def plan_update(
    folder: Path, entity: str, project: str, tracker: str, options: dict[str, Any], events: Events
) -> tuple[ProjectUpdate | None, str]:
    """The update of a project's existing files, or None (and why) when it must be exported in full."""
    import pyarrow.parquet as pq

    files = export_files(folder, entity, project, tracker)  # never another tracker's files and state
    state = ProjectState.load(files.state, events)
    if state is None:
        return None, "no previous export state"
    if state.options != options:
        return None, f"options changed since the previous export ({state.options} -> {options})"
    if not _cutoff_in_the_past(state, files.state, events):
        return None, "the export state's time lies in the future and it records no run time to start from"
    _since_in_the_past(state, options.get("since"), files.state, events)
    streams = [
        *(["history", "history_other"] if options.get("include_history") else []),
        *options.get("streams", []),
        "files",  # every export lists run files
    ]
    kept = [files.runs, *(getattr(files, name) for name in streams)]
    missing = [path.name for path in (*kept, files.metadata) if not path.is_file()]
    if missing:
        return None, f"files of the previous export are missing: {', '.join(missing)}"
    columns_of = {files.runs: REQUIRED_COLUMNS, files.files: list(FILES.columns)}
    if options.get("include_history"):
        columns_of[files.history] = HISTORY_SCHEMA.names
    for path, columns in columns_of.items():
        try:
            names = pq.read_schema(path).names
        except (OSError, ValueError) as error:  # cut short or overwritten by something else
            return None, f"{path.name} is unreadable ({error})"
        if lacking := [name for name in columns if name not in names]:  # another file put in its place
            return None, f"{path.name} is not this export's (no {', '.join(lacking[:5])} column)"
    if not set(state.runs) <= set(pl.read_parquet(files.runs, glob=False, columns=["id"])["id"].to_list()):
        return None, f"{files.runs.name} lacks runs the export state records (an older file put back?)"
    return ProjectUpdate(state, files, bool(options.get("include_history"))), ""


def _cutoff_in_the_past(state: ProjectState, path: Path, events: Events) -> bool:
    """Whether `state` can be updated from a time already past. A previous export that says it started
    later than now (a host whose clock ran ahead, a folder copied from one) would make every update
    find no change: its time is replaced by the newest heartbeat it records (the server's clock), with
    a warning; False when it records none."""
    now = datetime.now(UTC)
    if _utc(state.exported_at) <= now:
        return True
    newest = max(
        (_utc(run["heartbeat_at"]) for run in state.runs.values() if run.get("heartbeat_at")), default=None
    )
    safe = min(newest, now) if newest is not None else None
    events.warn(
        f"{path}: the previous export says it started at {state.exported_at}, later than now"
        f" ({now.isoformat(timespec='seconds')}): a clock ahead or a copied folder; not trusted,"
        + (f" fetching the runs changed since {safe.isoformat()} instead" if safe else " exporting in full")
    )
    if safe is not None:
        state.exported_at = safe.isoformat()
    return safe is not None


def _since_in_the_past(state: ProjectState, since_text: str | None, path: Path, events: Events) -> None:
    """A --since duration (`7d`) is resolved once, at the first export; resolved on a clock ahead, the
    boundary lies in the future and would leave out every run created since: it is resolved again from
    now, with a warning. A date the user wrote stays as written."""
    if state.since is None or since_text is None or _utc(state.since) <= (now := datetime.now(UTC)):
        return
    again = parse_since(since_text, now)
    if again == _utc(state.since):
        return
    events.warn(
        f"{path}: the previous export resolved --since {since_text} to {state.since}, later than now"
        f" ({now.isoformat(timespec='seconds')}): a clock ahead or a copied folder; resolved again:"
        f" {again.isoformat(timespec='seconds')}"
    )
    state.since = again.isoformat()


def _utc(moment: str) -> datetime:
    """An ISO time of the state as an aware time (UTC unless it says otherwise)."""
    parsed = datetime.fromisoformat(moment)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def save_state(
    export: ProjectExport,
    options: dict[str, Any],
    since: datetime | None,
    started_at: datetime,
    skipped_by_run: dict[str, int],
    update: ProjectUpdate | None,
) -> None:
    """Save the state of the files `export` wrote (or left as they were: an update that found no change)."""
    stored = update.state.runs if update is not None else {}
    if update is not None and not export.records:
        runs = stored
    else:
        runs = {  # runs that failed are left out: the next update fetches them again
            record.id: {
                "heartbeat_at": iso_utc(record.heartbeat_at),
                "skipped_history_values": skipped_by_run.get(
                    record.id, stored.get(record.id, {}).get("skipped_history_values", 0)
                ),
            }
            for record in export.records
            if record.id not in export.failed_runs and record.id not in export.failed_files
        }
    state = ProjectState(options, iso_utc(since), started_at.isoformat(), runs)
    state.save(export.files.state)


def stored_result(files: ExportFiles) -> ProjectResult:
    """The ProjectResult of export files already complete (read from their metadata)."""
    metadata = json.loads(read_text_file(files.metadata, "export metadata"))
    runs = files.metadata.with_name(metadata["files"]["runs"])
    return ProjectResult(
        metadata["entity"],
        metadata["project"],
        metadata["run_count"],
        metadata.get("history_rows") or 0,
        runs,
        history_file_of(runs, metadata),
        files.metadata,
    )


def intact_result(files: ExportFiles) -> ProjectResult | None:
    """stored_result of a completed export whose files are all still there, else None (moved or damaged)."""
    try:
        result = stored_result(files)
    except BadInput:  # not a regular file, or too large: said as such
        raise
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    kept = [result.runs_path, *([result.history_path] if result.history_path else [])]
    return result if all(path.is_file() for path in kept) else None


def plan_line(entity: str, project: str, update: ProjectUpdate | None, reason: str) -> str:
    """What an incremental export does with a project, in one line."""
    if update is None:
        return f"{entity}/{project}: full export ({reason})"
    return f"{entity}/{project}: fetching runs changed since {update.state.exported_at} (less {CLOCK_MARGIN})"
