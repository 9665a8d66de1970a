"""The error model every layer raises: bad input, work that did not complete, a folder in use; and telling a bug apart."""

from __future__ import annotations

EMPTY_PATH = "an empty path names nothing (use . for the current folder)"  # as a Path, '' would be '.'


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


class ToolFailure(Exception):
    """Work that ran but could not complete: reported as one line, exit code 1."""


class FolderLocked(Exception):
    """Another export holds the output folder: reported as one line, exit code 3."""


def describe(error: BaseException) -> str:
    """One line naming an error (library messages span lines; some are empty)."""
    return " ".join(str(error).split())[:300] or type(error).__name__
