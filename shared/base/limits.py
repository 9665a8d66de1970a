"""Bounds on what users hand the tools: regular files only, text files of bounded size, --since times."""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.base.errors import BadInput

MAX_TEXT_FILE_BYTES = 16 * 2**20  # rules and metadata files hold kilobytes; /dev/zero would never end


_KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a named pipe",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def check_regular_file(path: Path, what: str) -> None:
    """BadInput naming `what` unless `path` is a regular file (opening a named pipe waits for a writer,
    a device may never end); OSError when it cannot be looked at."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS.items() if test(mode)), "something else")
        raise BadInput(f"cannot read {what} {path}: not a regular file ({kind})")


def check_readable_name(path: Path | str, what: str) -> None:
    """BadInput naming `what` when `path` is not valid UTF-8 (a name from a Latin-1 file system, say):
    polars and pyarrow, which read and write the parquet files, take only UTF-8 paths."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise BadInput(
            f"{what} {shown}: its path is not valid UTF-8, which polars and pyarrow need (rename it)"
        ) from None


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of `path`, which must be a regular file of at most MAX_TEXT_FILE_BYTES.

    BadInput naming `what` and `path` otherwise; OSError and UnicodeDecodeError as reading raises them.
    """
    check_regular_file(path, what)
    with path.open("rb") as stream:  # read up to the limit: stat's size may have grown, or be 0 (/proc)
        data = stream.read(MAX_TEXT_FILE_BYTES + 1)
    if len(data) > MAX_TEXT_FILE_BYTES:
        raise BadInput(f"cannot read {what} {path}: larger than {MAX_TEXT_FILE_BYTES // 2**20} MiB")
    return data.decode("utf-8")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`7d`, `24h`, `2w`, `30m` before now, or an ISO date/time (UTC unless it says otherwise); BadInput
    naming --since for anything else, and for a time that UTC cannot hold (year 1 at +01:00)."""
    now = now or datetime.now(UTC)
    usage = f"bad --since {text!r}: use 7d, 24h, 2w, 30m or an ISO date like 2026-01-18"
    duration = _DURATION.fullmatch(text)  # ASCII digits: `²d` passes str.isdigit(), not int()
    if duration:
        amount, unit = duration.groups()
        try:
            return now - timedelta(**{_UNITS[unit.lower()]: int(amount)})
        except OverflowError:
            raise BadInput(f"bad --since {text!r}: that is before the year 1") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(usage) from None
    if not moment.tzinfo:
        return moment.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)  # the server compares in UTC
    except OverflowError:
        raise BadInput(f"bad --since {text!r}: in UTC that is outside the years 1 to 9999") from None
    return moment


_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"([0-9]{1,18})([mhdwMHDW])")
