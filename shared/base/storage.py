"""Output files: safe names inside an output folder and atomic writes (temp file, fsync, rename)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.base.errors import BadInput, Incomplete
from shared.base.limits import check_readable_name

if TYPE_CHECKING:  # pyarrow takes a tenth of a second to import: only when a parquet file is written
    import polars as pl
    import pyarrow as pa

_UNSAFE_CHARS = re.compile(r"[^\w.\-]+")
_DOT_RUNS = re.compile(r"\.{2,}")
# Room for a suffix and the temp file's `.{name}.XXXXXXXX.tmp` within a file name's 255 bytes.
_MAX_STEM_BYTES = 200


def safe_name(part: str) -> str:
    """A file-name fragment with no path separators, no `..` and no leading dot."""
    cleaned = _DOT_RUNS.sub("_", _UNSAFE_CHARS.sub("_", part)).lstrip(".")
    return cleaned or "_"


def _bounded(stem: str) -> str:
    """`stem`, or if too long for a file name, its start plus a digest of all of it (so still distinct)."""
    encoded = stem.encode()
    if len(encoded) <= _MAX_STEM_BYTES:
        return stem
    digest = hashlib.blake2b(encoded, digest_size=8).hexdigest()
    return encoded[: _MAX_STEM_BYTES - len(digest) - 1].decode(errors="ignore") + "-" + digest


def _joined(parts: tuple[str, ...]) -> str:
    return "_".join(safe_name(p) for p in parts)


def name_stems(*parts: str) -> tuple[str, str]:
    """The file-name stem of `parts` (`{part1}_{part2}`, sanitised, long names cut), and that stem tagged
    `-{digest of the raw parts}`, for parts that sanitise or join to the stem of other parts."""
    digest = hashlib.blake2b(json.dumps(parts).encode(), digest_size=4).hexdigest()
    return _bounded(_joined(parts)), _bounded(f"{_joined(parts)}-{digest}")


def output_path(folder: Path, *parts: str, suffix: str) -> Path:
    """`folder/{part1}_{part2}{suffix}` with every part sanitised and long names cut; never outside `folder`."""
    path = folder / (_bounded(_joined(parts)) + suffix)
    if path.resolve().parent != folder.resolve():
        raise BadInput(f"refusing to write outside {folder}: {path.name}")
    return path


def user_cache(name: str) -> Path:
    """A cache of the tools: `$XDG_CACHE_HOME/run-tools/<name>` (`~/.cache` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "run-tools" / name


def prepare_output_folder(folder: Path) -> Path:
    """Create the output folder if needed; a clear error when it cannot be written."""
    check_readable_name(folder, "output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"cannot create output folder {folder}: {error.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"output folder {folder} is not writable")
    return folder


def check_final_paths(paths: Iterable[Path]) -> None:
    """Before an export reads or writes its files: each final path is absent or a regular file, else a
    BadInput naming it (a symlink would be read through, then replaced; a folder or device clobbered)."""
    for path in paths:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        except OSError as error:
            raise BadInput(f"cannot check output file {path}: {error.strerror}") from None
        if stat.S_ISLNK(mode):
            raise BadInput(f"refusing to write {path}: it is a symbolic link")
        if stat.S_ISDIR(mode):
            raise BadInput(f"refusing to write {path}: it is a folder")
        if not stat.S_ISREG(mode):
            raise BadInput(f"refusing to write {path}: it is not a regular file")


def check_output_file(path: Path, flag: str, *, folder_made_later: bool = False) -> Path:
    """Before any work: `path` can be written as a file (not itself a folder; its folder exists, unless
    the tool makes it later, and is writable); else a BadInput naming `flag`."""
    folder = path.parent
    if path.is_dir():
        raise BadInput(f"{flag} {path} is a folder, not a file name")
    if not folder.is_dir():
        if folder_made_later:
            return path
        raise BadInput(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"{flag} {path}: folder {folder} is not writable")
    return path


def parquet_schema(path: str | Path) -> dict[str, pl.DataType]:
    """A parquet file's schema, from its footer; a one-line BadInput when it is not readable parquet."""
    import polars as pl

    try:
        return dict(pl.scan_parquet(path, glob=False).collect_schema())  # a file name may hold [ * ?
    except (OSError, pl.exceptions.PolarsError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
        raise BadInput(f"cannot read {path} as parquet: {reason}") from None


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, so never toggled while threads write


# AtomicFile's temp files: `.{final name}.{random}.tmp`, beside the final file.
TEMP_FILE = re.compile(r"\.(?P<final>.+)\.\w+\.tmp")


class AtomicFile:
    """A temp file beside `final` that becomes `final` only on `commit()` (fsync, rename, fsync folder)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        try:
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        except OSError as error:
            raise write_error(final, error) from None
        os.close(fd)
        self.temp = Path(name)
        # mkstemp makes the file owner-only; outputs get the permissions any new file would (umask).
        os.chmod(self.temp, 0o666 & ~_UMASK)

    def commit(self) -> None:
        try:
            with open(self.temp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(self.temp, self.final)
            _fsync_folder(self.final.parent)
        except OSError as error:
            raise write_error(self.final, error) from None

    def discard(self) -> None:
        self.temp.unlink(missing_ok=True)


def commit_together(files: Sequence[AtomicFile]) -> None:
    """Move several written temp files into place back to back (all synced first), so that files meant to
    be read together are of two states for no longer than their renames take."""
    target: Path | None = None
    try:
        for file in files:
            target = file.final
            with open(file.temp, "rb+") as handle:
                os.fsync(handle.fileno())
        for file in files:
            target = file.final
            os.replace(file.temp, file.final)
        for folder in dict.fromkeys(file.final.parent for file in files):
            _fsync_folder(folder)
    except OSError as error:
        assert target is not None
        raise write_error(target, error) from None


def write_error(final: Path, error: Exception) -> Incomplete:
    """One line for a failed write (disk full, file too large, no permission, …)."""
    reason = (
        getattr(error, "strerror", None) or (str(error).strip().splitlines() or [type(error).__name__])[0]
    )
    return Incomplete(f"cannot write {final}: {reason}")


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path beside `final`; on success it replaces `final`, on error it is deleted.

    An OSError (or a polars error, which is how polars reports a failed sink) becomes a Incomplete.
    """
    target = AtomicFile(final)
    try:
        yield target.temp
        target.commit()
    except OSError as error:
        raise write_error(final, error) from None
    except Exception as error:
        if type(error).__module__.startswith("polars"):
            raise write_error(final, error) from None
        raise
    finally:
        target.discard()


def staged(final: Path, write: Callable[[Path], None]) -> AtomicFile:
    """A temp file beside `final` that `write` fills, for commit_together; deleted when writing fails."""
    target = AtomicFile(final)
    try:
        write(target.temp)
    except BaseException as error:
        target.discard()
        if isinstance(error, OSError) or type(error).__module__.startswith("polars"):  # as atomic_path
            raise write_error(final, error) from None
        raise
    return target


def write_parquet(table: pa.Table, final: Path) -> None:
    """Write a parquet file atomically."""
    import pyarrow.parquet as pq

    with atomic_path(final) as temp:
        pq.write_table(table, temp, compression="zstd")


def json_text(data: Any) -> str:
    """`data` as the JSON files the tools write hold it (pretty, non-ASCII kept)."""
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


def write_json(data: Any, final: Path) -> None:
    """Write a JSON file atomically (pretty, UTF-8)."""
    with atomic_path(final) as temp:
        temp.write_text(json_text(data), encoding="utf-8")
