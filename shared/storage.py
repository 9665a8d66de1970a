"""Output files: safe names inside an output folder and atomic writes (temp file, fsync, rename)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shared.cli import UsageError

_UNSAFE_CHARS = re.compile(r"[^\w.\-]+")
_DOT_RUNS = re.compile(r"\.{2,}")


def safe_name(part: str) -> str:
    """A file-name fragment with no path separators, no `..` and no leading dot."""
    cleaned = _DOT_RUNS.sub("_", _UNSAFE_CHARS.sub("_", part)).lstrip(".")
    return cleaned or "_"


def output_path(folder: Path, *parts: str, suffix: str) -> Path:
    """`folder/{part1}_{part2}{suffix}` with every part sanitised; never outside `folder`."""
    path = folder / ("_".join(safe_name(p) for p in parts) + suffix)
    if path.resolve().parent != folder.resolve():
        raise UsageError(f"refusing to write outside {folder}: {path.name}")
    return path


def prepare_output_folder(folder: Path) -> Path:
    """Create the output folder if needed; a clear error when it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create output folder {folder}: {error.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {folder} is not writable")
    return folder


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A temp file beside `final` that becomes `final` only on `commit()` (fsync, rename, fsync folder)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        self.temp = Path(name)

    def commit(self) -> None:
        with open(self.temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.temp, self.final)
        _fsync_folder(self.final.parent)

    def discard(self) -> None:
        self.temp.unlink(missing_ok=True)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path beside `final`; on success it replaces `final`, on error it is deleted."""
    target = AtomicFile(final)
    try:
        yield target.temp
        target.commit()
    finally:
        target.discard()


def write_parquet(table: pa.Table, final: Path) -> None:
    """Write a parquet file atomically."""
    with atomic_path(final) as temp:
        pq.write_table(table, temp, compression="zstd")


def write_json(data: Any, final: Path) -> None:
    """Write a JSON file atomically (pretty, UTF-8)."""
    with atomic_path(final) as temp:
        temp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
