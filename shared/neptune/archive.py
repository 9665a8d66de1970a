"""neptune-exporter archives: `<data>/<project>/*.parquet`, one row per attribute value, read lazily."""

from __future__ import annotations

import bisect
import errno
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from shared.base.errors import BadInput, Incomplete
from shared.base.events import Events
from shared.base.limits import check_readable_name, check_regular_file
from shared.base.storage import parquet_schema
from shared.neptune.archive_batches import PART, map_batches, run_batches, run_prefix
from shared.neptune.attributes import STATE_ALIASES
from shared.neptune.files import FILE_TYPES, archive_files_root, archive_run_files
from shared.neptune.runs import (
    FORK_MARK,
    LINEAGE_PATHS,
    NeptuneRun,
    NeptuneSource,
    SeriesBatch,
    lineage_fields,
    split_project,
)
from shared.neptune.streams import OTHER_POINTS
from shared.table.run_files import RunFile
from shared.table.schema import CORE, LINEAGE, RUNS_SCHEMA, polars_schema
from shared.table.series import (
    RUN,
    SUMMARY_VALUES,
    summarize,
    summarize_values,
    summary_answers,
    summary_points,
)
from shared.table.source import Asked, ExportItem, ExportRequest, Unreadable
from shared.table.summary_cache import SummaryCache

# The columns of neptune-exporter's `model.SCHEMA` (src/neptune_exporter/model.py), every one of them.
ARCHIVE_COLUMNS: dict[str, pl.DataType] = {
    "project_id": pl.String(),
    "run_id": pl.String(),
    "attribute_path": pl.String(),
    "attribute_type": pl.String(),
    "step": pl.Decimal(18, 6),
    "timestamp": pl.Datetime("ms", "UTC"),
    "int_value": pl.Int64(),
    "float_value": pl.Float64(),
    "string_value": pl.String(),
    "bool_value": pl.Boolean(),
    "datetime_value": pl.Datetime("ms", "UTC"),
    "string_set_value": pl.List(pl.String()),
    "file_value": pl.Struct({"path": pl.String()}),
    "histogram_value": pl.Struct(
        {"type": pl.String(), "edges": pl.List(pl.Float64()), "values": pl.List(pl.Float64())}
    ),
}
# Columns that make a file a neptune-exporter part; it writes every column of its schema, so a part without
# one of the value columns is refused too (read as all-null, its values would be lost without a word).
PART_COLUMNS = ("project_id", "run_id", "attribute_path", "attribute_type", "step")
SCALAR_TYPES = ("float", "int", "string", "bool", "datetime", "string_set")
NUMERIC_TYPES = ("float_series", "float", "int")
# The series that are not numbers (the exporter's attribute_type → history_other's type).
OTHER_SERIES = {"string_series": "string", "histogram_series": "histogram", "file_series": "media"}
STRUCTURED_SERIES = ("histogram_series", "file_series")  # their values are structs: read apart
_VALUE_COLUMNS = {
    "float": "float_value",
    "int": "int_value",
    "string": "string_value",
    "bool": "bool_value",
    "datetime": "datetime_value",
    "string_set": "string_set_value",
}
_NOT_FILE_SAFE = re.compile(r"[^\w-]")  # \w: what str.isalnum() accepts, and _
_DIGEST_SUFFIX = re.compile(r"-[0-9a-f]{16}$")  # the current exporter's file names end in one
DEFAULT_STATE = "inactive"  # the exporter skips sys/state; nothing in an archive is running


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def parquet_files(folder: Path, events: Events) -> tuple[list[str], dict[str, str]]:
    """The finished parquet parts of one project folder, sorted by name (`*.parquet.tmp` are parts
    still being written; one copy of each run, see `_one_copy_per_run`), and the parts that cannot be
    listed (path → why: gone since), left out; a part that cannot be read is found when it is (`check`
    reads every footer). Plain strings: an archive may hold 10,000s of files. A usage error when
    one is not a regular file (a named pipe would be waited on forever)."""
    check_readable_name(folder, "archive folder")
    try:
        with os.scandir(folder) as entries:
            listed = list(entries)
    except OSError as error:
        raise Incomplete(f"cannot read archive folder {folder}: {_reason(error)}") from None
    if nested := [name for name in _sub_folders(listed) if _holds_projects(folder / name)]:
        events.warn(
            f"{folder}: its sub-folders {', '.join(nested)} hold parts or project folders of their own;"
            " they are not read"
        )
    parts = [entry for entry in listed if entry.name.endswith(".parquet")]
    unreadable: dict[str, str] = {}
    for entry in parts:
        check_readable_name(entry.path, "archive part")
        try:
            if not entry.is_file():
                check_regular_file(Path(entry.path), "archive part")
        except OSError as error:  # gone since it was listed
            unreadable[entry.path] = _reason(error)
    names = _finished_runs(folder, sorted(entry.name for entry in parts), events)
    files = [f"{folder}{os.sep}{name}" for name in names]
    gone = {file: unreadable[file] for file in files if file in unreadable}
    kept = [name for name, file in zip(names, files, strict=True) if file not in gone]
    names = _one_copy_per_run(folder, kept, events)
    return [f"{folder}{os.sep}{name}" for name in names], gone


def _recorded_runs(files: Sequence[str], *, first: bool) -> list[str]:
    """The run ids these parts record: the first one (a part of one run), else every one; none when a
    part cannot be read (it is named where it is read)."""
    rows = pl.scan_parquet(list(files), glob=False).select(pl.col("run_id").drop_nulls())
    rows = rows.head(1) if first else rows.unique()
    try:
        return rows.collect()["run_id"].to_list()
    except (OSError, pl.exceptions.PolarsError):
        return []


def _one_copy_per_run(folder: Path, names: list[str], events: Events) -> list[str]:
    """Part `names` with one copy of each run: a run in the parts of two names (an archive re-exported by
    a newer neptune-exporter, `<run>_part_N` then `<run>-<digest>_part_N`) is read from the current
    exporter's digest-suffixed parts only, with a warning naming both. Every tool lists the files here, so
    all read the same copy. A run also in an early exporter's `part_N.parquet` (parts of several runs,
    which cannot be read without it) is a usage error naming both files.

    Only parts whose names could be one run's are opened (their first row): a listing stays cheap."""
    prefixes: set[str] = set()
    several: list[str] = []  # names not of one run's parts
    for name in names:  # PART without a regex: a listing of 10,000s of parts takes this loop each time
        prefix, sep, tail = name.rpartition("_part_")
        if sep and tail.endswith(".parquet") and tail[:-8].isdigit():
            prefixes.add(prefix)
        else:
            several.append(name)

    def first_part(prefix: str) -> str:
        return f"{folder}{os.sep}{prefix}_part_0.parquet"  # `_finished_runs` kept only runs that have it

    dropped: set[str] = set()
    # `<run>-<16 hex digits>` beside `<run>`
    for prefix in sorted(p for p in prefixes if p[:-17] in prefixes and _DIGEST_SUFFIX.search(p)):
        plain = prefix[:-17]
        kept = _recorded_runs([first_part(prefix)], first=True)
        if kept and kept == _recorded_runs([first_part(plain)], first=True):
            dropped.add(plain)
            events.warn(
                f"{folder}: run {kept[0]} is in two copies: read from {prefix}_part_*.parquet (the current"
                f" exporter's names), not from {plain}_part_*.parquet"
            )
    if several and prefixes:
        for run_id in _recorded_runs([f"{folder}{os.sep}{name}" for name in several], first=False):
            copy = next((name for name in sanitized_names(run_id) if name in prefixes), None)
            if copy is not None and copy not in dropped:
                raise BadInput(
                    f"{folder}: run {run_id} is in two copies, {copy}_part_0.parquet and a part of several"
                    f" runs ({', '.join(several[:3])}): remove one copy"
                )
    if not dropped:
        return names
    return [name for name in names if not ((match := PART.match(name)) and match["prefix"] in dropped)]


def _finished_runs(folder: Path, names: list[str], events: Events) -> list[str]:
    """`names` less the parts of runs without `<run>_part_0.parquet`: neptune-exporter renames a run's
    parts from `.tmp` last part first, part 0 last, and itself takes a run without it as not exported."""
    present = set(names)
    prefixes = {match["prefix"] for name in names if (match := PART.match(name))}
    unfinished = sorted(prefix for prefix in prefixes if f"{prefix}_part_0.parquet" not in present)
    for prefix in unfinished:
        events.warn(
            f"{folder}: run {prefix} left out: its export did not finish ({prefix}_part_0.parquet is missing)"
        )
    if not unfinished:
        return names
    left_out = set(unfinished)
    return [name for name in names if not ((match := PART.match(name)) and match["prefix"] in left_out)]


def _first_parquet(folder: Path) -> str | None:
    """Any parquet file of `folder` (stops at the first one)."""
    with os.scandir(folder) as entries:
        return next((entry.path for entry in entries if entry.name.endswith(".parquet")), None)


def _has_parquet(folder: Path) -> bool:
    return _first_parquet(folder) is not None


def _holds_projects(folder: Path) -> bool:
    """Whether `folder` holds parts or project folders; False when it cannot be listed (only a warning asks)."""
    try:
        return bool(project_folders(folder))
    except (OSError, BadInput):
        return False


def _sub_folders(entries: Sequence[os.DirEntry[str]]) -> list[str]:
    """The names of the folders among `entries` (not hidden ones)."""
    found = []
    for entry in entries:
        try:
            if entry.is_dir() and not entry.name.startswith("."):
                found.append(entry.name)
        except OSError:
            continue
    return sorted(found)


def _archive_folders(path: Path) -> tuple[list[Path], dict[Path, str]]:
    """`path` itself when it holds parquet parts, else its sub-folders that do; and the sub-folders that
    cannot be listed (path → why). A usage error when `path` itself cannot be read."""
    if not path.is_dir():
        return [], {}
    try:
        if _has_parquet(path):
            return [path], {}
        below = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_dir())
    except OSError as error:
        raise BadInput(f"cannot read {path}: {_reason(error)}") from None
    folders, unreadable = [], {}
    for folder in below:
        try:
            if _has_parquet(folder):
                folders.append(folder)
        except OSError as error:
            unreadable[folder] = _reason(error)
    return folders, unreadable


def project_folders(path: Path) -> list[Path]:
    """`path` itself when it holds parquet parts, else its sub-folders that do (that can be read)."""
    return _archive_folders(path)[0]


def unreadable_folders(path: Path) -> dict[Path, str]:
    """The sub-folders of an archive that cannot be listed (path → why): whose project each is, is not known."""
    return _archive_folders(path)[1]


def nested_archives(path: Path) -> list[Path]:
    """The folders below a data folder `path` that hold project folders, so are not read from it (`exports`
    for `exports/data/<project>`); a project folder's own sub-folders are named as its parts are listed.
    Folders that cannot be listed are named where they are read."""
    folders = project_folders(path)
    if folders == [path]:
        return []
    try:
        below = [p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        return [p for p in below if p not in folders and project_folders(p)]
    except (OSError, BadInput):
        return []


def note_other_folders(path: Path, events: Events) -> None:
    """Warn about the folders below `path` that hold project folders but are not read (`nested_archives`)."""
    if skipped := nested_archives(path):
        events.warn(
            f"{path}: {', '.join(p.name for p in skipped)} hold(s) project folders below it; they are not"
            " read (name such a folder as the source to read them)"
        )


def is_archive(path: Path) -> bool:
    """True for a neptune-exporter data folder or one project folder of it."""
    return bool(project_folders(path))


def sanitized_names(text: str) -> tuple[str, str]:
    """neptune-exporter's file-safe form of a project or run id: with the digest suffix (current), without."""
    plain = _NOT_FILE_SAFE.sub("_", text)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
    return f"{plain}-{digest}", plain


def check_part(file: str) -> None:
    """A usage error naming `file` unless it is a neptune-exporter part: parquet, with the exporter's
    columns in the types the scans read (only the footer is read). Incomplete when it cannot be read."""
    check_readable_name(file, "archive part")
    try:
        check_regular_file(Path(file), "archive part")
        if not os.access(file, os.R_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as error:  # unreadable or gone: not the user's input being wrong
        raise UnreadablePart(file, _reason(error)) from None
    schema = parquet_schema(file)
    missing = [column for column in PART_COLUMNS if column not in schema]
    missing = missing or [column for column in ARCHIVE_COLUMNS if column not in schema]
    mistyped = [
        f"{column} is {schema[column]}, not {dtype}"
        for column, dtype in ARCHIVE_COLUMNS.items()
        if column in schema and schema[column] != dtype
    ]
    if missing:
        problem = f"has no {', '.join(missing)} column{'s' if len(missing) > 1 else ''}"
    elif mistyped:
        problem = f"has columns of other types than the exporter's: {'; '.join(mistyped)}"
    else:
        return
    folder, name = os.path.split(file)
    raise BadInput(f"{folder} is not a neptune-exporter archive: {name} {problem}")


def _first_part(folder: Path) -> str:
    """A project folder's first part file; a usage error when it is not a neptune-exporter part."""
    first = _first_parquet(folder)
    assert first is not None  # project_folders lists only folders that hold parquet
    check_part(first)
    return first


def _recorded_project(file: str) -> str | None:
    value = pl.scan_parquet(file, glob=False).select(pl.col("project_id").drop_nulls()).head(1).collect()
    return value.item() if value.height else None


def _project_id(folder: Path) -> str | None:
    """The project id a folder's parts record (every row records the folder's one project): the first
    part listed answers, unless it has no rows; then the parts are read by name until one does (a part
    without rows listed first made a folder lose its id)."""
    recorded = _recorded_project(_first_part(folder))
    if recorded is not None:
        return recorded
    with os.scandir(folder) as entries:
        files = sorted(entry.path for entry in entries if entry.name.endswith(".parquet"))
    for file in files:
        check_part(file)
        if (recorded := _recorded_project(file)) is not None:
            return recorded
    return None


def find_project_folder(path: Path, project: str | None) -> tuple[Path, str | None]:
    """The folder of `project` in an archive (the only one when `project` is None) and its project id."""
    folders = project_folders(path)
    if len(folders) == 1 and (project is None or folders[0] == path):
        recorded = _project_id(folders[0])
        if project is not None and recorded is not None and recorded != project:
            raise BadInput(f"{path} holds the runs of project {recorded!r}, not {project!r}")
        return folders[0], recorded
    if project is not None:
        by_name = {folder.name: folder for folder in folders}
        for name in sanitized_names(project):
            if name in by_name:
                _first_part(by_name[name])  # checked: the folder holds exporter parts
                return by_name[name], project
    ids = {_project_id(folder): folder for folder in folders}
    if project is not None and project in ids:
        return ids[project], project
    known = ", ".join(sorted(str(i) for i in ids)) or "none"
    if project is not None and (unreadable := unreadable_folders(path)):
        named = "; ".join(f"{folder}: {why}" for folder, why in unreadable.items())
        raise Incomplete(
            f"project {project!r} is not in the folders of {path} that can be read (cannot read {named})"
        )
    if project is None:
        raise BadInput(f"{path} holds several projects; name one (--project): {known}")
    raise BadInput(f"project {project!r} is not in {path} (projects there: {known})")


class UnreadablePart(Incomplete):
    """A part that cannot be read (permission, I/O error, gone since it was listed)."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"cannot read archive part {file}: {reason}")
        self.reason = reason


@dataclass
class _Read:
    """What is known of the archive's files as they were listed: dropped whole when they are listed again
    (`runs(refresh=True)`) or the source is closed."""

    files: list[str]
    unreadable: dict[str, str] = field(default_factory=dict)  # parts left out: path → why
    stats: list[os.stat_result] | None = None  # of `files`: the summary cache's key, the batches' sizes
    runs: pl.DataFrame | None = None
    scalars: pl.DataFrame | None = None  # every simple attribute's row (the runs table's pass)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_ids: list[str] | None = None  # every run id, once a pass over every run has met them all
    summaries: SummaryCache | None = None
    lineage: dict[str, dict[str, Any]] | None = None  # ArchiveSource.lineage_attributes
    forks: dict[str, dict[str, Any]] | None = None  # ArchiveSource.fork_attributes


class ArchiveSource(NeptuneSource):
    """Runs of one project of a neptune-exporter archive; only the needed attribute paths are read."""

    detail = "neptune-archive"
    streams = frozenset({"history_other", "console", "system", "files"})  # the tidy streams it reads

    def __init__(
        self,
        path: Path,
        project: str | None = None,
        *,
        cache: bool = True,
        whole: bool = True,
        events: Events | None = None,
    ) -> None:
        """`whole`: a part that cannot be read is an error (Incomplete); else it is left out and an export
        names it (`unreadable`), counted as a run that failed."""
        folder, project_id = find_project_folder(path, project)
        super().__init__(split_project(project_id or folder.name), project_id, events)
        self.folder, self.project = folder, project_id
        self.cache, self.whole = cache, whole
        self._read = self._listed()

    def _listed(self) -> _Read:
        files, unreadable = parquet_files(self.folder, self.events)
        if unreadable and self.whole:
            named = "; ".join(f"{file}: {why}" for file, why in list(unreadable.items())[:3])
            more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
            raise Incomplete(f"cannot read {len(unreadable)} archive part(s) ({named}{more})")
        return _Read(files, unreadable)

    def unreadable_entries(self) -> dict[str, str]:
        return self._read.unreadable

    @property
    def files(self) -> list[str]:
        """The finished part files, sorted by name."""
        return self._read.files

    def check(self, whole: bool | None = None) -> None:
        """A usage error naming the first file that is not a neptune-exporter part (reads every footer).
        A part that cannot be read is an error too when the source is read `whole` (default: as opened),
        else it is left out and named in `unreadable_entries`."""
        whole = self.whole if whole is None else whole
        lost: dict[str, str] = {}
        for file in self.files:
            try:
                check_part(file)
            except UnreadablePart as error:
                if whole:
                    raise
                lost[file] = error.reason
        if lost:
            files = [file for file in self.files if file not in lost]
            self._read = _Read(files, self._read.unreadable | lost)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Turn a failed scan into a usage error naming the file to blame (polars does not name it)."""
        try:
            yield
        except (pl.exceptions.PolarsError, OSError):  # OSError: a part gone or unreadable since it was listed
            self.check(whole=True)  # a read under way cannot leave a part out
            raise

    def _scan(self, files: Sequence[str] | Sequence[bytes] | None = None) -> pl.LazyFrame:
        return pl.scan_parquet(
            list(files or self.files),
            glob=False,  # a folder's name may hold [ * ?
            schema=ARCHIVE_COLUMNS,
            missing_columns="raise",  # `_reading` names the part (`check_part`)
            extra_columns="ignore",
        )

    def _scalar_rows(self, files: Sequence[str] | None = None) -> pl.DataFrame:
        """The simple attributes (rows without a step) of these files, with their typed value columns."""
        with self._reading():
            return (
                self._scan(files)
                .filter(pl.col("step").is_null() & pl.col("attribute_type").is_in(SCALAR_TYPES))
                .select("run_id", "attribute_path", "attribute_type", *_VALUE_COLUMNS.values())
                .collect()
            )

    def _load(self) -> None:
        """One pass over every simple attribute: the runs table and their values."""
        scalars = self._scalar_rows()
        self._read.scalars = scalars
        by_path = scalars.filter(pl.col("attribute_path").is_in(["sys/name", "sys/state"])).pivot(
            on="attribute_path", index="run_id", values="string_value", aggregate_function="first"
        )
        runs = scalars.select("run_id").unique().join(by_path, on="run_id", how="left")
        name = pl.col("sys/name") if "sys/name" in runs.columns else pl.lit(None, pl.String)
        state = pl.col("sys/state") if "sys/state" in runs.columns else pl.lit(None, pl.String)
        self._read.runs = (
            runs.select(
                "run_id",
                pl.when(name.str.len_chars() > 0).then(name).otherwise(pl.col("run_id")).alias("name"),
                state.str.to_lowercase()
                .replace_strict(STATE_ALIASES, default=None, return_dtype=pl.String)
                .fill_null(DEFAULT_STATE)
                .alias("state"),
            )
            .sort("run_id")
            .cast(RUNS_SCHEMA)
        )

    def _parts(self, prefix: str) -> list[str]:
        """The part files `<prefix>_part_<n>.parquet` (self.files is sorted by name: a binary search)."""
        start = f"{prefix}_part_"
        index = bisect.bisect_left(self.files, start, key=os.path.basename)
        parts = []
        while index < len(self.files) and (name := os.path.basename(self.files[index])).startswith(start):
            match = PART.match(name)
            if match and match["prefix"] == prefix:
                parts.append(self.files[index])
            index += 1
        return parts

    def _files_of(self, run_ids: Sequence[str]) -> list[str] | None:
        """The part files of these runs, found by the exporter's file names; None when one is not found."""
        found: list[str] = []
        for run_id in run_ids:
            parts = next((parts for name in sanitized_names(run_id) if (parts := self._parts(name))), None)
            if parts is None:
                return None
            found += parts
        return sorted(set(found)) or None

    def runs(self, *, refresh: bool = False) -> pl.DataFrame:
        if refresh:
            self._read = self._listed()
        if self._read.runs is None:
            self._load()
        assert self._read.runs is not None
        return self._read.runs

    def run_ids(self) -> list[str]:
        """Every run id: from the last full points pass when there was one (no second scan), else the table."""
        return self._read.run_ids if self._read.run_ids is not None else self.runs()["run_id"].to_list()

    def _point_rows(
        self, keys: Sequence[str], files: Sequence[str] | Sequence[bytes] | None = None, *, ints: bool = True
    ) -> pl.LazyFrame:
        """run_id, key, step (the exporter's decimal) and value of the rows at these paths.

        A filter on the path strings: the reader skips the row groups whose statistics rule the paths
        out (neptune-exporter writes one row group per series) and decodes only the rest. Every row at a
        path is a point: a value that is not a number (a string at a metric's path) is a point without
        a finite value. The attribute_type column is not read: it would cost a string per row. Without
        `ints`, the int_value column is not read either (only simple attributes hold integers).
        """
        value = pl.col("float_value")
        if ints:
            value = pl.coalesce(value, pl.col("int_value").cast(pl.Float64))
        return (
            self._scan(files)
            .filter(pl.col("attribute_path").is_in(list(keys)))
            .select("run_id", pl.col("attribute_path").alias("key"), "step", value.alias("value"))
        )

    def points(self, asked: Asked) -> pl.LazyFrame:
        """Points of these paths (see `_point_rows`); a pass over every run notes every run's id too."""
        keys, run_ids = asked.keys, asked.run_ids
        files = self._files_of(run_ids) if run_ids is not None and len(run_ids) <= 1000 else None
        scan = self._engine_points(keys, files)
        if run_ids is not None:
            return scan.filter(pl.col("run_id").is_in(list(run_ids)))
        with self._reading():
            frame = scan.collect()
        self._note_runs(frame.select(pl.col("run_id").unique().cast(pl.String))["run_id"])
        return frame.lazy()

    def _engine_points(
        self, keys: Sequence[str], files: Sequence[str] | Sequence[bytes] | None = None
    ) -> pl.LazyFrame:
        """`_point_rows` as the engine takes them: it compares neighbouring rows, integers beat strings."""
        paths = list(dict.fromkeys(keys))
        return self._point_rows(paths, files).with_columns(
            pl.col("run_id").cast(pl.Categorical),
            pl.col("key").cast(pl.Enum(paths)),
            pl.col("step").cast(pl.Float64),
        )

    def _file_stats(self) -> list[os.stat_result]:
        if self._read.stats is None:
            self._read.stats = [os.stat(file) for file in self.files]
        return self._read.stats

    def _note_runs(self, seen: pl.Series) -> None:
        """Every run id, after a pass over every run met the runs in `seen`: those and the ids (sys/id
        rows) in the files not named after one of them, the runs without any of the paths read. Usually
        no file is left, so a pass need not read every run's sys/id row group."""
        ids = set(seen.to_list())
        named = {name for run_id in ids for name in sanitized_names(run_id)}
        files = [file for file in self.files if run_prefix(file) not in named]
        if files:
            with self._reading():
                rows = self._scan(files).filter(pl.col("attribute_path") == "sys/id").select("run_id")
                ids.update(rows.collect()["run_id"].to_list())
        self._read.run_ids = sorted(ids)

    def _fresh_summary(self, keys: list[str], tail: bool) -> pl.DataFrame:
        """Summaries of these series in every run, from one pass over the archive (without the tail, a
        streaming group-by that never holds the points; with it, they are held a batch at a time)."""

        read = list(dict.fromkeys([*keys, FORK_MARK]))  # the forked runs found in the same pass

        def summary_of(files: Sequence[str] | Sequence[bytes] | None = None) -> pl.DataFrame:
            if tail:
                return summarize(self._engine_points(read, files), read)
            return summarize_values(self._point_rows(read, files, ints=False))

        with self._reading():  # a few batches of whole runs at a time: only their points are held
            sizes = [stat.st_size for stat in self._file_stats()]
            parts = map_batches(summary_of, self.files, sizes)
            summary = pl.concat(parts) if parts else None
            if summary is None or not summary.select(pl.struct(RUN, "key").is_unique().all()).item():
                summary = summary_of()  # a series spread over batches (a part named after another run)
            self._note_runs(summary[RUN].unique())
            if self._read.forks is None:
                marked = summary.filter(pl.col("key") == FORK_MARK)[RUN].unique().sort()
                self._read.forks = self._fork_fields(marked.to_list())
            summary = summary.filter(pl.col("key").is_in(keys))
            if not tail:
                summary = self._with_integers(summary, keys)
        return summary

    def _with_integers(self, summary: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
        """`summary` (made without the int_value column) with the series that had no finite float
        summarised again with it: an integer attribute is one of those, and decoding a column that
        only simple attributes fill would cost every series row group a column."""
        floatless = summary.filter(pl.col("last").is_null()).select(RUN, "key")
        if floatless.is_empty():
            return summary
        run_ids = floatless[RUN].unique().to_list()
        files = self._files_of(run_ids) if len(run_ids) <= 1000 else None
        rows = self._point_rows(keys, files).filter(pl.col("run_id").is_in(run_ids))
        again = summarize_values(rows).join(floatless, on=[RUN, "key"], how="semi")
        return pl.concat([summary.join(floatless, on=[RUN, "key"], how="anti"), again])

    def summary_points(
        self, keys: Sequence[str], run_ids: Sequence[str] | None, aggregation: str, n_steps: int
    ) -> pl.LazyFrame | None:
        """Points that aggregate exactly like these series: from the persistent summary cache, else from
        a pass that summarises every run's series (stored for later queries).

        A mean_last_n query needs the tails of the series (the cache's `tail` entries); the others their
        `values` (last, min, max, mean_all). None when the mean_last_n window exceeds the stored tail, or
        the cache misses and only some runs are wanted (their files do not summarise the archive).
        """
        if not summary_answers(aggregation, n_steps):
            return None
        keys = list(dict.fromkeys(keys))
        tail = aggregation == "mean_last_n"
        kind, column = ("tail", "tail") if tail else ("values", aggregation)
        cache = self._summaries()
        names = {key: f"{kind} {key}" for key in keys}
        runs = cache.load(["runs"]) if cache is not None else None
        summary = cache.load(list(names.values()), [RUN, "key", column]) if runs is not None else None
        if runs is None or summary is None:
            if run_ids is not None:
                return None
            fresh = self._fresh_summary(keys, tail)
            runs = pl.DataFrame({RUN: self._read.run_ids}, schema={RUN: pl.String})
            if cache is not None:
                values = fresh.select(RUN, "key", *SUMMARY_VALUES)
                entries = {f"values {key}": values.filter(pl.col("key") == key) for key in keys}
                if tail:
                    tails = fresh.select(RUN, "key", "tail")
                    entries |= {names[key]: tails.filter(pl.col("key") == key) for key in keys}
                cache.store({"runs": runs, "forks": self._lineage_frame(self.fork_attributes())} | entries)
            summary = fresh.select(RUN, "key", column)
        self._read.run_ids = runs[RUN].to_list()
        if run_ids is not None:
            summary = summary.filter(pl.col(RUN).is_in(list(run_ids)))
        return summary_points(summary, aggregation, n_steps).lazy()

    def attributes(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Simple attributes of these runs: from the runs table when read, else from their files only."""
        known = self._read.attributes
        todo = [run_id for run_id in dict.fromkeys(run_ids) if run_id not in known]
        if todo:
            files = self._files_of(todo) if self._read.scalars is None and len(todo) <= 1000 else None
            if files is None:
                self.runs()
            scalars = self._scalar_rows(files) if files is not None else self._read.scalars
            assert scalars is not None
            found = _values_by_run(scalars.filter(pl.col("run_id").is_in(todo)))
            known |= {run_id: dict(sorted(found.get(run_id, {}).items())) for run_id in todo}
        return {run_id: known[run_id] for run_id in run_ids}

    def _summaries(self) -> SummaryCache | None:
        """The summary cache of the archive as listed (None without `cache`)."""
        if self.cache and self._read.summaries is None:
            self._read.summaries = SummaryCache(self.folder, self.files, self._file_stats(), self.events)
        return self._read.summaries if self.cache else None

    def _stored_lineage(self, name: str) -> dict[str, dict[str, Any]] | None:
        """The cache's `lineage` (every run's) or `forks` (the forked runs') entry, when it holds it."""
        cache = self._summaries()
        stored = cache.load([name]) if cache is not None else None
        return None if stored is None else {row.pop(RUN): row for row in stored.iter_rows(named=True)}

    def _lineage_rows(self, files: Sequence[str] | None = None) -> pl.DataFrame:
        """The simple attributes at LINEAGE_PATHS of these files (the reader skips the other row groups by
        their statistics), from the runs table's pass when it was made."""
        if self._read.scalars is not None:
            return self._read.scalars.filter(pl.col("attribute_path").is_in(LINEAGE_PATHS))
        with self._reading():
            scan = self._scan(files).filter(pl.col("attribute_path").is_in(LINEAGE_PATHS))
            rows = scan.select("run_id", "attribute_path", "attribute_type", *_VALUE_COLUMNS.values())
            return rows.collect()

    def _fork_fields(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The lineage fields of these runs (their FORK_MARK found) that forked, read from their files only."""
        if not run_ids:
            return {}
        rows = self._lineage_rows(self._files_of(run_ids) if len(run_ids) <= 1000 else None)
        found = _lineage_of(rows.filter(pl.col("run_id").is_in(list(run_ids))))
        return {run_id: fields for run_id, fields in found.items() if fields["parent_run_id"]}

    def lineage_attributes(self) -> dict[str, dict[str, Any]]:
        """Read once: from the summary cache when it holds them, else from the rows at LINEAGE_PATHS of
        every part (kept in the cache for the next query)."""
        if self._read.lineage is None:
            self._read.lineage = self._stored_lineage("lineage")
        if self._read.lineage is None:
            self._read.lineage = _lineage_of(self._lineage_rows())
            if (cache := self._summaries()) is not None:
                cache.store({"lineage": self._lineage_frame(self._read.lineage)})
        return self._read.lineage

    def fork_attributes(self) -> dict[str, dict[str, Any]]:
        """The lineage fields of the forked runs alone. Read once: found by the summary pass when one was
        made (its points of FORK_MARK), else from every run's lineage when at hand or the cache, else by a
        pass over FORK_MARK alone (the parts' footers are most of its time) and the forked runs' files."""
        if self._read.forks is None and (self._read.lineage is not None or self._read.scalars is not None):
            self._read.forks = super().fork_attributes()  # every run's lineage is known or at hand
        if self._read.forks is None:
            self._read.forks = self._stored_lineage("forks")
        if self._read.forks is None:
            with self._reading():
                marked = self._scan().filter(pl.col("attribute_path") == FORK_MARK).select("run_id").collect()
            self._read.forks = self._fork_fields(sorted(set(marked["run_id"].to_list())))
        return self._read.forks

    @staticmethod
    def _lineage_frame(lineage: dict[str, dict[str, Any]]) -> pl.DataFrame:
        """Lineage fields by run as the summary cache keeps them."""
        return pl.DataFrame(
            [{RUN: run_id, **fields} for run_id, fields in lineage.items()],
            schema={RUN: pl.String()} | polars_schema(tuple((name, CORE[name]) for name in LINEAGE)),
        )

    def numeric_keys(self) -> list[str]:
        with self._reading():
            paths = (
                self._scan()
                .filter(pl.col("attribute_type").is_in(NUMERIC_TYPES))
                .select(pl.col("attribute_path").unique())
                .collect()
            )
        return sorted(paths["attribute_path"].to_list())

    def raw_run(self, run_id: str) -> dict[str, Any]:
        return self.attributes([run_id])[run_id]

    def close(self) -> None:
        self._read = _Read(self.files, self._read.unreadable)

    # ---------------------------------------------------------------- export

    def _series_rows(self, files: Sequence[str] | None = None) -> pl.LazyFrame:
        return self._scan(files).filter(pl.col("step").is_not_null())

    def export_runs(self) -> list[NeptuneRun]:
        run_ids = self.runs()["run_id"].to_list()
        attributes = self.attributes(run_ids)
        with self._reading():
            last = (
                self._series_rows()
                .filter(pl.col("attribute_type") == "float_series")
                .group_by("run_id", "attribute_path")
                .agg(pl.col("float_value").sort_by(pl.col("step").cast(pl.Float64)).last())  # streams
                .sort("run_id", "attribute_path")
                .collect(engine="streaming")
            )
        last_values: dict[str, dict[str, float]] = {}
        for run_id, path, value in last.iter_rows():
            last_values.setdefault(run_id, {})[path] = value
        return [NeptuneRun(r, attributes[r], last_values.get(r, {})) for r in run_ids]

    def export_files(self, runs: Sequence[NeptuneRun]) -> Iterator[tuple[str, list[RunFile]]]:
        """The files the archive's file attributes name (shared.neptune.files), in one pass over the parts."""
        wanted = [run.run_id for run in runs]
        with self._reading():
            rows = (
                self._scan()
                .filter(pl.col("attribute_type").is_in(FILE_TYPES) & pl.col("run_id").is_in(wanted))
                .select(
                    "run_id", "attribute_path", pl.col("file_value").struct.field("path").alias("location")
                )
                .drop_nulls("location")
                .sort("run_id", "attribute_path", "location")
                .collect()
            )
        root = archive_files_root(self.folder)
        found: dict[str, list[RunFile]] = {run_id: [] for run_id in wanted}
        for run_id, attribute_path, location in rows.iter_rows():
            found[run_id] += archive_run_files(root, run_id, attribute_path, location)
        yield from found.items()

    def export_series(self, runs: Sequence[NeptuneRun], streams: frozenset[str]) -> Iterator[SeriesBatch]:
        """Every series point in one pass over the parts, a batch of whole runs at a time (a run's console
        output is split into lines in one piece): the float and string series in one query. The histogram
        and file structs cost a query as much as the rest: they are read, by a second query, only for a
        batch that has such series. A series of a kind the exporter did not write when this was made is
        counted as skipped and named in a warning."""
        numbers = bool(streams & {"history", "system"})
        others = bool(streams & {"history_other", "console"})
        kind = pl.col("attribute_type")
        point = ("run_id", "key", "step", "timestamp")
        unknown: set[str] = set()
        sizes = [stat.st_size for stat in self._file_stats()]
        with self.events.progress("archive files", len(self.files), verb="read") as progress:
            for files, _size in run_batches(self.files, sizes):
                series = self._series_rows(files).with_columns(pl.col("attribute_path").alias("key"))
                rows = series.select(
                    *point,
                    kind.cast(pl.Categorical),  # one of a few names on every row
                    "float_value",
                    *(["string_value"] if others else []),
                )
                if not (numbers and others):
                    rows = rows.filter((kind == "float_series") if numbers else (kind != "float_series"))
                with self._reading():
                    frame = rows.collect()
                floats = frame.filter(kind == "float_series").select(
                    *point,
                    # neptune-exporter's pandas conversion stores a NaN point as null
                    pl.col("float_value").fill_null(math.nan).alias("value"),
                )
                if not others:
                    yield SeriesBatch(floats)
                    progress.advance(len(files))
                    continue
                strings = frame.filter(kind == "string_series").select(
                    *point, pl.lit("string").alias("type"), pl.col("string_value").alias("value")
                )
                structured = pl.DataFrame(schema=OTHER_POINTS)
                if frame.filter(kind.is_in(STRUCTURED_SERIES)).height:
                    with self._reading():
                        structured = _structured_points(
                            series.filter(kind.is_in(STRUCTURED_SERIES))
                            .select(*point, "attribute_type", "histogram_value", "file_value")
                            .collect()
                        )
                left_out = frame.filter(~kind.is_in(["float_series", *OTHER_SERIES]))
                unknown.update(left_out["attribute_type"].cast(pl.String).unique().to_list())
                skipped = dict(left_out.group_by("run_id").len().iter_rows())
                texts = pl.concat([strings.cast(OTHER_POINTS), structured.cast(OTHER_POINTS)])
                yield SeriesBatch(floats, texts, skipped)
                progress.advance(len(files))
        if unknown:
            self.events.warn(
                f"{'/'.join(self.key)}: series of type {', '.join(sorted(unknown))} are not read (counted in"
                " skipped_history_values)"
            )


def _structured_points(rows: pl.DataFrame) -> pl.DataFrame:
    """Histogram and file series rows as streams.OTHER_POINTS: a histogram as W&B's histogram JSON (`bins`
    its edges, `values` its counts) with Neptune's `histogram_type`; a file as `{"_type": "file", "path":
    …}`, the path where neptune-exporter downloaded it, relative to its files folder. A point without a
    value keeps a null value."""
    texts = [
        _structured_text(*row)
        for row in rows.select("attribute_type", "histogram_value", "file_value").iter_rows()
    ]
    return rows.select(
        "run_id",
        "key",
        "step",
        "timestamp",
        pl.col("attribute_type").replace_strict(OTHER_SERIES, return_dtype=pl.String).alias("type"),
        pl.Series("value", texts, dtype=pl.String),
    )


def _structured_text(kind: str, histogram: dict[str, Any] | None, file: dict[str, Any] | None) -> str | None:
    if kind == "file_series":
        return None if file is None else json.dumps({"_type": "file", "path": file["path"]}, sort_keys=True)
    if histogram is None:
        return None
    value = {"_type": "histogram", "bins": histogram["edges"], "values": histogram["values"]}
    return json.dumps(value | {"histogram_type": histogram["type"]}, sort_keys=True)


def _values_by_run(rows: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Each run's simple attributes (path → value, from the typed value column) of these rows."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows.iter_rows(named=True):
        found.setdefault(row["run_id"], {})[row["attribute_path"]] = row[
            _VALUE_COLUMNS[row["attribute_type"]]
        ]
    return found


def _lineage_of(rows: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Each run's lineage fields (`lineage_fields`) from its simple attributes' rows at LINEAGE_PATHS."""
    found = _values_by_run(rows.filter(pl.col("attribute_type").is_in(SCALAR_TYPES)))
    return {run_id: lineage_fields(values) for run_id, values in sorted(found.items())}


class UnreadableFolder:
    """A sub-folder of an archive that cannot be listed: its export names it and fails (whose project it
    holds is not known, so no project's files count it)."""

    detail = "neptune-archive"
    updatable = False
    key = None

    def __init__(self, folder: Path, reason: str) -> None:
        self.folder, self.reason = folder, reason

    def export_items(self, request: ExportRequest) -> Iterator[ExportItem]:
        yield Unreadable(f"cannot read archive folder {self.folder}: {self.reason}", str(self.folder))

    def export_metadata(self, entity: str, project: str) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass
