"""One output vocabulary for the tools that print a table: `--format table|csv|json|markdown` on stdout and
`-o FILE` in the format its extension names (`.csv`, `.parquet`, `.json`, `.md`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.cli import UsageError

if TYPE_CHECKING:  # polars only where a table is made or written: the scripts' parsers import this module
    import polars as pl

FORMATS = ("table", "csv", "json", "markdown")
OUTPUT_SUFFIXES = (".csv", ".parquet", ".json", ".md")  # the order render.check_output names them in


def add_format_argument(
    parser: argparse.ArgumentParser, *, aliases: Sequence[str] = (), json_flag: bool = False, note: str = ""
) -> None:
    """`--format` (default `table`, the terminal table) and, for tools that had it, `--json` as its alias."""
    parser.add_argument(
        "--format",
        choices=[*FORMATS, *aliases],
        default="table",
        help=f"what stdout gets: table (default), csv, json or markdown{note}",
    )
    if json_flag:
        parser.add_argument(
            "--json", dest="format", action="store_const", const="json", help="the same as --format json"
        )


def check_output_suffix(path: Path) -> None:
    """UsageError (one line) for an -o file whose extension names no format we write."""
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(
            f"-o {path}: unknown extension {path.suffix or '(none)'} (use {', '.join(OUTPUT_SUFFIXES)})"
        )


def flat_columns(frame: pl.LazyFrame | pl.DataFrame) -> list[pl.Expr]:
    """The columns with nested ones (lists: tags) as JSON text, for CSV."""
    import polars as pl

    from shared.runs_io import cast_column

    schema = frame.collect_schema()
    return [cast_column(c, d, pl.String) if d.is_nested() else pl.col(c) for c, d in schema.items()]


def rows_frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> pl.DataFrame:
    """Dict rows as a frame with `columns`: a column of mixed numbers is float, any other mix text."""
    import polars as pl

    def column(name: str) -> pl.Series:
        values = [row.get(name) for row in rows]
        try:
            series = pl.Series(name, values, strict=True)
            if series.dtype != pl.Struct:  # a dict (an empty config section) has no parquet column type
                return series
        except (TypeError, OverflowError, pl.exceptions.PolarsError):
            pass
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values if v is not None):
            return pl.Series(name, values, dtype=pl.Float64, strict=False)
        return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)

    return pl.DataFrame([column(name) for name in columns])


def print_as(table: pl.DataFrame, fmt: str, *, document: Any = None) -> None:
    """`table` on stdout as csv, json or markdown; JSON is `document` when the tool has a nested answer."""
    if fmt == "json" and document is not None:  # without shared.render, which imports pyarrow: 0.3 s
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
        return
    from shared.render import display, json_text, markdown_text

    if fmt == "csv":
        sys.stdout.write(table.select(flat_columns(table)).write_csv())
    elif fmt == "json":
        sys.stdout.write(json_text(table))
    else:
        header, rows, numeric, _ = display(table)
        sys.stdout.write(markdown_text(header, rows, numeric))


def write_table(table: pl.DataFrame, path: Path, *, document: Any = None) -> None:
    """`table` to `path` atomically by its extension; a `.json` file gets `document` when there is one."""
    from shared.render import write_output
    from shared.storage import write_json

    if document is not None and path.suffix.lower() == ".json":
        write_json(document, path)
    else:
        write_output(table, path)


def sink_table(frame: pl.LazyFrame, path: Path) -> None:
    """`frame` to `path` atomically by its extension: .parquet and .csv streamed, .json and .md in memory."""
    from shared.storage import atomic_path

    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        write_table(frame.collect(), path)
        return
    with atomic_path(path) as temp:
        if suffix == ".parquet":
            frame.sink_parquet(temp, compression="zstd")
        else:
            frame.select(flat_columns(frame)).sink_csv(temp)
