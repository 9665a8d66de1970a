"""Progress and events on the terminal: a rich bar on a terminal, a plain line every N items under cron or CI,
and TerminalEvents, which shows what the library reports (shared.base.events) as it comes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING

from shared.base.events import Events
from shared.cli.main import is_interactive, log, warn

if TYPE_CHECKING:  # rich only where a bar is drawn
    from rich.progress import Progress


class ItemProgress:
    """Counts items (runs, files) of one task; `with ItemProgress("runs", total) as p: p.advance()`."""

    def __init__(
        self, noun: str, total: int | None = None, *, verb: str = "fetched", every: int = 100
    ) -> None:
        self.noun, self.verb, self.every, self.total = noun, verb, every, total
        self.done = 0
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> ItemProgress:
        if is_interactive():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn(f"{self.verb} {self.noun}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.noun, total=self.total)
        return self

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=total)

    def advance(self, count: int = 1) -> None:
        before, self.done = self.done, self.done + count
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.done)
        elif self.done // self.every > before // self.every:
            log(f"... {self.verb} {self.done // self.every * self.every} {self.noun}")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()


class TerminalEvents(Events):
    """Events shown on stderr as they come (and kept, as Events keeps them): notes as they are, warnings
    as `warning: …`, a failed part of the work as `error: …`, progress as ItemProgress."""

    def note(self, message: str) -> None:
        super().note(message)
        log(message)

    def warn(self, message: str) -> None:
        super().warn(message)
        warn(message)

    def error(self, message: str) -> None:
        super().error(message)
        log(f"error: {message}")

    @contextmanager
    def progress(
        self, noun: str, total: int | None = None, *, verb: str = "fetched"
    ) -> Iterator[ItemProgress]:
        with ItemProgress(noun, total, verb=verb) as progress:
            yield progress
