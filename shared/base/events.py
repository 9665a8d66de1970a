"""How library code reports while it works: notes, warnings, errors of one part of the work, and progress.

Library functions take an `Events`. By default it keeps what it is told as data (`notes`, `warnings`,
`errors`, secrets redacted) and shows nothing: a Python API caller reads them afterwards. A verb hands in
shared.cli.progress.TerminalEvents, which also shows each line as it comes and draws progress.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from shared.base.text import redact


class Progress(Protocol):
    """Counts the items of one task (runs, files, series)."""

    def advance(self, count: int = 1) -> None: ...

    def set_total(self, total: int) -> None: ...


class Counter:
    """Progress kept as numbers, shown nowhere."""

    def __init__(self, total: int | None = None) -> None:
        self.total, self.done = total, 0

    def advance(self, count: int = 1) -> None:
        self.done += count

    def set_total(self, total: int) -> None:
        self.total = total


class Events:
    """What happened while a piece of library code worked, kept as data."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def note(self, message: str) -> None:
        """A status line: what is being done, what was written."""
        self.notes.append(redact(message))

    def warn(self, message: str) -> None:
        """Something the caller should know: data left out, a file that could not be read, a fallback."""
        self.warnings.append(redact(message))

    def error(self, message: str) -> None:
        """One part of the work failed (a project not exported) while the rest goes on."""
        self.errors.append(redact(message))

    @contextmanager
    def progress(self, noun: str, total: int | None = None, *, verb: str = "fetched") -> Iterator[Progress]:
        """Progress on `total` items called `noun` (`fetched 120 runs`)."""
        yield Counter(total)
