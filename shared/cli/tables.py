"""Terminal tables: rich on a terminal, fitted to its width; plain text when piped; a clear line when there
is nothing to show."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shared.base.text import plain_text, printable

TEXT_FLOOR = 10  # a text column shortened with an ellipsis keeps at least this many characters
NAME_FLOOR = 20  # and a run's name, what people know a run by, this many
RANK_COLUMNS = frozenset({"rank", "#"})
ID_COLUMNS = frozenset({"id", "run id", "run_id", "column"})  # never cut; `column`: a name in --schema
BORDER = 3  # per column: one padding space each side and a rule; plus one for the closing edge
_HEADER_PIECE = re.compile(r"[^_/.\- ]*[_/.\- ]*")  # a word and the separators after it


class _DataConsole(Console):
    """Rich's console, except that a reader gone away (`| head`) is a BrokenPipeError for run_main to
    treat as success: rich's own handling exits with status 1 and says nothing."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def console_for(stream: TextIO) -> Console:
    """A rich console on `stream`; piped output gets its natural width instead of 80 folded columns."""
    return _DataConsole(file=stream) if stream.isatty() else _DataConsole(file=stream, width=10_000)


def text_width(text: str) -> int:
    """Terminal cells taken by the widest line of `text`."""
    return max(cell_len(line) for line in text.split("\n"))


def key_columns(header: Sequence[str], numeric: Sequence[bool]) -> int:
    """How many leading columns a fitted table always shows: through the first numeric column that is not
    a rank (rank, id, name and the metric of a ranking; a pivot's row labels and first column)."""
    for index, (name, is_number) in enumerate(zip(header, numeric, strict=True)):
        if is_number and name not in RANK_COLUMNS:
            return index + 1
    return 1


@dataclass(frozen=True)
class Fit:
    """The columns a terminal table shows (indices, in order) at their widths, and those it does not."""

    shown: list[int]
    widths: list[int]
    constant: list[int]  # one value in every row: said in the caption
    left_out: list[int]  # too wide for the terminal


def fit_columns(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    unbreakable: Sequence[bool],
    width: int,
    keep: int,
    fold_constant: bool,
) -> Fit:
    """Choose columns and widths so that the table is at most `width` cells wide.

    Columns after the first `keep` that hold one value in every row (of two or more) are folded when
    `fold_constant`. An `unbreakable` column (numbers, ids) is as wide as its widest value; a text column
    may shrink to TEXT_FLOOR, `name` to NAME_FLOOR (the rest cut with an ellipsis). In table order, each
    column after the first `keep` is shown when it fits at that width next to those already taken, else
    left out (a narrower one after it may still fit). Spare width widens cut values, then wrapped
    headers, evenly.
    """
    count = len(header)
    constant = [
        i
        for i in range(keep, count)
        if fold_constant and len(rows) > 1 and len({row[i] for row in rows}) == 1
    ]
    values = [max((text_width(row[i]) for row in rows), default=0) for i in range(count)]
    natural = [max(values[i], text_width(header[i])) for i in range(count)]
    least = [min(natural[i], NAME_FLOOR if header[i] == "name" else TEXT_FLOOR) for i in range(count)]
    floors = [max(values[i], least[i]) if unbreakable[i] else least[i] for i in range(count)]
    shown: list[int] = []
    left_out: list[int] = []
    used = 1  # the closing edge
    for i in range(count):
        if i in constant:
            continue
        if i < keep or used + floors[i] + BORDER <= width:
            shown.append(i)
            used += floors[i] + BORDER
        else:
            left_out.append(i)
    widths = {i: floors[i] for i in shown}
    spare = width - used
    for target in (values, natural):  # cut values first, then headers on fewer lines
        spare = _grow(widths, {i: target[i] for i in shown}, spare)
    return Fit(shown, [widths[i] for i in shown], constant, left_out)


def _grow(widths: dict[int, int], targets: dict[int, int], spare: int) -> int:
    """Widen the columns narrower than their target by `spare` cells in all, evenly; the cells left over."""
    growing = [i for i in widths if widths[i] < targets[i]]
    while spare > 0 and growing:
        share = max(1, spare // len(growing))
        for i in list(growing):
            grown = min(share, targets[i] - widths[i], spare)
            widths[i] += grown
            spare -= grown
            if widths[i] == targets[i]:
                growing.remove(i)
    return spare


def wrap_header(name: str, width: int) -> str:
    """`name` over lines of at most `width` cells, broken after `_`, `/`, `.`, `-` or a space where it can."""
    pieces = [
        piece[start : start + width]
        for piece in filter(None, _HEADER_PIECE.findall(name))
        for start in range(0, len(piece), width)
    ]
    lines = [""]
    for piece in pieces:
        if lines[-1] and cell_len(lines[-1] + piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(line.rstrip() or line for line in lines)


def terminal_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric: Sequence[bool],
    title: str,
    width: int,
    styles: Sequence[Sequence[str]] | None = None,
    fold_constant: bool = True,
    notes: Sequence[str] = (),
) -> Table:
    """A rich table of display texts at most `width` cells wide (see `fit_columns`): numbers and ids are
    never split, long text is cut with an ellipsis on one line, and the caption says which columns hold one
    value throughout (`project: x`) and which were left out. Texts are shown as they are, never read as
    markup; `styles` gives a rich style per cell."""
    unbreakable = [
        is_number or name in RANK_COLUMNS or name in ID_COLUMNS
        for name, is_number in zip(header, numeric, strict=True)
    ]
    fit = fit_columns(
        header,
        rows,
        unbreakable=unbreakable,
        width=width,
        keep=key_columns(header, numeric),
        fold_constant=fold_constant,
    )
    caption = [" · ".join(f"{header[i]}: {rows[0][i] or '(empty)'}" for i in fit.constant), *notes]
    if fit.left_out:
        names = ", ".join(header[i] for i in fit.left_out)
        caption.append(f"left out to fit {width} columns: {names} (piped output shows every column)")
    table = Table(
        title=Text(printable(title)),
        title_justify="left",
        caption=Text("\n".join(filter(None, caption))) or None,
        caption_justify="left",
    )
    for index, column_width in zip(fit.shown, fit.widths, strict=True):
        table.add_column(
            Text(wrap_header(header[index], column_width), overflow="fold", no_wrap=False),
            justify="right" if numeric[index] else "left",
            width=column_width,
            no_wrap=True,
            overflow="ellipsis",
        )
    for number, row in enumerate(rows):
        table.add_row(*(Text(row[i], style=styles[number][i] if styles else "") for i in fit.shown))
    return table


def print_table(rows: Sequence[dict[str, Any]], *, title: str, empty: str = "nothing to show") -> None:
    """Dict rows as a table on stdout, columns in the first row's key order: on a terminal a rich table
    fitted to its width, piped the title line and plain text with every column."""
    if not rows:
        sys.stdout.write(printable(empty) + "\n")
        return
    columns = list(rows[0])
    header = [printable(column) for column in columns]
    texts = [[printable("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    numeric = []
    for column in columns:
        values = [row.get(column) for row in rows if row.get(column) is not None]
        numeric.append(bool(values) and all(isinstance(value, int | float) for value in values))
    if not sys.stdout.isatty():
        sys.stdout.write(printable(title) + "\n" + plain_text(header, texts, numeric))
        return
    console = console_for(sys.stdout)
    console.print(terminal_table(header, texts, numeric=numeric, title=title, width=console.width))
