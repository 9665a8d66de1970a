"""The error model every layer raises: bad input, work that did not complete, a folder in use; and telling
a bug of ours from an error in what we were given. Exit codes are the CLI's business (shared.cli.main)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

EMPTY_PATH = "an empty path names nothing (use . for the current folder)"  # as a Path, '' would be '.'
_ROOT = Path(__file__).resolve().parent.parent.parent
_OURS = tuple(
    str(_ROOT / folder) for folder in ("shared", "wandb-tools", "neptune-tools")
)  # where bugs are ours
# Error types that, raised by our own code, mean the code is wrong rather than its input.
_BUG_TYPES = (AttributeError, NameError, TypeError, AssertionError, NotImplementedError, ImportError)


class RunToolsError(Exception):
    """An error the tools expect and can say in one line."""


class BadInput(RunToolsError, ValueError):
    """Bad input from the user: a flag, an argument, a file, a name or credentials (the CLI: exit 2)."""


class Incomplete(RunToolsError):
    """Work that ran but could not complete: a server that does not answer, runs missing, a full disk
    (the CLI: exit 1)."""


class ExportChanged(Incomplete):
    """Export files read together that belong to different exports (one is replacing them as they are read):
    readers try again, then fail with this (the CLI: exit 1)."""


class FolderLocked(RunToolsError):
    """Another export holds the output folder (the CLI: exit 3)."""


class UnknownMetric(BadInput):
    """Metrics that no run has a numeric value of; `known` holds the names that do exist."""

    def __init__(self, message: str, unknown: Sequence[str], known: Sequence[str]) -> None:
        super().__init__(message)
        self.unknown, self.known = list(unknown), list(known)


def describe(error: BaseException) -> str:
    """One line naming an error (library messages span lines; some are empty)."""
    return " ".join(str(error).split())[:300] or type(error).__name__


def is_bug(error: BaseException) -> bool:
    """Whether `error` is a programming error of ours: a type such as TypeError or AttributeError raised
    in our own code. The same types raised inside a client library are its answer to odd data, not a bug."""
    if not isinstance(error, _BUG_TYPES):
        return False
    import traceback  # only when an error is looked at: every script imports this module

    frames = traceback.extract_tb(error.__traceback__)
    return not frames or frames[-1].filename.startswith(_OURS)
