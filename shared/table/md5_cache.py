"""Remembered md5s of large local files, so a nightly export of unchanged offline runs does not read their
checkpoints again: one small entry per file under `$XDG_CACHE_HOME/run-tools/file-md5/` (`~/.cache` when
the variable is unset), named by a digest of the file's device, inode, size and modification and change
times. Writing a file changes its change time, which no one can set back: a changed file is hashed again."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

from shared.base.errors import Incomplete
from shared.base.storage import atomic_path, user_cache

MIN_SIZE = 1 << 20  # smaller files are hashed again: reading them costs less than an entry
KEEP_DAYS = 60  # an entry not used for this long is deleted when entries are written and there are many
PRUNE_ABOVE = 1000


def cache_dir() -> Path:
    return user_cache("file-md5")


def _entry(status: os.stat_result) -> Path:
    identity = f"{status.st_dev}:{status.st_ino}:{status.st_size}:{status.st_mtime_ns}:{status.st_ctime_ns}"
    return cache_dir() / hashlib.sha256(identity.encode()).hexdigest()[:32]


def remembered(status: os.stat_result) -> str | None:
    """The md5 (hex) remembered for the file `status` describes, as it is now; None when there is none."""
    if status.st_size < MIN_SIZE:
        return None
    entry = _entry(status)
    try:
        if not stat.S_ISREG(entry.stat().st_mode):  # a pipe put there would be waited on forever
            return None
        md5 = entry.read_text("ascii").strip()
        os.utime(entry)  # used: kept from pruning
    except (OSError, ValueError):
        return None
    return md5 if len(md5) == 32 and all(c in "0123456789abcdef" for c in md5) else None


def remember(status: os.stat_result, md5: str) -> None:
    """Keep the md5 of the file `status` describes (read before it was hashed); a failure to write is
    no error: the file is hashed again next time."""
    if status.st_size < MIN_SIZE:
        return
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        with atomic_path(_entry(status)) as temp:
            Path(temp).write_text(md5, "ascii")
        _prune()
    except (OSError, Incomplete):  # atomic_path's failure to write
        pass


def _prune() -> None:
    """Delete the entries not used for KEEP_DAYS, once there are more than PRUNE_ABOVE."""
    entries = list(os.scandir(cache_dir()))
    if len(entries) <= PRUNE_ABOVE:
        return
    oldest = time.time() - KEEP_DAYS * 86400
    for entry in entries:
        try:
            if entry.stat().st_mtime < oldest:
                os.unlink(entry.path)
        except OSError:
            continue
