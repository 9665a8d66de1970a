"""The files a run holds, as a source lists them (schema.FILES: path, size, md5, updated_at), each with a way
to read its bytes for `--include-files`; the listing of a folder on disk (offline runs, archives)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple

import polars as pl

from shared.table import md5_cache
from shared.table.schema import FILES, polars_schema

CHUNK = 1 << 20  # bytes read at a time: a file's size never decides the memory it takes


class RunFile(NamedTuple):
    """One file of a run: `path` relative to the run (`/`-separated, as the tracker names it), its size and
    md5 (hex) where the source knows them, and `read`, which opens its bytes (None: it cannot be had)."""

    path: str
    size: int | None
    md5: str | None
    updated_at: datetime | None
    read: Callable[[], AbstractContextManager[BinaryIO]] | None = None


def files_frame(run_id: str, files: Sequence[RunFile]) -> pl.DataFrame:
    """A run's rows of `*_files.parquet`."""
    return pl.DataFrame(
        {
            "run_id": [run_id] * len(files),
            "path": [file.path for file in files],
            "size": [file.size for file in files],
            "md5": [file.md5 for file in files],
            "updated_at": [file.updated_at for file in files],
        },
        schema=polars_schema(tuple(FILES.columns.items())),
    )


def md5_hex(base64_digest: str | None) -> str | None:
    """An md5 as W&B gives it (base64) in hex, as every source's is written; None for anything else."""
    if not base64_digest:
        return None
    try:
        digest = base64.b64decode(base64_digest, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 16 else None


def file_md5(read: Callable[[], AbstractContextManager[BinaryIO]]) -> tuple[int, str]:
    """The size and md5 (hex) of the bytes `read` opens, read a CHUNK at a time."""
    digest, size = hashlib.md5(usedforsecurity=False), 0
    with read() as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _opener(location: Path) -> Callable[[], AbstractContextManager[BinaryIO]]:
    return lambda: open(location, "rb")


def local_file(path: str, location: Path) -> RunFile:
    """The RunFile of `location` (a symbolic link followed: `wandb.save` links files into the run), named
    `path`, its md5 remembered across exports while the file is unchanged (shared.table.md5_cache). What
    is not a readable regular file (a link to nothing, a pipe, which would be waited on
    forever) is listed with neither size nor md5, and cannot be kept."""
    try:
        status = os.stat(location)
        if not stat.S_ISREG(status.st_mode):
            return RunFile(path, None, None, None)
        read = _opener(location)
        size, md5 = status.st_size, md5_cache.remembered(status)
        if md5 is None:
            size, md5 = file_md5(read)
            if size == status.st_size:  # not written to while read
                md5_cache.remember(status, md5)
    except OSError:
        return RunFile(path, None, None, None)
    return RunFile(path, size, md5, datetime.fromtimestamp(status.st_mtime, UTC), read)


def folder_paths(folder: Path) -> Iterator[tuple[str, Path]]:
    """Every file under `folder` (links to files followed, to folders not) as its path relative to
    `folder` and its location, in name order; nothing is read."""
    if not folder.is_dir():
        return
    for parent, folders, names in os.walk(folder):
        folders.sort()
        for name in sorted(names):
            location = Path(parent, name)
            yield location.relative_to(folder).as_posix(), location


def folder_files(folder: Path) -> Iterator[RunFile]:
    """`folder_paths` as RunFiles: size and md5 computed, the modification time as updated_at."""
    for path, location in folder_paths(folder):
        yield local_file(path, location)
