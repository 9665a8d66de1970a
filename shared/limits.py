"""Bounds on what users hand the tools: files (regular ones only, text of bounded size), int, time and
duration flags. Light (no polars, pyarrow or client): the scripts build their parsers from it."""

from __future__ import annotations

import argparse
import math
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.cli import UsageError

MAX_TEXT_FILE_BYTES = 16 * 2**20  # rules and metadata files hold kilobytes; /dev/zero would never end
MAX_INT_FLAG = 10**9  # more than any run count, step window or pool; 2**63 and up overflow polars
_KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a named pipe",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def check_regular_file(path: Path, what: str) -> None:
    """UsageError naming `what` unless `path` is a regular file (opening a named pipe waits for a writer,
    a device may never end); OSError when it cannot be looked at."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS.items() if test(mode)), "something else")
        raise UsageError(f"cannot read {what} {path}: not a regular file ({kind})")


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of `path`, which must be a regular file of at most MAX_TEXT_FILE_BYTES.

    UsageError naming `what` and `path` otherwise; OSError and UnicodeDecodeError as reading raises them.
    """
    check_regular_file(path, what)
    with path.open("rb") as stream:  # read up to the limit: stat's size may have grown, or be 0 (/proc)
        data = stream.read(MAX_TEXT_FILE_BYTES + 1)
    if len(data) > MAX_TEXT_FILE_BYTES:
        raise UsageError(f"cannot read {what} {path}: larger than {MAX_TEXT_FILE_BYTES // 2**20} MiB")
    return data.decode("utf-8")


def int_argument(text: str) -> int:
    """argparse type of an integer flag: a whole number of at most MAX_INT_FLAG in size."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    shown = text if len(text) <= 30 else text[:27] + "…"
    if value > MAX_INT_FLAG:
        raise argparse.ArgumentTypeError(f"{shown} is too large (at most {MAX_INT_FLAG:,})")
    if value < -MAX_INT_FLAG:
        raise argparse.ArgumentTypeError(f"{shown} is too small (at least {-MAX_INT_FLAG:,})")
    return value


def add_timeout_argument(parser: argparse.ArgumentParser) -> None:
    """`--timeout S`: how long to wait for one W&B request."""
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds to wait for one W&B request (default: 60)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`7d`, `24h`, `2w`, `30m` before now, or an ISO date/time (UTC unless it says otherwise)."""
    now = now or datetime.now(UTC)
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    amount, unit = text[:-1], text[-1:].lower()
    if unit in units and amount.isdigit():
        try:
            return now - timedelta(**{units[unit]: int(amount)})
        except OverflowError:
            raise UsageError(f"bad --since {text!r}: that is before the year 1") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"bad --since {text!r}: use 7d, 24h, 2w, 30m or an ISO date like 2026-01-18"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
