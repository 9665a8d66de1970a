"""Tables to files by extension (.csv, .parquet, .json, .md), atomically; rows as frames."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.base.errors import UsageError

if TYPE_CHECKING:  # polars only where a table is made or written: the scripts' parsers import this module
    import polars as pl


OUTPUT_SUFFIXES = (".csv", ".parquet", ".json", ".md")  # the order render.check_output names them in


def check_output_suffix(path: Path) -> None:
    """UsageError (one line) for an -o file whose extension names no format we write."""
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(
            f"-o {path}: unknown extension {path.suffix or '(none)'} (use {', '.join(OUTPUT_SUFFIXES)})"
        )


def flat_columns(frame: pl.LazyFrame | pl.DataFrame) -> list[pl.Expr]:
    """The columns with nested ones (lists: tags) as JSON text, for CSV."""
    import polars as pl

    from shared.table.exports import cast_column

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


def write_table(table: pl.DataFrame, path: Path, *, document: Any = None) -> None:
    """`table` to `path` atomically by its extension; a `.json` file gets `document` when there is one."""
    from shared.analysis.render import write_output
    from shared.base.storage import write_json

    if document is not None and path.suffix.lower() == ".json":
        write_json(document, path)
    else:
        write_output(table, path)


def sink_table(frame: pl.LazyFrame, path: Path) -> None:
    """`frame` to `path` atomically by its extension: .parquet and .csv streamed, .json and .md in memory."""
    from shared.base.storage import atomic_path

    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        write_table(frame.collect(), path)
        return
    with atomic_path(path) as temp:
        if suffix == ".parquet":
            frame.sink_parquet(temp, compression="zstd")
        else:
            frame.select(flat_columns(frame)).sink_csv(temp)
