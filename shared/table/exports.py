"""Runs parquets from any exporter: find them, check them, union their schemas and scan them lazily."""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import polars as pl

from shared.base.errors import EMPTY_PATH, BadInput, ExportChanged, Incomplete
from shared.base.events import Events
from shared.base.limits import check_readable_name, check_regular_file, read_text_file
from shared.base.storage import parquet_schema
from shared.base.text import name_list
from shared.table.schema import (
    FILE_KINDS,
    GENERATION_KEY,
    HISTORY,
    HISTORY_FILE_KEY,
    RUN_FILES_FOLDER,
    RUNS_FILE,
    STREAMS,
)

STREAM_NAMES = {stream.name for stream in STREAMS if stream is not HISTORY}  # the files beside history

T = TypeVar("T")

REQUIRED_COLUMNS = ("id", "name", "entity", "project")  # what makes a parquet a runs export


RUN_KEY = ("entity", "project", "id")


# Hidden columns that locate a row: the index of its input file, and its position among all the inputs'
# rows read one file after another.
FILE_INDEX, ROW_INDEX = "__file", "__row"
_PATH_COLUMN = "__path"  # the file a scanned row is from, as polars names it


SOURCE_COLUMN = "_source_file"


_GLOB_CHARS = re.compile(r"[*?\[]")


def files_under(folder: Path, suffix: str) -> list[Path]:
    """Files (not folders) named `*{suffix}` at any depth below `folder`, sorted, but none of the run files
    an export kept (`files/` beside its metadata: a run's own parquet is no export); Incomplete naming a
    folder below that cannot be listed (a glob would skip it, and its runs, without a word)."""
    found, unreadable = [], []
    for parent, folders, files in os.walk(folder, onerror=unreadable.append):
        if RUN_FILES_FOLDER in folders and any(name.endswith(FILE_KINDS["metadata"]) for name in files):
            folders.remove(RUN_FILES_FOLDER)
        found += [Path(parent, name) for name in files if name.endswith(suffix)]
    if unreadable:
        first = unreadable[0]
        more = f" (and {len(unreadable) - 1} more folders)" if len(unreadable) > 1 else ""
        raise Incomplete(
            f"cannot read {first.filename} ({first.strerror or type(first).__name__}){more}: the runs"
            " files in it would be missing"
        )
    return sorted(found)


def open_runs_files(paths: Sequence[Path], *, with_history: bool = False) -> list[RunsFile]:
    """`open_runs_file` of each path, in order.

    One at a time: opened on 8 threads, 10,000 footers took as long on 2 cores and 1.3 GB instead of 0.14.
    """
    schemas: dict[bytes, dict[str, pl.DataType]] | None = {} if len(paths) > 1 else None
    opened = [open_runs_file(path, with_history=with_history, schemas=schemas) for path in paths]
    # A file whose schema equals the one before holds that very dict: thousands of nightly exports keep one
    # schema in memory, and comparing theirs (the union, the scan's spans) is an identity check.
    for index in range(1, len(opened)):
        if opened[index].schema == opened[index - 1].schema:
            opened[index] = replace(opened[index], schema=opened[index - 1].schema)
    return opened


def superseded(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """The mark an export put in a runs file's metadata when its project is no longer in the offline logs
    it was exported from (`runs_only_here`: its runs that no current export holds); None when unmarked."""
    mark = (metadata or {}).get("superseded")
    return mark if isinstance(mark, dict) else None


def replaced(runs_file: Path) -> bool:
    """Marked superseded, each of its runs exported elsewhere now: readers of its folder skip it."""
    mark = superseded(export_metadata(runs_file))
    return mark is not None and not mark.get("runs_only_here")


def _current(runs_files: list[Path], events: Events) -> list[Path]:
    """The runs files of a folder less those `replaced`, each named in a note; a superseded file that is
    the only copy of some runs is read, with a warning."""
    kept = []
    for runs_file in runs_files:
        mark = superseded(export_metadata(runs_file))
        if mark is None:
            kept.append(runs_file)
        elif mark.get("runs_only_here"):
            events.warn(
                f"{runs_file} is superseded (its project is no longer in the logs it was exported from), but"
                f" {len(mark['runs_only_here'])} of its runs are only there: read"
            )
            kept.append(runs_file)
        else:
            events.note(f"skipping {runs_file}: superseded (its runs are exported under their project now)")
    return kept


def find_runs_files(inputs: Sequence[str], events: Events | None = None) -> list[Path]:
    """Folders (every `*_runs.parquet` below them), files and globs → distinct parquet paths, in order."""
    found: list[Path] = []
    # By device and inode: one file named twice (a link, `a/../a`) is read once.
    seen: set[tuple[int, int] | str] = set()
    for item in inputs:
        if not item.strip():
            raise BadInput(EMPTY_PATH)
        path = Path(item)
        if path.is_dir():
            matches = _current(files_under(path, RUNS_FILE), events or Events())
            if not matches:
                present = sorted(p.name for p in path.iterdir())
                raise BadInput(f"no *_runs.parquet in folder {item} (it holds: {name_list(present, 15)})")
        elif path.exists():  # a pipe or device is refused by open_runs_file
            matches = [path]
        elif _GLOB_CHARS.search(item):
            matches = [Path(p) for p in sorted(glob.glob(item, recursive=True)) if Path(p).is_file()]
            if not matches:
                raise BadInput(f"no file matches {item}")
        else:
            raise BadInput(f"no such file or folder: {item}")
        for match in matches:
            if stream := next((s for s in STREAMS if match.name.endswith(s.suffix)), None):
                (events or Events()).note(
                    f"skipping {stream.name} file {match}: runs files (…_runs.parquet) are read here"
                )
            elif (identity := _identity(match)) not in seen:
                seen.add(identity)
                found.append(match)
    if not found:
        raise BadInput(f"no runs parquet among {name_list(inputs, 10)}")
    return found


def _identity(path: Path) -> tuple[int, int] | str:
    """A file's device and inode; its path when it cannot be stat'ed (open_runs_file then says why)."""
    try:
        found = path.stat()
    except OSError:
        return str(path)
    return found.st_dev, found.st_ino


Stamp = tuple[int, int, int, int] | None  # a file's device, inode, size and change time; None: absent


def _stamp(path: Path) -> Stamp:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


@dataclass(frozen=True)
class RunsFile:
    """One runs parquet: where it is, its columns and when it was exported; the export's generation, its
    history file (when opened with it) and the files' stamps as they were first read (`row_counts` counts
    its rows: the footer reader that knows them costs thousands of nightly exports a quarter second)."""

    path: Path
    schema: dict[str, pl.DataType]
    exported_at: datetime
    generation: str | None = None
    history: Path | None = None  # opened `with_history`: its history file, of the same export
    stamps: tuple[tuple[Path, Stamp], ...] = ()
    # Opened `with_history`: the other stream files its export's metadata names (history_other, console,
    # system), of the same export.
    streams: tuple[tuple[str, Path], ...] = ()

    @property
    def label(self) -> str:
        return str(self.path)


def export_stem(runs_file: Path) -> str:
    """`x` of an export's `x_runs.parquet`: its sibling files are `x_history.parquet` and `x_metadata.json`."""
    return runs_file.name.removesuffix(RUNS_FILE)


def metadata_file_of(path: Path) -> Path | None:
    """`x_metadata.json` beside an export's `x_runs.parquet`; None for a file of another name."""
    return path.with_name(f"{export_stem(path)}_metadata.json") if path.name.endswith(RUNS_FILE) else None


def export_metadata(path: Path) -> dict[str, Any] | None:
    """The sibling `…_metadata.json` the exporters write next to a `…_runs.parquet`; None when there is
    none or it cannot be read (files from older versions, files copied on their own). BadInput when it
    is no regular file, is too large or is nested too deep to read."""
    metadata = metadata_file_of(path)
    if metadata is None:
        return None
    try:
        recorded = json.loads(read_text_file(metadata, "export metadata"))
    except BadInput:
        raise
    except (OSError, ValueError):
        return None
    except RecursionError:
        raise BadInput(f"unreadable export metadata {metadata}: nested too deep") from None
    return recorded if isinstance(recorded, dict) else None


def history_file_of(runs_file: Path, metadata: dict[str, Any] | None = None) -> Path | None:
    """The history file of a runs parquet: as its metadata (read unless given) lists it (None when it was
    exported without history: a file of the usual name beside it is then stale), else `x_history.parquet`."""
    files = (metadata if metadata is not None else export_metadata(runs_file) or {}).get("files")
    if isinstance(files, dict) and "history" in files:
        name = files["history"]
        return runs_file.with_name(Path(name).name) if isinstance(name, str) and name else None
    return history_sibling(runs_file)


def history_sibling(path: Path) -> Path:
    """`x_runs.parquet` → `x_history.parquet`; `x.parquet` (or `x.csv`, …) → `x_history.parquet`."""
    stem = path.stem.removesuffix(RUNS_FILE.removesuffix(".parquet"))
    return path.with_name(f"{stem}{HISTORY.suffix}")


def export_time(path: Path, metadata: dict[str, Any] | None = None) -> datetime:
    """`exported_at` from the sibling `…_metadata.json` the exporters write (read unless given), else
    the file's mtime."""
    metadata = metadata if metadata is not None else export_metadata(path)
    if metadata is not None:
        try:
            stamp = datetime.fromisoformat(metadata["exported_at"])
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        except (ValueError, KeyError, TypeError):
            pass
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def footer_metadata(source: Path | BinaryIO) -> dict[str, str]:
    """A parquet footer's key-value metadata as text: of a file by polars, which reads no more (an API it
    calls experimental: the scripts' locks pin the version, the tests hold it), of an open file by pyarrow,
    which reads its footer alone (polars would read the whole file). OSError, or ValueError or a polars
    error when it is no readable parquet."""
    if isinstance(source, Path):
        return pl.read_parquet_metadata(source)
    import pyarrow as pa  # only here: importing pyarrow and numpy takes a tenth of a second
    import pyarrow.parquet as pq

    try:
        footer = pq.read_metadata(source)
    except pa.ArrowException as error:
        if isinstance(error, OSError | ValueError):
            raise
        raise ValueError(str(error)) from None
    return {
        key.decode(errors="replace"): value.decode(errors="replace")
        for key, value in (footer.metadata or {}).items()
    }


def parquet_generation(metadata: Mapping[str, str]) -> str | None:
    """The export generation in a parquet footer's key-value metadata; None in files of older versions."""
    return metadata.get(GENERATION_KEY) or None


def open_runs_file(
    path: Path, *, with_history: bool = False, schemas: dict[bytes, dict[str, pl.DataType]] | None = None
) -> RunsFile:
    """Read a parquet's footer and check that it is a runs export; BadInput naming what it holds if not.
    `schemas`: the columns polars reads of each Arrow schema met so far, shared by the files opened
    together (see `_read_footer`).

    Its metadata JSON and (`with_history`) history file must be of the export that wrote it (the same
    generation, where both have one); else ExportChanged: an export is replacing them (one_export_state
    reads again).
    """
    check_readable_name(path, "runs file")
    try:
        check_regular_file(path, "runs file")
        path.open("rb").close()  # permission denied, removed meanwhile: not a damaged file (exit 1, not 2)
    except OSError as error:
        raise Incomplete(f"cannot read {path} ({error.strerror or type(error).__name__})") from None
    metadata_file = metadata_file_of(path)
    stamps = [(path, _stamp(path)), *([(metadata_file, _stamp(metadata_file))] if metadata_file else [])]
    footer, schema = _read_footer(path, schemas)
    missing = [c for c in REQUIRED_COLUMNS if c not in schema]
    if missing:
        raise BadInput(
            f"{path} is not a runs export: no {', '.join(missing)} column (it has: {name_list(schema)})"
        )
    metadata = export_metadata(path)
    generation = parquet_generation(footer)
    if different_exports((metadata or {}).get("generation"), generation):
        raise export_changed(
            path, metadata, f"{path.name} and {_name(metadata_file)} are of different exports"
        )
    history = None
    if with_history:
        history = listed_history(path, footer, metadata)
        if history is not None and history.is_file():
            stamps.append((history, _stamp(history)))
            if different_exports(history_generation(history), generation):
                raise export_changed(
                    path, metadata, f"{path.name} and {history.name} are of different exports"
                )
    streams = []
    for name, listed in _stream_files(metadata, history) if with_history else ():
        stream = path.with_name(Path(str(listed)).name)
        if name in STREAM_NAMES and listed and stream.is_file():
            if metadata is None and (generation is None or history_generation(stream) != generation):
                continue  # not of this aggregate: left from an earlier one, which named its own
            stamps.append((stream, _stamp(stream)))
            if different_exports(history_generation(stream), generation):
                raise export_changed(
                    path, metadata, f"{path.name} and {stream.name} are of different exports"
                )
            streams.append((name, stream))
    return RunsFile(
        path,
        schema,
        export_time(path, metadata),
        generation,
        history,
        tuple(stamps),
        tuple(streams),
    )


def _stream_files(metadata: dict[str, Any] | None, history: Path | None) -> list[tuple[str, str]]:
    """The stream files (history_other, console, system, …) by name, as an export's metadata lists them;
    an aggregate, which has no metadata, names them after its history file (`x_history.parquet`:
    `x_system.parquet`, …)."""
    if metadata is not None:
        return [(str(name), str(listed)) for name, listed in (metadata.get("files") or {}).items() if listed]
    if history is None:
        return []
    stem = history.name.removesuffix(HISTORY.suffix)
    return [(name, f"{stem}_{name}.parquet") for name in sorted(STREAM_NAMES)]


def _read_footer(
    path: Path, schemas: dict[bytes, dict[str, pl.DataType]] | None
) -> tuple[dict[str, str], dict[str, pl.DataType]]:
    """A parquet's key-value metadata and its columns as polars reads them; BadInput when it is no
    readable parquet.

    Polars reads the key-value metadata alone, a sixth of the time pyarrow takes to build a whole footer.
    With `schemas`, the columns are worked out once per Arrow schema (the one in that metadata, less its
    own metadata, which holds each export's generation): a thousand nightly exports of one project
    share one.
    """
    try:
        metadata = footer_metadata(path)
    except (OSError, pl.exceptions.PolarsError, ValueError):
        parquet_schema(path)  # the one-line BadInput saying why, as for every unreadable parquet
        raise BadInput(f"cannot read {path} as parquet: no readable footer") from None
    arrow = _arrow_schema(metadata.get("ARROW:schema")) if schemas is not None else None
    schema = schemas.get(arrow) if schemas is not None and arrow is not None else None
    if schema is None:
        schema = parquet_schema(path)
        if schemas is not None and arrow is not None:
            schemas[arrow] = schema
    return metadata, dict(schema)


def _arrow_schema(encoded: str | None) -> bytes | None:
    """The Arrow schema a parquet writer stored (base64, `ARROW:schema`) less its metadata, serialized
    (Arrow's == would overlook the fields' metadata, where polars keeps an Enum's values); None when the
    file has none (a writer other than Arrow's) or it cannot be read."""
    import pyarrow as pa  # only for files opened together

    if not encoded:
        return None
    try:
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded)))
        return schema.remove_metadata().serialize().to_pybytes()
    except (ValueError, pa.ArrowException):
        return None


def _name(path: Path | None) -> str:
    return path.name if path else ""


def different_exports(generation: Any, other: Any) -> bool:
    """Whether two files are of different exports by their generations; files without one (written by
    older versions, or rewritten by hand) are not told apart."""
    return generation is not None and other is not None and generation != other


def history_generation(source: Path | BinaryIO) -> str | None:
    """A history file's generation; None also when it cannot be read (where it is read, that says why)."""
    try:
        return parquet_generation(footer_metadata(source))
    except (OSError, ValueError, pl.exceptions.PolarsError):
        return None


def listed_history(path: Path, footer: Mapping[str, str], metadata: dict[str, Any] | None) -> Path | None:
    """The history file of a runs parquet: as its footer's key-value metadata names it (ours since
    generations), else as its export's metadata does, else `x_history.parquet` beside it (files of older
    versions)."""
    listed = footer.get(HISTORY_FILE_KEY)
    if listed is not None:
        name = Path(listed).name
        return path.with_name(name) if name else None
    return history_file_of(path, metadata or {})


def export_changed(path: Path, metadata: dict[str, Any] | None, what: str) -> ExportChanged:
    """The error of export files read together that are not of one export (`what` says how)."""
    recorded = metadata or {}
    project = f"{recorded.get('entity')}/{recorded.get('project')}" if "project" in recorded else str(path)
    return ExportChanged(f"{project}: {what}: being rewritten by an export")


def check_unchanged(files: Sequence[RunsFile]) -> None:
    """ExportChanged when a file read since `open_runs_file` has been replaced (an export renamed its own
    into place): what was read may mix two exports."""
    for runs in files:
        for path, stamp in runs.stamps:
            if _stamp(path) != stamp:
                raise export_changed(
                    runs.path, export_metadata(runs.path), f"{path.name} was replaced as it was read"
                )


def one_export_state(read: Callable[[], T], *, attempts: int = 5, pause: float = 0.05) -> T:
    """`read()`, again after a growing pause while it raises ExportChanged (an export's renames take
    milliseconds); that error, saying how often it was tried, when every attempt met one."""
    for attempt in range(1, attempts):
        try:
            return read()
        except ExportChanged:
            time.sleep(pause * 2 ** (attempt - 1))
    try:
        return read()
    except ExportChanged as error:
        raise ExportChanged(f"{error} (read {attempts} times; try again once it has finished)") from None


def _family(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "int"
    if dtype.is_float() or dtype.is_decimal():
        return "float"
    if dtype in (pl.String, pl.Categorical, pl.Enum):
        return "string"
    if dtype in (pl.Datetime, pl.Date):
        return "datetime"
    return type(dtype).__name__.lower()  # boolean, duration, list, struct, binary, …


def reconcile(dtypes: Sequence[pl.DataType]) -> tuple[pl.DataType, bool]:
    """The common type of one column seen as `dtypes` in different files, and whether it fell back to string.

    int with int → Int64, int with float → Float64, timestamps → µs (UTC once any is zoned), lists by their
    inner type; all-null columns adapt to the others; anything else mixed becomes String.
    """
    present = [d for d in dtypes if d != pl.Null]
    if not present:
        return pl.String, False
    if all(d == present[0] for d in present):
        return present[0], False
    families = {_family(d) for d in present}
    if families == {"int"}:
        return pl.Int64, False
    if families <= {"int", "float"}:
        return pl.Float64, False
    if families == {"string"}:
        return pl.String, False
    if families == {"datetime"}:
        zones = {d.time_zone for d in present if isinstance(d, pl.Datetime) and d.time_zone}
        return pl.Datetime("us", zones.pop() if len(zones) == 1 else ("UTC" if zones else None)), False
    if families == {"duration"}:
        return pl.Duration("us"), False
    if families == {"list"}:
        inner, fallback = reconcile([d.inner for d in present])  # type: ignore[attr-defined]
        if not fallback:
            return pl.List(inner), False
    return pl.String, True


def union_schema(schemas: Sequence[dict[str, pl.DataType]]) -> tuple[dict[str, pl.DataType], list[str]]:
    """One schema for all files (columns in first-seen order) and a warning per column turned into string."""
    seen: dict[str, list[pl.DataType]] = {}
    for index, schema in enumerate(schemas):
        if index and (schema is schemas[index - 1] or schema == schemas[index - 1]):  # nightly exports
            continue
        for name, dtype in schema.items():
            seen.setdefault(name, []).append(dtype)
    union: dict[str, pl.DataType] = {}
    warnings: list[str] = []
    for name, dtypes in seen.items():
        union[name], fallback = reconcile(dtypes)
        if fallback:
            kinds = ", ".join(sorted({str(d) for d in dtypes}))
            warnings.append(f"column {name} has irreconcilable types ({kinds}) across files: kept as string")
    return union, warnings


def rounded_integers(files: Sequence[RunsFile], schema: dict[str, pl.DataType], shown: int = 3) -> list[str]:
    """A warning per column of integers that the union makes floats where a file holds one a float cannot
    keep exactly (beyond 2^53), naming the column, the runs and their values as they were and become."""
    floats = [name for name, target in schema.items() if target.is_float() and name not in RUN_KEY]
    # By schema (files of one schema share its dict): which of those columns it holds as integers.
    integers: dict[int, set[str]] = {}
    for runs in files:
        if id(runs.schema) not in integers:
            integers[id(runs.schema)] = {
                n for n in floats if n in runs.schema and runs.schema[n].is_integer()
            }
    warnings = []
    for name in floats:
        target = schema[name]
        found: list[str] = []
        for runs in files:
            if name not in integers[id(runs.schema)]:
                continue
            source = runs.schema[name]
            value = pl.col(name)
            changed = value.cast(target).cast(source, strict=False).ne_missing(value)
            keys = [key for key in RUN_KEY if key in runs.schema]
            rows = (
                pl.scan_parquet(runs.path, glob=False)
                .select(*keys, name)
                .filter(changed)
                .head(shown)
                .collect()
            )
            found += [
                f"{'/'.join(str(row[key]) for key in keys)} in {runs.label}: {row[name]} -> {float(row[name])!r}"
                for row in rows.iter_rows(named=True)
            ]
        if found:
            listed = "; ".join(found[:shown]) + (" and more" if len(found) > shown else "")
            warnings.append(
                f"column {name}: integers beyond 2^53 meet floats in another file and are rounded ({listed})"
            )
    return warnings


def cast_column(name: str, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    """`name` converted from `source` to `target`; nested values become JSON text when target is String."""
    column = pl.col(name)
    if source == target:
        return column
    if source == pl.Null:
        return pl.lit(None, dtype=target).alias(name)
    if target == pl.String and source.is_nested():
        text = pl.struct(column.alias("v")).struct.json_encode().str.slice(5).str.strip_suffix("}")
        return pl.when(column.is_null()).then(None).otherwise(text).alias(name)
    return column.cast(target, strict=False)


def conform(
    frame: pl.LazyFrame,
    source: dict[str, pl.DataType],
    target: dict[str, pl.DataType],
    keep: Sequence[str] = (),
) -> pl.LazyFrame:
    """`frame` with every column of `target`, in its order and types (columns it lacks are null), then `keep`."""
    return frame.select(
        *(
            cast_column(n, source[n], t) if n in source else pl.lit(None, dtype=t).alias(n)
            for n, t in target.items()
        ),
        *keep,
    )


def scan_runs(
    files: Sequence[RunsFile], schema: dict[str, pl.DataType], rows: pl.Series | None = None
) -> pl.LazyFrame:
    """All files as one lazy frame in `schema` plus `_source_file` and the hidden file and row indexes.

    Consecutive files of one schema are read by one scan (thousands of nightly exports are a few scans,
    not a query plan per file). A row's ROW_INDEX is its position in its scan plus the scan's first file
    index times 2^32: unique, in file and row order, and known without counting any file's rows first.
    With `rows`, only the rows whose ROW_INDEX is in it (a semi join; it streams).
    """
    frames = []
    for first, end in _same_schema_spans(files):
        span = files[first:end]
        paths = [str(f.path) for f in span]
        frame = pl.scan_parquet(
            paths, glob=False, row_index_name=ROW_INDEX, include_file_paths=_PATH_COLUMN
        ).with_columns((pl.col(ROW_INDEX).cast(pl.Int64) + (first << 32)).alias(ROW_INDEX))
        if rows is not None:  # a semi join: 10,000 files streamed through it took less memory than is_in
            keep = pl.LazyFrame({ROW_INDEX: rows.cast(pl.Int64)})
            frame = frame.join(keep, on=ROW_INDEX, how="semi", maintain_order="left")
        file_index = pl.col(_PATH_COLUMN).replace_strict(paths, range(first, end), return_dtype=pl.Int32)
        frame = frame.with_columns(file_index.alias(FILE_INDEX))
        frame = conform(frame, span[0].schema, schema, keep=[FILE_INDEX, ROW_INDEX])
        source = pl.lit(pl.Series([f.label for f in span])).gather(pl.col(FILE_INDEX) - first)
        if SOURCE_COLUMN in span[0].schema:  # an aggregated input keeps the exports its rows came from
            source = pl.coalesce(pl.col(SOURCE_COLUMN).cast(pl.String), source)
        frames.append(frame.with_columns(source.alias(SOURCE_COLUMN)))
    return pl.concat(frames, how="vertical")


def row_counts(files: Sequence[RunsFile]) -> list[int]:
    """How many rows each file holds, in order (one scan of the files' row counts)."""
    schema, _ = union_schema([f.schema for f in files])
    counts = dict(scan_runs(files, schema).group_by(FILE_INDEX).len().collect().iter_rows())
    return [counts.get(index, 0) for index in range(len(files))]


def _same_schema_spans(files: Sequence[RunsFile]) -> list[tuple[int, int]]:
    """[first, end) index ranges of consecutive files that have the same schema."""
    spans: list[tuple[int, int]] = []
    for index, runs in enumerate(files):
        if spans and (runs.schema is files[spans[-1][0]].schema or runs.schema == files[spans[-1][0]].schema):
            spans[-1] = (spans[-1][0], index + 1)
        else:
            spans.append((index, index + 1))
    return spans


def newest_copies(frame: pl.LazyFrame, files: Sequence[RunsFile]) -> pl.LazyFrame:
    """File/row indexes of each run's newest copy: by `heartbeat_at`, then export time, then later input."""
    exported = pl.DataFrame(
        {FILE_INDEX: range(len(files)), "__exported": [f.exported_at for f in files]},
        schema={FILE_INDEX: pl.Int32, "__exported": pl.Datetime("us", "UTC")},
    ).lazy()
    heartbeat = pl.col("heartbeat_at") if "heartbeat_at" in frame.collect_schema() else pl.lit(None)
    return (
        frame.select(*RUN_KEY, FILE_INDEX, ROW_INDEX, heartbeat.alias("__heartbeat"))
        .join(exported, on=FILE_INDEX, how="left")
        .sort(["__heartbeat", "__exported", FILE_INDEX], descending=True, nulls_last=True)
        .unique(subset=list(RUN_KEY), keep="first", maintain_order=True)
        .select(FILE_INDEX, ROW_INDEX)
    )


def newest_files(files: Sequence[RunsFile], keys: pl.DataFrame) -> pl.DataFrame:
    """The runs of `keys` (RUN_KEY columns) with the index of the file holding their newest copy, the one
    scan_deduplicated keeps (FILE_INDEX): what else is read of a run comes from that file's export."""
    if len(files) == 1:
        return keys.with_columns(pl.lit(0, pl.Int32).alias(FILE_INDEX))
    schema, _ = union_schema([f.schema for f in files])  # its warnings were given when the runs were read
    frame = scan_runs(files, schema).join(keys.lazy(), on=list(RUN_KEY), how="semi")
    winners = newest_copies(frame, files)
    return frame.join(winners, on=[FILE_INDEX, ROW_INDEX], how="semi").select(*RUN_KEY, FILE_INDEX).collect()


def name_pattern(pattern: str) -> pl.Expr:
    """Rows whose `name` matches `pattern` (a regex searched anywhere, so a plain word is a substring)."""
    check_regex(pattern, "--filter")
    return pl.col("name").str.contains(pattern).fill_null(False)


def check_regex(pattern: str, what: str) -> None:
    """BadInput naming `what` when polars' regex engine rejects `pattern`."""
    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError as error:
        detail = " ".join(
            line.strip() for line in str(error).splitlines() if line.strip().startswith("error:")
        )
        raise BadInput(f"bad regex in {what}: {pattern!r} ({detail or 'not a valid regex'})") from None


def scan_deduplicated(files: Sequence[RunsFile], events: Events | None = None) -> pl.LazyFrame:
    """One lazy frame of all files: schemas unioned (warnings to `events`), each run's newest copy only."""
    if len(files) == 1:
        return pl.scan_parquet(files[0].path, glob=False)
    schema, warnings = union_schema([f.schema for f in files])
    for message in [*warnings, *rounded_integers(files, schema)]:
        (events or Events()).warn(message)
    # The newest copies are found on a narrow scan, then only their rows are read in full.
    winners = newest_copies(scan_runs(files, schema), files).collect()
    return scan_runs(files, schema, winners[ROW_INDEX]).drop(FILE_INDEX, ROW_INDEX)


def newest_export(folder: Path) -> tuple[Path, int]:
    """The most recently written runs parquet under `folder` (not history), and how many there were."""
    candidates = (
        [
            p
            for p in files_under(folder, ".parquet")
            if not p.name.endswith(tuple(stream.suffix for stream in STREAMS)) and not p.name.startswith(".")
        ]
        if folder.is_dir()
        else []
    )
    if not candidates:
        raise BadInput(
            f"no input given and no runs parquet under {folder}/ "
            "(export some first: uv run wandb-tools/export_runs.py … -o wandb_export/)"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime), len(candidates)
