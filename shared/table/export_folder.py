"""Folders written by the exporters as a query source: each project's runs parquet, and its history where exported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from shared.base.errors import BadInput, describe
from shared.base.storage import name_stems, safe_name
from shared.base.text import name_list
from shared.table.exports import export_metadata, export_stem, history_file_of
from shared.table.flatten import parse_object
from shared.table.record_source import ListedRun, RecordSource, points_frame
from shared.table.schema import RAW_JSON_COLUMNS, RUNS_FILE
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
    files = sorted(path.glob(f"*{RUNS_FILE}"))
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
        raise BadInput(
            f"project {project!r} matches several exports in {path} ({names}): "
            "give ENTITY/PROJECT, or the *_runs.parquet itself"
        )
    raise BadInput(f"project {project!r} is not in {path} (exports there: {labels})")


class ExportFolderSource(RecordSource):
    """A project written by export_runs.py: `…_runs.parquet` (config and summary as JSON) and, with
    --include-history, `…_history.parquet` (read for the needed runs and keys only)."""

    def __init__(self, path: Path, project: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.runs_file = find_export(path, project)
        metadata = export_metadata(self.runs_file) or {}
        self.history_file = history_file_of(self.runs_file, metadata)
        self.history_keys = self._exported_history_keys(metadata)

    @staticmethod
    def _exported_history_keys(metadata: dict[str, Any]) -> set[str] | None:
        """The keys an export limited its history to (--history-keys), None for all."""
        try:
            keys = metadata["filters"]["history_keys"]
        except (KeyError, TypeError):
            return None
        return set(keys) if isinstance(keys, list) else None

    def _list(self) -> Iterator[ListedRun]:
        columns = ("id", "name", "state", *RAW_JSON_COLUMNS)
        schema = pl.read_parquet_schema(self.runs_file)
        missing = [column for column in columns if column not in schema]
        if missing:
            raise BadInput(f"{self.runs_file} is not a runs export: no {', '.join(missing)} column")
        for row in pl.read_parquet(self.runs_file).iter_rows(named=True):
            config, summary = (parse_object(row[c])[0] or {} for c in RAW_JSON_COLUMNS)
            yield ListedRun(row["id"], row["name"] or row["id"], row["state"], config, summary, row)

    def _history(self, pairs: pl.DataFrame, *, needed: bool) -> pl.DataFrame:
        keys = pairs["key"].unique().to_list()
        history = self.history_file if self.history_file and self.history_file.is_file() else None
        if needed and keys and history is None:
            raise BadInput(
                f"{self.runs_file.name} was exported without its history: this query needs it "
                "(export with --include-history, or use --aggregation last)"
            )
        absent = sorted(set(keys) - self.history_keys) if self.history_keys is not None else []
        if needed and absent:
            raise BadInput(
                f"{self.runs_file.name} was exported with --history-keys {','.join(sorted(self.history_keys or []))}: "
                f"no history of {', '.join(absent)}"
            )
        if not keys or history is None:
            return points_frame({})
        try:
            missing = [c for c in (RUN, "key", "step", "value") if c not in pl.read_parquet_schema(history)]
            if missing:
                raise BadInput(f"{history} is not a history export: no {', '.join(missing)} column")
            return (
                pl.scan_parquet(history)
                .filter(pl.col(RUN).is_in(pairs[RUN].unique().to_list()) & pl.col("key").is_in(keys))
                .select(RUN, "key", pl.col("step").cast(pl.Float64), pl.col("value").cast(pl.Float64))
                .collect()
                .join(pairs, on=[RUN, "key"], how="semi")
            )
        except (pl.exceptions.PolarsError, OSError) as error:  # cut short, not parquet, odd column types
            raise BadInput(f"cannot read the history {history}: {describe(error)}") from None
