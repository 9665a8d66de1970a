"""A persistent cache of series summaries (`shared.table.series.summarize`) for a folder of data files.

Entries live in `$XDG_CACHE_HOME/run-tools/series-summaries/<folder digest>/` (`~/.cache` when the
variable is unset), one parquet file per entry, named by a digest of the folder's file names, sizes
and modification times: adding, removing or rewriting any file changes every name, so a changed
folder is never answered from old entries; those are deleted when new ones are written.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from shared.base.events import Events
from shared.base.storage import user_cache
from shared.table.series import SUMMARY_TAIL

FORMAT = 3  # bump whenever what goes into a summary changes


def cache_root() -> Path:
    """Where every folder's entries live."""
    return user_cache("series-summaries")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def fingerprint(files: Sequence[str], stats: Sequence[os.stat_result]) -> str:
    """A digest of these files' names, sizes and modification times (`stats`, one per file) and of the
    summary format."""
    lines = [f"{FORMAT} {SUMMARY_TAIL}"]
    for file, stat in zip(files, stats, strict=True):
        lines.append(f"{file.rpartition(os.sep)[2]}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return _digest("\n".join(lines))


class SummaryCache:
    """The entries of one folder in the state `files` (and their `stats`) describe."""

    def __init__(
        self, folder: Path, files: Sequence[str], stats: Sequence[os.stat_result], events: Events
    ) -> None:
        self.dir = cache_root() / _digest(str(folder.resolve()))
        self.tag = fingerprint(files, stats)
        self.events = events

    def _path(self, name: str) -> Path:
        return self.dir / f"{self.tag}-{_digest(name)}.parquet"

    def load(self, names: Sequence[str], columns: Sequence[str] | None = None) -> pl.DataFrame | None:
        """These entries stacked (only these columns), or None when one is missing or unreadable."""
        paths = [self._path(name) for name in names]
        if not all(path.is_file() for path in paths):
            return None
        try:  # one scan: polars reads the files in parallel
            frame = pl.scan_parquet([str(path) for path in paths], glob=False)
            return (frame.select(columns) if columns else frame).collect()
        except (OSError, pl.exceptions.PolarsError) as error:
            self.events.warn(f"ignoring unreadable cache entries in {self.dir}: {error}")
            return None

    def store(self, entries: Mapping[str, pl.DataFrame]) -> None:
        """Write these entries atomically and delete those of older states; a failure only warns."""
        from shared.base.storage import atomic_path  # imports pyarrow: only when writing

        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for name, frame in entries.items():
                with atomic_path(self._path(name)) as temp:
                    frame.write_parquet(temp, compression="lz4")  # reads faster than zstd
            for entry in self.dir.glob("*.parquet"):
                if not entry.name.startswith(f"{self.tag}-"):
                    entry.unlink(missing_ok=True)
        except OSError as error:
            self.events.warn(f"could not write the summary cache in {self.dir}: {error}")
