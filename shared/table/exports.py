"""Runs parquets from any exporter: find them, check them, union their schemas and scan them lazily."""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from shared.base.errors import EMPTY_PATH, BadInput
from shared.base.events import Events
from shared.base.limits import check_regular_file, read_text_file
from shared.base.storage import parquet_schema
from shared.base.text import name_list
from shared.table.schema import HISTORY, RUNS_FILE

REQUIRED_COLUMNS = ("id", "name", "entity", "project")  # what makes a parquet a runs export


RUN_KEY = ("entity", "project", "id")


FILE_INDEX, ROW_INDEX = "__file", "__row"  # hidden columns that locate a row in its input file


SOURCE_COLUMN = "_source_file"


_GLOB_CHARS = re.compile(r"[*?\[]")


def find_runs_files(inputs: Sequence[str], events: Events | None = None) -> list[Path]:
    """Folders (every `*_runs.parquet` below them), files and globs → distinct parquet paths, in order."""
    found: list[Path] = []
    for item in inputs:
        if not item.strip():
            raise BadInput(EMPTY_PATH)
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.rglob(f"*{RUNS_FILE}") if not p.is_dir())
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
            if match.name.endswith(HISTORY.suffix):
                (events or Events()).note(
                    f"skipping history file {match}: runs files (…_runs.parquet) are read here"
                )
            elif match.resolve() not in {p.resolve() for p in found}:
                found.append(match)
    if not found:
        raise BadInput(f"no runs parquet among {name_list(inputs, 10)}")
    return found


@dataclass(frozen=True)
class RunsFile:
    """One runs parquet: where it is, its columns, its row count and when it was exported."""

    path: Path
    schema: dict[str, pl.DataType]
    rows: int
    exported_at: datetime

    @property
    def label(self) -> str:
        return str(self.path)


def export_stem(runs_file: Path) -> str:
    """`x` of an export's `x_runs.parquet`: its sibling files are `x_history.parquet` and `x_metadata.json`."""
    return runs_file.name.removesuffix(RUNS_FILE)


def export_metadata(path: Path) -> dict[str, Any] | None:
    """The sibling `…_metadata.json` the exporters write next to a `…_runs.parquet`; None when there is
    none or it cannot be read (files from older versions, files copied on their own). BadInput when it
    is no regular file, is too large or is nested too deep to read."""
    if not path.name.endswith(RUNS_FILE):
        return None
    metadata = path.with_name(f"{export_stem(path)}_metadata.json")
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


def export_time(path: Path) -> datetime:
    """`exported_at` from the sibling `…_metadata.json` the exporters write, else the file's mtime."""
    metadata = export_metadata(path)
    if metadata is not None:
        try:
            stamp = datetime.fromisoformat(metadata["exported_at"])
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        except (ValueError, KeyError, TypeError):
            pass
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def open_runs_file(path: Path) -> RunsFile:
    """Read a parquet's footer and check that it is a runs export; BadInput naming what it holds if not."""
    check_regular_file(path, "runs file")
    schema = parquet_schema(path)
    rows = pq.ParquetFile(path).metadata.num_rows  # the footer just read: a damaged file failed above
    missing = [c for c in REQUIRED_COLUMNS if c not in schema]
    if missing:
        raise BadInput(
            f"{path} is not a runs export: no {', '.join(missing)} column (it has: {name_list(schema)})"
        )
    return RunsFile(path, schema, rows, export_time(path))


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
    for schema in schemas:
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
    frame: pl.LazyFrame, source: dict[str, pl.DataType], target: dict[str, pl.DataType]
) -> pl.LazyFrame:
    """`frame` with every column of `target`, in its order and types; columns it lacks are null."""
    return frame.select(
        cast_column(n, source[n], t) if n in source else pl.lit(None, dtype=t).alias(n)
        for n, t in target.items()
    )


def scan_runs(
    files: Sequence[RunsFile], schema: dict[str, pl.DataType], rows: Sequence[pl.Series] | None = None
) -> pl.LazyFrame:
    """All files as one lazy frame in `schema` plus `_source_file` and hidden file/row indexes.

    With `rows`, only the rows of file i whose index is in `rows[i]` (a filter that streams).
    """
    frames = []
    for index, runs in enumerate(files):
        frame = conform(pl.scan_parquet(runs.path), runs.schema, schema)
        source = pl.lit(runs.label)
        if SOURCE_COLUMN in runs.schema:  # an aggregated input keeps the exports its rows came from
            source = pl.coalesce(pl.col(SOURCE_COLUMN).cast(pl.String), source)
        frame = frame.with_columns(source.alias(SOURCE_COLUMN), pl.lit(index, pl.Int32).alias(FILE_INDEX))
        frame = frame.with_row_index(ROW_INDEX).with_columns(pl.col(ROW_INDEX).cast(pl.Int64))
        if rows is not None:
            frame = frame.filter(pl.col(ROW_INDEX).is_in(rows[index].implode()))
        frames.append(frame)
    return pl.concat(frames, how="vertical")


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
        return pl.scan_parquet(files[0].path)
    schema, warnings = union_schema([f.schema for f in files])
    for message in warnings:
        (events or Events()).warn(message)
    frame = scan_runs(files, schema)
    winners = newest_copies(frame, files)
    return frame.join(winners, on=[FILE_INDEX, ROW_INDEX], how="semi", maintain_order="left").drop(
        FILE_INDEX, ROW_INDEX
    )


def newest_export(folder: Path) -> tuple[Path, int]:
    """The most recently written runs parquet under `folder` (not history), and how many there were."""
    candidates = (
        [
            p
            for p in folder.rglob("*.parquet")
            if not p.name.endswith(HISTORY.suffix) and not p.name.startswith(".")
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
