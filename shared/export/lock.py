"""One export per output folder: a lock file naming its holder (PID, start time); a dead holder's is taken over."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from shared.base.errors import BadInput, FolderLocked
from shared.base.events import Events
from shared.base.storage import TEMP_FILE
from shared.export.kept_files import leftover_temp_files
from shared.table.schema import FILE_KINDS

LOCK_NAME = ".export.lock"
# An interrupted export is resumed only this soon after it started: a later export (tomorrow's cron
# run) wants fresh files, not yesterday's.
RESUME_WITHIN = timedelta(hours=12)
EXPORT_FILE_ENDINGS = tuple(FILE_KINDS.values())


def _read_record(fd: int) -> dict[str, Any] | None:
    """The JSON record in the lock file; None when it is empty (free) or unreadable (cut short by a crash)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    try:
        record = json.loads(os.pread(fd, size, 0))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class FolderLock:
    """`with FolderLock(folder) as lock:` holds the folder for this process, else raises FolderLocked (exit 3).

    The lock is an flock on `folder/.export.lock`, so the kernel releases it when the holder dies, however
    it dies; the file's content says who holds it. Content left behind by a holder that died is its last
    record (`previous`): the lock is taken over with a warning, and the record tells what it had done.
    An export that ends removes the file while it still holds the lock; so a process that locked the file
    just before (it opened it first) checks that the path still names the file it locked, else locks anew.
    """

    def __init__(self, folder: Path, events: Events | None = None) -> None:
        self.path = folder / LOCK_NAME
        self.events = events or Events()
        self.previous: dict[str, Any] | None = None
        self._fd: int | None = None
        self._record: dict[str, Any] = {}

    def __enter__(self) -> FolderLock:
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_record(fd) or {}
                os.close(fd)
                raise FolderLocked(
                    f"output folder {self.path.parent} is in use by another export"
                    f" (PID {holder.get('pid', 'unknown')} on {holder.get('host', 'unknown host')},"
                    f" started {holder.get('started_at', 'at an unknown time')}); lock file {self.path}"
                ) from None
            if self._names(fd):
                break
            os.close(fd)  # its holder removed it as it ended: a lock on it would hold nothing
        self._fd = fd
        self.previous = _read_record(fd)
        if self.previous is not None:
            self.events.warn(
                f"taking over the lock of export PID {self.previous.get('pid')} on {self.previous.get('host')}"
                f" (started {self.previous.get('started_at')}), which ended without releasing it"
            )
        # Temp files of export files are an earlier export's, cut off (a lock record of its own may be
        # gone with the lock file): no other export writes here while this one holds the lock.
        for leftover in self.path.parent.glob(".*.tmp"):
            written = TEMP_FILE.fullmatch(leftover.name)
            if written and written["final"].endswith(EXPORT_FILE_ENDINGS):
                leftover.unlink(missing_ok=True)
        for leftover in leftover_temp_files(self.path.parent):  # of run files (--include-files)
            leftover.unlink(missing_ok=True)
        self._record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.update()
        return self

    def _open(self) -> int:
        """The lock file, created if missing; a BadInput for a symlink (whose target the lock would
        truncate) or anything else but a regular file."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            reason = {errno.ELOOP: "it is a symbolic link", errno.EISDIR: "it is a folder"}.get(
                error.errno, error.strerror
            )
            raise BadInput(f"cannot use lock file {self.path}: {reason}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BadInput(f"cannot use lock file {self.path}: it is not a regular file")
        return fd

    def _names(self, fd: int) -> bool:
        """Whether the lock path still names the file open as `fd`."""
        try:
            named = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def resume(self, task: dict[str, Any]) -> list[str]:
        """The projects an interrupted export of the same `task` completed (not to fetch again).

        Records `task` as this holder's, so that an interruption of this export is resumed in turn.
        """
        task = json.loads(json.dumps(task, default=str))  # as it reads back from the file
        previous = self.previous or {}
        done: list[str] = []
        if previous.get("task") == task and previous.get("completed"):
            try:
                started = datetime.fromisoformat(str(previous.get("started_at")))
            except ValueError:
                started = datetime.min.replace(tzinfo=UTC)  # no telling when: too old to trust
            if datetime.now(UTC) - started <= RESUME_WITHIN:
                done = list(previous["completed"])
                self.events.note(
                    f"resuming the export started {previous['started_at']}: {len(done)} project(s)"
                    f" it completed are not fetched again ({', '.join(done)})"
                )
        self.update(task=task, completed=done)
        return done

    def completed(self, name: str) -> None:
        """Record that project `name` is complete (its files are final)."""
        self.update(completed=[*self._record.get("completed", []), name])

    def update(self, **fields: Any) -> None:
        """Add `fields` to the holder's record in the lock file (what a successor needs to resume)."""
        assert self._fd is not None, "lock not held"
        self._record |= fields
        data = json.dumps(self._record, default=str).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Release: the lock file is removed while still locked (see the class), so the folder holds only the
        export's files. After Ctrl-C the file and its record stay (as after a kill), so the next export
        resumes where this one stopped.
        """
        if self._fd is not None:
            if not isinstance(error, KeyboardInterrupt) and self._names(self._fd):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None
