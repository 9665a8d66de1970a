"""Terminal tables: rich on a terminal, fitted to its width; plain text when piped; a clear line when there
is nothing to show."""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich.cells import cell_len, set_cell_size
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
    """How many leading columns a pivot always shows: its row labels through its first numeric column."""
    for index, (name, is_number) in enumerate(zip(header, numeric, strict=True)):
        if is_number and name not in RANK_COLUMNS:
            return index + 1
    return 1


def header_words(name: str) -> list[str]:
    """The words of a header, each with the separators after it: a wrapped header breaks only between them."""
    return list(filter(None, _HEADER_PIECE.findall(name)))


def telling_columns(rows: Sequence[Sequence[str]], candidates: Sequence[int]) -> list[int]:
    """The fewest of `candidates` (chosen greedily, each splitting the most pairs of rows still alike, ties
    in table order) whose values together tell the rows apart, or as far apart as they can."""
    chosen: list[int] = []

    def alike(columns: list[int]) -> int:
        counts = Counter(tuple(row[i] for i in columns) for row in rows)
        return sum(n * (n - 1) // 2 for n in counts.values())

    remaining = alike(chosen)
    while remaining:
        pairs, best = min(((alike([*chosen, i]), i) for i in candidates if i not in chosen), default=(0, -1))
        if best < 0 or pairs == remaining:
            break
        chosen.append(best)
        remaining = pairs
    return chosen


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
    keep: Sequence[int],
    of_runs: bool,
) -> Fit:
    """Choose columns and widths so that the table is at most `width` cells wide; shown in table order.

    The `keep` columns are always shown. When the rows are runs (`of_runs`), a column after them that holds
    one value in every row (of two or more) goes to the caption, and the others are taken in the order a
    reader needs them: those that tell the rows apart (`telling_columns`), then `name`, then the rest in
    table order; a pivot's columns are taken in table order. A column is taken when it fits at its least
    width next to those already taken (a narrower one after it may still fit). An `unbreakable` column
    (numbers, ids) is as wide as its widest value; a text column may shrink to TEXT_FLOOR, `name` to
    NAME_FLOOR; no column is narrower than its longest header word. Spare width widens cut values, then
    wrapped headers, evenly.
    """
    count = len(header)
    constant = [
        i
        for i in range(count)
        if of_runs and i not in keep and len(rows) > 1 and len({row[i] for row in rows}) == 1
    ]
    values = [max((text_width(row[i]) for row in rows), default=0) for i in range(count)]
    words = [max(map(cell_len, header_words(header[i])), default=0) for i in range(count)]
    natural = [max(values[i], text_width(header[i])) for i in range(count)]
    least = [min(natural[i], NAME_FLOOR if header[i] == "name" else TEXT_FLOOR) for i in range(count)]
    floors = [max(values[i] if unbreakable[i] else least[i], words[i]) for i in range(count)]
    others = [i for i in range(count) if i not in keep and i not in constant]
    if of_runs:
        names = [i for i in others if header[i] == "name"]
        telling = telling_columns(rows, [i for i in others if i not in names])
        others = [*telling, *names, *(i for i in others if i not in telling and i not in names)]
    taken = set(keep)
    used = 1 + sum(floors[i] + BORDER for i in keep)  # 1: the closing edge
    for i in others:
        if used + floors[i] + BORDER <= width:
            taken.add(i)
            used += floors[i] + BORDER
    shown = sorted(taken)
    widths = {i: floors[i] for i in shown}
    spare = width - used
    for target in (values, natural):  # cut values first, then headers on fewer lines
        spare = _grow(widths, {i: target[i] for i in shown}, spare)
    left_out = [i for i in range(count) if i not in taken and i not in constant]
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
    """`name` over lines of at most `width` cells, broken only between words (after `_`, `/`, `.`, `-` or a
    space); `fit_columns` makes every column at least as wide as its longest header word."""
    lines = [""]
    for word in header_words(name):
        if lines[-1] and cell_len(lines[-1] + word) > width:
            lines.append("")
        lines[-1] += word
    return "\n".join(line.rstrip() or line for line in lines)


def shorten_middle(text: str, width: int, head_cells: int) -> str:
    """`text` in at most `width` cells: its first `head_cells`, `…`, and as much of its end as fits."""
    if cell_len(text) <= width:
        return text
    tail_cells = width - 1 - head_cells
    tail = set_cell_size(text[::-1], tail_cells)[::-1] if tail_cells else ""
    return set_cell_size(text, head_cells) + "…" + tail


def shorten_names(names: Sequence[str], width: int) -> list[str]:
    """Run names in at most `width` cells each, shortened in the middle: names that share a beginning (one
    stage, one model) still read apart by their ends (`stage2c_filt…sbm_k16_s1`). The cut sits as near the
    middle as it can while the shortened names stay as many different ones as the names."""
    middle = (width - 1) - (width - 1) // 2
    cuts = sorted(range(1, width - 1), key=lambda head: abs(head - middle)) or [width - 1]
    distinct = len(set(names))
    for head in cuts:
        shortened = [shorten_middle(name, width, head) for name in names]
        if len(set(shortened)) == distinct:
            return shortened
    return [shorten_middle(name, width, middle) for name in names]


def without_common_prefix(header: Sequence[str], columns: Sequence[int]) -> tuple[list[str], str]:
    """`header` with the first part (`parameters/`, `config.`) that all of `columns` (two or more) share
    taken off their names, unless two names would then read alike; and that part ("" when kept)."""
    starts = {re.match(r"[^/.]+[/.]", header[i]) for i in columns}
    prefixes = {start[0] if start else "" for start in starts}
    if len(columns) < 2 or len(prefixes) != 1 or not (prefix := prefixes.pop()):
        return list(header), ""
    shortened = [name[len(prefix) :] if i in columns else name for i, name in enumerate(header)]
    if len(set(shortened)) < len(shortened) or not all(shortened):
        return list(header), ""
    return shortened, prefix


def terminal_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric: Sequence[bool],
    title: str,
    width: int,
    styles: Sequence[Sequence[str]] | None = None,
    of_runs: bool = True,
    keep: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> Table:
    """A rich table of display texts at most `width` cells wide (see `fit_columns`): numbers and ids are
    never cut, a run's name is shortened in the middle, other long text cut with an ellipsis, all on one
    line. Always shown: rank, ids, the first metric and the `keep` columns when the rows are runs
    (`of_runs`), a pivot's leading columns through its first numeric one. A prefix that every other column
    shares is taken off their headers. The caption says which columns hold one value throughout (`project:
    x`) and which were left out. Texts are shown as they are, never read as markup; `styles` gives a rich
    style per cell."""
    unbreakable = [
        is_number or name in RANK_COLUMNS or name in ID_COLUMNS
        for name, is_number in zip(header, numeric, strict=True)
    ]
    leading = range(key_columns(header, numeric))
    kept = [
        i
        for i, name in enumerate(header)
        if (i in leading and (name != "name" or not of_runs)) or name in keep
    ]
    others = [i for i, name in enumerate(header) if i not in kept and name != "name"]
    header, prefix = without_common_prefix(header, others) if of_runs else (list(header), "")
    fit = fit_columns(header, rows, unbreakable=unbreakable, width=width, keep=kept, of_runs=of_runs)
    caption = [" · ".join(f"{header[i]}: {rows[0][i] or '(empty)'}" for i in fit.constant), *notes]
    if prefix:
        caption.append(f"headers shown without their prefix {prefix}")
    if fit.left_out:
        names = ", ".join(header[i] for i in fit.left_out)
        caption.append(f"left out to fit {width} columns: {names} (piped output shows every column)")
    needed = 1 + sum(column_width + BORDER for column_width in fit.widths)
    table = Table(
        title=Text(printable(title)),
        title_justify="left",
        caption=Text("\n".join(filter(None, caption))) or None,
        caption_justify="left",
        # the columns always shown are wider than the terminal: its lines wrap, no id or number is cut
        # (print it uncropped)
        width=needed if needed > width else None,
    )
    for index, column_width in zip(fit.shown, fit.widths, strict=True):
        table.add_column(
            Text(wrap_header(header[index], column_width), overflow="fold", no_wrap=False),
            justify="right" if numeric[index] else "left",
            width=column_width,
            no_wrap=True,
            overflow="ellipsis",
        )
    texts = [list(row) for row in rows]
    for index, column_width in zip(fit.shown, fit.widths, strict=True):
        if header[index] == "name" and of_runs:
            shortened = shorten_names([row[index] for row in rows], column_width)
            for row, name in zip(texts, shortened, strict=True):
                row[index] = name
    for number, row in enumerate(texts):
        table.add_row(*(Text(row[i], style=styles[number][i] if styles else "") for i in fit.shown))
    return table


def print_table(
    rows: Sequence[dict[str, Any]], *, title: str, empty: str = "nothing to show", keep: Sequence[str] = ()
) -> None:
    """Dict rows as a table on stdout, columns in the first row's key order: on a terminal a rich table
    fitted to its width (`keep`: columns shown whatever the width), piped the title line and plain text
    with every column."""
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
    table = terminal_table(header, texts, numeric=numeric, title=title, width=console.width, keep=keep)
    console.print(table, crop=False)
