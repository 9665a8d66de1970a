"""Tables as text (cells, markdown, JSON) and as files by extension (.csv, .parquet, .json, .md), written
atomically; `-o` checked once, before any work; rows as frames."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.base.text import printable
from shared.table.vocabulary import check_output_suffix

if TYPE_CHECKING:  # polars only where a table is made or written: the scripts' parsers import this module
    import polars as pl

    from shared.base.storage import AtomicFile


def check_output(path: Path) -> None:
    """BadInput for an -o file we cannot write: an extension not one of ours, a folder, no write access."""
    from shared.base.storage import check_output_file  # tempfile and hashlib: not while flags are parsed

    check_output_suffix(path)
    check_output_file(path, "-o", folder_made_later=True)


def format_value(value: Any, digits: int = 6) -> str:
    """A cell as text: floats to `digits` significant digits, null as empty, control characters escaped
    (a newline would break its row)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else f"{value:.{digits}g}"
    if isinstance(value, list):
        return printable(", ".join(map(str, value)))
    return printable(str(value))


def table_text(table: pl.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    """The header, every cell as display text, and which columns are numeric."""
    rows = [[format_value(v) for v in row] for row in table.iter_rows()]
    return (
        [format_value(name) for name in table.columns],
        rows,
        [dtype.is_numeric() for dtype in table.dtypes],
    )


def markdown_text(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """A GitHub markdown table."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rule = "| " + " | ".join("---:" if num else "---" for num in numeric) + " |"
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def json_text(table: pl.DataFrame) -> str:
    """The table as a JSON array of row objects (non-finite numbers as null)."""
    return table.write_json() + "\n"


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


def write_table(
    table: pl.DataFrame, path: Path, *, document: Any = None, markdown: str | None = None
) -> None:
    """`table` to `path` atomically by its extension; a `.json` file gets `document` and a `.md` file
    `markdown` when there is one."""
    from shared.base.storage import atomic_path, prepare_output_folder

    check_output(path)
    prepare_output_folder(path.parent if str(path.parent) else Path("."))
    suffix = path.suffix.lower()
    with atomic_path(path) as temp:
        if suffix == ".parquet":
            table.write_parquet(temp, compression="zstd")
        elif suffix == ".csv":
            table.select(flat_columns(table)).write_csv(temp)
        elif suffix == ".json":
            text = (
                json_text(table)
                if document is None
                else json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"
            )
            temp.write_text(text, encoding="utf-8")
        else:
            temp.write_text(
                markdown if markdown is not None else markdown_text(*table_text(table)), encoding="utf-8"
            )


def staged_table(frame: pl.LazyFrame, path: Path, *, metadata: dict[str, str] | None = None) -> AtomicFile:
    """`frame` written by `path`'s extension to a temp file beside it, to be committed (alone or with
    others: storage.commit_together): .parquet (with `metadata` as its key-value metadata) and .csv
    streamed, .json and .md in memory."""
    from shared.base.storage import staged

    suffix = path.suffix.lower()

    def write(temp: Path) -> None:
        if suffix == ".parquet":
            frame.sink_parquet(temp, compression="zstd", metadata=metadata)
        elif suffix == ".csv":
            frame.select(flat_columns(frame)).sink_csv(temp)
        else:
            table = frame.collect()
            text = json_text(table) if suffix == ".json" else markdown_text(*table_text(table))
            temp.write_text(text, encoding="utf-8")

    return staged(path, write)
