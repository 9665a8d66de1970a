"""Folders written by the exporters as a query source: each project's runs parquet, and its history where exported."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from shared.base.errors import BadInput, Incomplete, RunToolsError, describe
from shared.base.storage import name_stems, safe_name
from shared.base.text import name_list
from shared.table.exports import (
    different_exports,
    export_changed,
    export_metadata,
    export_stem,
    footer_metadata,
    history_generation,
    listed_history,
    one_export_state,
    parquet_generation,
    replaced,
)
from shared.table.flatten import parse_object
from shared.table.record_source import ListedRun, RecordSource, points_frame
from shared.table.schema import LINEAGE, RAW_JSON_COLUMNS, RUNS_FILE
from shared.table.series import RUN


def _exported_project(runs_file: Path) -> tuple[str, str] | None:
    """The (entity, project) a runs file's metadata records; None without readable metadata."""
    metadata = export_metadata(runs_file) or {}
    entity, project = metadata.get("entity"), metadata.get("project")
    return (entity, project) if isinstance(entity, str) and isinstance(project, str) else None


def _certainty(runs_file: Path, recorded: tuple[str, str] | None, entity: str, project: str) -> int:
    """How surely a runs file is the export of `project` (of `entity`, when given): 2 by its metadata or
    its digest name, 1 by its plain name (no metadata: older versions; `a b` and `a_b` share it), 0 not."""
    if recorded is not None:
        return 2 if recorded[1] == project and (not entity or recorded[0] == entity) else 0
    stem = export_stem(runs_file)
    if not entity:
        return int(stem.endswith(f"_{safe_name(project)}"))
    plain, tagged = name_stems(entity, project)
    return 2 if stem == tagged else int(stem == plain)


def find_export(path: Path, project: str | None) -> Path:
    """The `*_runs.parquet` of `project` (entity/project or project) in an export folder, or the file.

    Chosen by the entity/project each export's metadata records: names that collide (`a b`/`a_b`) are
    told apart by the exporter with a digest suffix, so a file's name alone can hold another project.
    """
    entity, _, name = (project or "").rpartition("/")
    if path.is_file():
        if not path.name.endswith(RUNS_FILE):
            raise BadInput(f"{path} is not a runs file written by export_runs.py (*_runs.parquet)")
        held = _exported_project(path)
        if project and held is not None and not _certainty(path, held, entity, name):
            raise BadInput(f"{path} holds the export of {'/'.join(held)}, not {project}")
        return path
    if not path.is_dir():
        raise BadInput(f"{path} does not exist")
    try:  # a glob would take an unreadable folder for an empty one
        names = os.listdir(path)
    except OSError as error:
        raise Incomplete(f"cannot read {path} ({error.strerror or type(error).__name__})") from None
    files = sorted(path / name for name in names if name.endswith(RUNS_FILE))
    superseded = [file for file in files if replaced(file)]
    if superseded:  # an export marked them: their project is no longer in its offline logs
        files = [file for file in files if file not in superseded]
    if not files:
        raise BadInput(f"no *_runs.parquet in {path}: not a folder written by wandb-tools/export_runs.py")
    recorded = {file: _exported_project(file) for file in files}
    labels = name_list("/".join(held) if held else export_stem(file) for file, held in recorded.items())
    if not project:
        if len(files) > 1:
            raise BadInput(f"{path} holds several exports; name one as ENTITY/PROJECT: {labels}")
        return files[0]
    # A digest name is only given when the plain one holds another project: it wins over the plain name.
    certainty = {file: _certainty(file, held, entity, name) for file, held in recorded.items()}
    best = max(certainty.values())
    matches = [file for file, sure in certainty.items() if sure and sure == best]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = name_list(file.name for file in matches)
        ask = "the *_runs.parquet itself" if entity else "ENTITY/PROJECT, or the *_runs.parquet itself"
        raise BadInput(f"project {project!r} matches several exports in {path} ({names}): give {ask}")
    raise BadInput(f"project {project!r} is not in {path} (exports there: {labels})")


class Snapshot:
    """One export's runs and history files, open: read through these handles, they stay the files of one
    export while another replaces them (a rename leaves an open file as it was)."""

    def __init__(self, runs_file: Path) -> None:
        self.history: BinaryIO | None = None
        try:
            self.runs = open(runs_file, "rb")  # noqa: SIM115 (kept open: closed by close())
        except OSError as error:  # permission denied, removed meanwhile: said as such, exit 1
            raise Incomplete(f"cannot read {runs_file} ({error.strerror or type(error).__name__})") from None
        try:
            metadata = export_metadata(runs_file)
            footer = footer_metadata(self.runs)
            generation = parquet_generation(footer)
            if different_exports((metadata or {}).get("generation"), generation):
                raise export_changed(
                    runs_file, metadata, f"{runs_file.name} and its metadata are of different exports"
                )
            self.history_file = listed_history(runs_file, footer, metadata)
            self.history_keys = _exported_history_keys(metadata or {})
            if self.history_file is not None and self.history_file.is_file():
                self.history = open(self.history_file, "rb")  # noqa: SIM115
                if different_exports(history_generation(self.history), generation):
                    raise export_changed(
                        runs_file,
                        metadata,
                        f"{runs_file.name} and {self.history_file.name} are of different exports",
                    )
        except OSError as error:
            self.close()
            raise Incomplete(f"cannot read the export {runs_file} ({describe(error)})") from None
        except (ValueError, pa.ArrowException) as error:
            self.close()
            if isinstance(error, RunToolsError):
                raise
            raise BadInput(f"cannot read the export {runs_file}: {describe(error)}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for handle in (self.runs, self.history):
            if handle is not None:
                handle.close()


def _exported_history_keys(metadata: dict[str, Any]) -> set[str] | None:
    """The keys an export limited its history to (--history-keys), None for all."""
    try:
        keys = metadata["filters"]["history_keys"]
    except (KeyError, TypeError):
        return None
    return set(keys) if isinstance(keys, list) else None


class ExportFolderSource(RecordSource):
    """A project written by export_runs.py: `…_runs.parquet` (config and summary as JSON) and, with
    --include-history, `…_history.parquet` (read for the needed runs and keys only). Both are read from
    one Snapshot, taken as the runs are listed: an export replacing them is not seen half-way."""

    def __init__(self, path: Path, project: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.runs_file = find_export(path, project)
        try:
            self.runs_file.open("rb").close()
        except OSError as error:  # permission denied, removed meanwhile: said as such, exit 1
            raise Incomplete(
                f"cannot read {self.runs_file} ({error.strerror or type(error).__name__})"
            ) from None
        self._snapshot: Snapshot | None = None

    def _take_snapshot(self) -> Snapshot:
        if self._snapshot is not None:
            self._snapshot.close()
        self._snapshot = None
        self._snapshot = one_export_state(lambda: Snapshot(self.runs_file))
        return self._snapshot

    def close(self) -> None:
        super().close()
        if self._snapshot is not None:
            self._snapshot.close()
            self._snapshot = None

    def _list(self) -> Iterator[ListedRun]:
        columns = ("id", "name", "state", *RAW_JSON_COLUMNS)
        snapshot = self._take_snapshot()
        schema = pq.read_schema(snapshot.runs).names
        missing = [column for column in columns if column not in schema]
        if missing:
            raise BadInput(f"{self.runs_file} is not a runs export: no {', '.join(missing)} column")
        snapshot.runs.seek(0)
        for row in pl.read_parquet(snapshot.runs).iter_rows(named=True):
            config, summary = (parse_object(row[c])[0] or {} for c in RAW_JSON_COLUMNS)
            yield ListedRun(row["id"], row["name"] or row["id"], row["state"], config, summary, row)

    def lineage_attributes(self) -> dict[str, dict[str, Any]]:
        """The experiment and fork columns (schema.LINEAGE) of the runs that have one: an export of Neptune 3
        runs is queried over their lineages as the archive was (its history holds each run's own points)."""
        self.runs()
        found = {run.run_id: {name: run.raw.get(name) for name in LINEAGE} for run in self._listed.values()}
        return {
            run_id: fields for run_id, fields in found.items() if any(v is not None for v in fields.values())
        }

    def _history(self, pairs: pl.DataFrame, *, needed: bool) -> pl.DataFrame:
        keys = pairs["key"].unique().to_list()
        snapshot = self._snapshot or self._take_snapshot()
        history = snapshot.history_file if snapshot.history is not None else None
        if needed and keys and history is None:
            raise BadInput(
                f"{self.runs_file.name} was exported without its history: this query needs it "
                "(export with --include-history, or use --aggregation last)"
            )
        exported = snapshot.history_keys
        absent = sorted(set(keys) - exported) if exported is not None else []
        if needed and absent:
            raise BadInput(
                f"{self.runs_file.name} was exported with --history-keys {','.join(sorted(exported or []))}: "
                f"no history of {', '.join(absent)}"
            )
        if not keys or history is None or snapshot.history is None:
            return points_frame({})
        try:
            names = pq.read_schema(snapshot.history).names
            if missing := [c for c in (RUN, "key", "step", "value") if c not in names]:
                raise BadInput(f"{history} is not a history export: no {', '.join(missing)} column")
            snapshot.history.seek(0)
            return (
                pl.scan_parquet(snapshot.history)
                .filter(pl.col(RUN).is_in(pairs[RUN].unique().to_list()) & pl.col("key").is_in(keys))
                .select(RUN, "key", pl.col("step").cast(pl.Float64), pl.col("value").cast(pl.Float64))
                .collect()
                .join(pairs, on=[RUN, "key"], how="semi")
            )
        except (
            pl.exceptions.PolarsError,
            OSError,
            ValueError,
            pa.ArrowException,
        ) as error:  # cut short, odd types
            raise BadInput(f"cannot read the history {history}: {describe(error)}") from None
