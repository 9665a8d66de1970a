"""One project's export files (runs parquet, history parquet, metadata JSON): their names, what is collected for them, and the atomic write that finishes them."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from weakref import WeakValueDictionary

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from shared.base.errors import BadInput, Incomplete
from shared.base.events import Events
from shared.base.limits import read_text_file
from shared.base.storage import (
    AtomicFile,
    check_final_paths,
    commit_together,
    json_text,
    name_stems,
    output_path,
    staged,
)
from shared.table.history import StreamWriter
from shared.table.rows import runs_table
from shared.table.schema import (
    FILE_KINDS,
    FILES,
    GENERATION_KEY,
    HISTORY_FILE_KEY,
    HISTORY_OTHER,
    OPTIONAL_STREAMS,
    SYSTEM,
    RunRecord,
)
from shared.table.system_summary import SystemSummaries

TOOL_VERSION = "0.1.0"
# Rows of a stream beside history buffered before a write: smaller than history's groups, as an export
# holds several such streams at once (system metrics alone are a row per sample and key).
STREAM_ROW_GROUP = 250_000


def _listed(run_ids: list[str], shown: int = 10) -> str:
    more = len(run_ids) - shown
    return ", ".join(run_ids[:shown]) + (f" and {more} more" if more > 0 else "")


class ExportFiles(NamedTuple):
    """Where one project's export files are in a folder: `{stem}_runs.parquet`, … with one stem (a field
    per kind of schema.FILE_KINDS, in its order)."""

    runs: Path
    history: Path
    history_other: Path
    console: Path
    system: Path
    files: Path
    metadata: Path
    state: Path  # what --incremental needs


# Exports of this process whose files are not written yet, by metadata path: projects exported side by side
# (offline runs of several projects) must not pick one name before either has recorded it.
_UNDER_WAY: WeakValueDictionary[Path, ProjectExport] = WeakValueDictionary()


def tracker_of(detail: str) -> str:
    """What an export's metadata records as its `source` for a source of kind `detail` (`source_detail`):
    `wandb-api`, `wandb-offline` or `neptune`. Files of one project from another of these are another
    export: the W&B API and offline logs hold different copies of a run (and keep apart incremental
    states); a Neptune project read from its server, an archive or offline runs is one project."""
    return "neptune" if detail.startswith("neptune") else detail


def _holder(metadata: Path) -> tuple[Any, Any, Any] | None:
    """The (source, entity, project) whose export files are named like `metadata`, None when the name is
    free; the source is None in metadata written before it was recorded.

    Unreadable metadata holds the name for no known project: it is not overwritten.
    """
    export = _UNDER_WAY.get(metadata.resolve())
    if export is not None:
        return export.tracker, export.entity, export.project
    try:
        recorded = json.loads(read_text_file(metadata, "export metadata"))  # a fifo would hang
        return recorded.get("source"), recorded["entity"], recorded["project"]
    except FileNotFoundError:
        return None
    except BadInput:  # not a regular file, or too large: said as such
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None, None, None


def _holds(holder: tuple[Any, Any, Any] | None, tracker: str, entity: str, project: str) -> bool:
    return holder is not None and holder[1:] == (entity, project) and holder[0] in (tracker, None)


def _held_by(holder: tuple[Any, Any, Any] | None) -> str:
    source, entity, project = holder or (None, None, None)
    if entity is None:
        return "unreadable metadata"
    return f"the export of {entity}/{project}" + (f" from {source}" if source else "")


def export_files(folder: Path, entity: str, project: str, tracker: str) -> ExportFiles:
    """A project's files in `folder`: `{entity}_{project}_…` (sanitised), unless another export's files hold
    that name: another project's (distinct names can sanitise or join to one: `a b`/`a_b`, `x_y`+`z`/`x`+`y_z`),
    or the same project's from another tracker (`tracker_of`); then the stem gets `-{digest of the raw
    names}`, or `{tracker}_{entity}_{project}-{digest}` when that is taken too. Files already holding this
    project of this tracker keep their name on reruns."""
    stems = [*name_stems(entity, project), name_stems(tracker, entity, project)[1]]
    candidates = [
        ExportFiles(**{kind: output_path(folder, stem, suffix=suffix) for kind, suffix in FILE_KINDS.items()})
        for stem in dict.fromkeys(stems)
    ]
    holders = [_holder(files.metadata) for files in candidates]
    pairs = list(zip(candidates, holders, strict=True))
    found = next((files for files, holder in pairs if _holds(holder, tracker, entity, project)), None)
    found = found or next((files for files, holder in pairs if holder is None), None)
    if found is None:
        taken = ", ".join(files.metadata.name for files in candidates)
        raise Incomplete(
            f"cannot name the files of {entity}/{project} in {folder}: {taken} hold other exports"
        )
    check_final_paths(found)  # before anything reads or writes them
    return found


@dataclass
class ProjectResult:
    """What one finished project export wrote."""

    entity: str
    project: str
    runs: int
    history_rows: int
    runs_path: Path
    history_path: Path | None
    metadata_path: Path
    shortfall: str | None = None  # what the source reported that the files lack (then the export failed)


class ProjectExport:
    """Collects one project's runs and history, then writes its files; nothing lands at a final path early."""

    def __init__(
        self,
        folder: Path,
        entity: str,
        project: str,
        *,
        include_history: bool,
        metadata: dict[str, Any],
        tracker: str,
        events: Events | None = None,
        streams: frozenset[str] = frozenset(),
    ) -> None:
        self.entity, self.project, self.tracker = entity, project, tracker
        self.events = events or Events()
        self.files = export_files(folder, entity, project, tracker)
        plain = output_path(folder, name_stems(entity, project)[0], suffix=FILE_KINDS["metadata"])
        if self.files.metadata != plain:
            stem = self.files.metadata.name.removesuffix(FILE_KINDS["metadata"])
            held = _held_by(_holder(plain))
            self.events.note(f"{entity}/{project}: its files are named {stem}_… ({plain.name} holds {held})")
        self._claim = self.files.metadata.resolve()
        _UNDER_WAY[self._claim] = self
        self.metadata = metadata
        self.records: list[RunRecord] = []
        self.history_rows = 0
        self.skipped_values = 0
        self.include_history = include_history
        self.runs_reported: int | None = None  # the source's own count, when it gives one
        self.failed_runs: dict[str, str] = {}  # run id -> why it (or a part of it) is not in the files
        self._failed_parts: dict[str, list[str]] = {}  # run id -> what of it failed (RunFailed.part)
        self.failed_files: dict[str, list[str]] = {}  # run id -> files --include-files could not keep
        self.generation = uuid.uuid4().hex  # in every file this export writes: readers pair them by it
        self._history = StreamWriter(self.files.history, generation=self.generation)
        # The tidy streams beside history this export writes (history_other with history), by name.
        chosen = [HISTORY_OTHER] * include_history + [s for s in OPTIONAL_STREAMS if s.name in streams]
        chosen.append(FILES)  # every export lists each run's files
        self._system = SystemSummaries()  # of the system rows: columns of the runs table
        self._streams = {
            stream.name: StreamWriter(
                getattr(self.files, stream.name),
                STREAM_ROW_GROUP,
                generation=self.generation,
                stream=stream,
            )
            for stream in chosen
        }

    def add_run(self, record: RunRecord) -> None:
        self.records.append(record)

    def add_history(self, frame: pl.DataFrame | pa.Table, skipped_values: int = 0) -> None:
        """Queue one run's tidy history (columns of HISTORY_SCHEMA); written in large row groups."""
        self.skipped_values += skipped_values
        self._history.add(frame)

    def add_stream(self, stream: str, frame: pl.DataFrame | pa.Table) -> None:
        """Queue tidy rows of a stream beside history (its schema.STREAMS columns)."""
        self._streams[stream].add(frame)
        if stream == SYSTEM.name:
            self._system.add(frame if isinstance(frame, pl.DataFrame) else pl.from_arrow(frame))

    @property
    def stream_paths(self) -> dict[str, Path]:
        """The files of the streams beside history this export writes, by stream name."""
        return {name: writer.final for name, writer in self._streams.items()}

    def fail_run(self, run_id: str, reason: str, part: str = "history") -> None:
        """Name a run (or the `part` of it, when it is exported) the files will lack: the export then ends
        with exit 1."""
        self.failed_runs[run_id] = reason
        self._failed_parts.setdefault(run_id, []).append(part)
        self.events.warn(f"{self.entity}/{self.project}: run {run_id} not exported: {reason}")

    def shortfall(self) -> str | None:
        """One line on what the files lack of what the source reported, None when they hold it all."""
        exported = {record.id for record in self.records}
        missing = [run_id for run_id in self.failed_runs if run_id not in exported]
        unknown = (self.runs_reported or 0) - len(exported) - len(missing)
        partial: dict[str, list[str]] = {}  # what is missing of runs that were exported → their ids
        for run_id in self.failed_runs:
            if run_id in exported:
                for part in dict.fromkeys(self._failed_parts.get(run_id, ["history"])):
                    partial.setdefault(part, []).append(run_id)
        parts = []
        if missing or unknown > 0:
            count = len(missing) + max(unknown, 0)
            ids = (
                f" ({_listed(missing)}{', and others' if missing and unknown > 0 else ''})" if missing else ""
            )
            parts.append(
                f"{count} of {max(self.runs_reported or 0, len(exported) + count)} runs missing{ids}"
            )
        for part, run_ids in partial.items():
            parts.append(f"{part} of {len(run_ids)} run(s) missing ({_listed(run_ids)})")
        if self.failed_files:
            count = sum(len(paths) for paths in self.failed_files.values())
            parts.append(f"{count} file(s) of run(s) {_listed(list(self.failed_files))} not kept")
        return f"{self.entity}/{self.project}: {'; '.join(parts)}" if parts else None

    def finish(self) -> ProjectResult:
        """Write history, runs and metadata (the completion mark) to temp files, then move them into place
        back to back, the metadata last; return what was written. Each file carries this export's
        generation, so a reader tells them from the files they replace.

        What the files hold is counted against what the source reported: `shortfall` of the result.
        """
        files: list[AtomicFile] = []
        try:
            if self.include_history:
                files.append(self._history.seal())
                self.history_rows = self._history.rows
            files.extend(writer.seal() for writer in self._streams.values())
            summaries = self._system.values()
            for record in self.records:
                for column, value in summaries.get(record.id, {}).items():
                    setattr(record, column, value)
            table, warnings = runs_table(self.records)
            for message in warnings:
                self.events.warn(f"{self.entity}/{self.project}: {message}")
            history = self.files.history.name if self.include_history else ""
            table = table.replace_schema_metadata(
                {**(table.schema.metadata or {}), GENERATION_KEY: self.generation, HISTORY_FILE_KEY: history}
            )
            files.append(
                staged(self.files.runs, lambda temp: pq.write_table(table, temp, compression="zstd"))
            )
            text = json_text(self._metadata(table, warnings))
            files.append(
                staged(
                    self.files.metadata,
                    lambda temp: temp.write_text(text, encoding="utf-8", errors="backslashreplace"),
                )
            )
            commit_together(files)
        finally:
            for file in files:
                file.discard()  # a file moved into place is no longer at its temp path
        self._release()  # the metadata holds the name now
        if not self.include_history and self.files.history.exists():
            self.events.warn(
                f"{self.files.history} is left from an earlier export: not part of this one, so the"
                " tools ignore it (export with --include-history to refresh it, or delete it)"
            )
        for stream in (HISTORY_OTHER, *OPTIONAL_STREAMS):
            left = getattr(self.files, stream.name)
            if stream.name not in self._streams and left.exists():
                self.events.warn(f"{left} is left from an earlier export: not part of this one (delete it)")
        self.events.note(f"Saved {len(self.records)} runs to {self.files.runs}")
        history_path = self.files.history if self.include_history else None
        return ProjectResult(
            self.entity,
            self.project,
            len(self.records),
            self.history_rows,
            self.files.runs,
            history_path,
            self.files.metadata,
            self.shortfall(),
        )

    def _metadata(self, table: pa.Table, warnings: list[str]) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "project": self.project,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "tool": {"name": "run-tools", "version": TOOL_VERSION},
            **self.metadata,
            "generation": self.generation,
            "run_count": len(self.records),
            "runs_reported": self.runs_reported,
            "runs_exported": len(self.records),
            "failed_runs": self.failed_runs,
            **({"failed_files": self.failed_files} if self.failed_files else {}),
            "history_rows": self.history_rows if self.include_history else None,
            "skipped_history_values": self.skipped_values if self.include_history else None,
            **{f"{name}_rows": writer.rows for name, writer in self._streams.items()},
            "flatten_warnings": warnings,
            "files": {
                "runs": self.files.runs.name,
                "history": self.files.history.name if self.include_history else None,
                **{name: path.name for name, path in self.stream_paths.items()},
            },
            "columns": {
                name: str(dtype) for name, dtype in zip(table.column_names, table.schema.types, strict=True)
            },
        }

    def abort(self) -> None:
        """Drop everything collected; no partial file is left behind."""
        self._history.discard()
        for writer in self._streams.values():
            writer.discard()
        self._release()

    def _release(self) -> None:
        if _UNDER_WAY.get(self._claim) is self:
            del _UNDER_WAY[self._claim]
