"""`--include-files GLOB`: the run files it matches, kept under `<output>/files/<stem>/<run_id>/<path>`.

Each file is written to a temp file beside its final name while its md5 is computed, checked against the
size and md5 the source listed, and renamed into place only when both match. A file already there with the
listed size and md5 is not fetched again. A path that would leave its run's folder (absolute, `..`) or is
not a file name (control characters, `\\`, empty parts) is refused. A few files are fetched at once
(`workers`), each streamed to disk a chunk at a time."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from shared.base.errors import describe, is_bug
from shared.base.storage import TEMP_FILE, AtomicFile
from shared.table.run_files import CHUNK, RunFile, file_md5
from shared.table.schema import RUN_FILES_FOLDER

FILES_FOLDER = RUN_FILES_FOLDER  # in the output folder: files/<stem>/<run_id>/<path>
_MAX_PART_BYTES = 200  # room for the temp file's `.{name}.XXXXXXXX.tmp` within 255 bytes


def matches(glob: str, path: str) -> bool:
    """Whether a run-relative path matches `--include-files` (fnmatch: `*` matches `/` too)."""
    return fnmatchcase(path, glob)


def unsafe_path(path: str) -> str | None:
    """Why `path` (run-relative, `/`-separated) cannot be a file under a run's folder; None when it can."""
    if not path:
        return "an empty path"
    if path.startswith("/"):
        return "an absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "a path that leaves the run's folder (..)"
    for part in parts:
        if part in ("", "."):
            return "a path with an empty part"
        if "\\" in part or any(ord(char) < 32 or ord(char) == 127 for char in part):
            return "not a file name (a backslash or control character)"
        if len(part.encode()) > _MAX_PART_BYTES:
            return "a name too long for a file"
    return None


@dataclass
class KeptFiles:
    """What `--include-files` did in one project: files matched, fetched, found already there, and why
    each file it could not keep was not (run id -> reasons)."""

    matched: int = 0
    fetched: int = 0
    already_there: int = 0
    failed: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "matched": self.matched,
            "fetched": self.fetched,
            "already_there": self.already_there,
            "failed": sum(len(reasons) for reasons in self.failed.values()),
        }


class FileStore:
    """Keeps one project's files matching `glob` under `root`, `workers` at a time."""

    def __init__(self, root: Path, glob: str, workers: int) -> None:
        self.root, self.glob = root, glob
        self.result = KeptFiles()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(2 * workers)  # files queued at once: memory stays bounded
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="run-files")
        self._bug: BaseException | None = None  # an error no code path expected, raised by `finish`
        self._stopping = threading.Event()

    def keep(self, run_id: str, files: Sequence[RunFile]) -> None:
        """Queue the files of `run_id` that match the glob; a refused one is counted failed at once."""
        for file in files:
            if not matches(self.glob, file.path):
                continue
            self.result.matched += 1
            why = unsafe_path(file.path)
            if "/" in run_id or unsafe_path(run_id):
                why = "its run id is not a folder name"
            elif why is None and file.read is None:
                why = "the source cannot read it"
            if why is not None:
                self._fail(run_id, file.path, why)
                continue
            self._slots.acquire()
            self._pool.submit(self._fetch, run_id, file).add_done_callback(self._done)

    def finish(self) -> KeptFiles:
        """Wait for every queued file; what was kept and what was not."""
        self._pool.shutdown(wait=True)
        if self._bug is not None:
            raise self._bug
        return self.result

    def abort(self) -> None:
        """Stop: queued files are not fetched, temp files of those under way are deleted."""
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _done(self, future: Future[None]) -> None:
        if not future.cancelled() and (error := future.exception()) is not None:
            self._bug = self._bug or error

    def _fail(self, run_id: str, path: str, why: str) -> None:
        with self._lock:
            self.result.failed.setdefault(run_id, []).append(f"{path}: {why}")

    def _fetch(self, run_id: str, file: RunFile) -> None:
        try:
            if self._stopping.is_set():
                return
            final = self.root / run_id / file.path
            if not final.resolve().is_relative_to(self.root.resolve()):  # a link in the output folder
                self._fail(run_id, file.path, "its folder in the output is a link out of it")
                return
            if self._already_there(final, file):
                with self._lock:
                    self.result.already_there += 1
                return
            final.parent.mkdir(parents=True, exist_ok=True)
            if why := self._write(final, file):
                self._fail(run_id, file.path, why)
                return
            with self._lock:
                self.result.fetched += 1
        except Exception as error:
            if is_bug(error):
                raise
            self._fail(run_id, file.path, describe(error))
        finally:
            self._slots.release()

    @staticmethod
    def _already_there(final: Path, file: RunFile) -> bool:
        if file.md5 is None or not final.is_file() or final.stat().st_size != file.size:
            return False
        return file_md5(lambda: open(final, "rb"))[1] == file.md5

    def _write(self, final: Path, file: RunFile) -> str | None:
        """Stream `file` into place; why it was not, when its bytes are not what the source listed."""
        assert file.read is not None
        target = AtomicFile(final)
        try:
            digest, size = hashlib.md5(usedforsecurity=False), 0
            with file.read() as source, open(target.temp, "wb") as out:
                while chunk := source.read(CHUNK):
                    if self._stopping.is_set():
                        return "the export was stopped"
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            if file.size is not None and size != file.size:
                return f"{size} bytes arrived, the source lists {file.size}"
            if file.md5 is not None and digest.hexdigest() != file.md5:
                return "its md5 differs from the one the source lists"
            target.commit()
            return None
        finally:
            target.discard()


def leftover_temp_files(folder: Path) -> list[Path]:
    """Temp files of run files an export was cut off while writing (`.{name}.XXXXXXXX.tmp`)."""
    root = folder / FILES_FOLDER
    if not root.is_dir():
        return []
    return [
        Path(parent, name)
        for parent, _, names in os.walk(root)
        for name in names
        if TEMP_FILE.fullmatch(name)
    ]
