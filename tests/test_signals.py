"""SIGTERM (cron, systemd, `timeout`) ends a script as Ctrl-C does: one error line, temp files removed, the
folder lock released with its resume record kept."""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# An export-like main: the folder locked (one project recorded as completed), a file being written
# atomically, and the main thread waiting on a worker thread when the signal comes.
PROGRAM = """
import sys, threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
sys.path.insert(0, {root!r})
from shared.cli.main import run_main
from shared.base.storage import atomic_path
from shared.export.lock import FolderLock

folder = Path({folder!r})

def main():
    release = threading.Event()
    with FolderLock(folder) as lock, atomic_path(folder / "beta_runs.parquet") as temp:
        lock.resume({{"projects": ["alpha", "beta"]}})
        lock.completed("alpha")
        temp.write_text("half written")
        with ThreadPoolExecutor(max_workers=1) as pool:
            fetching = pool.submit(release.wait, 60)
            try:
                print("waiting", flush=True)
                fetching.result()
            finally:
                release.set()

run_main(main)
"""


@pytest.mark.parametrize(
    ("signum", "status", "line"),
    [
        (signal.SIGTERM, 143, "error: interrupted (SIGTERM)"),
        (signal.SIGINT, 130, "error: interrupted (SIGINT)"),
    ],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_while_waiting_on_a_worker_is_one_line_no_temp_file_and_a_lock_to_resume_from(
    signum, status, line, tmp_path
):
    source = PROGRAM.format(root=str(ROOT), folder=str(tmp_path))
    child = subprocess.Popen(
        [sys.executable, "-c", source], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "waiting\n"
    started = time.monotonic()
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=60)
    assert (child.returncode, stderr.splitlines()) == (status, [line])
    assert time.monotonic() - started < 30, "the worker's 60 s wait was waited for"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".export.lock"]
    lock = tmp_path / ".export.lock"
    record = json.loads(lock.read_text())
    assert (record["pid"], record["completed"]) == (child.pid, ["alpha"])
    with lock.open() as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: free to take


def test_sigterm_after_the_work_is_the_default_again(tmp_path):
    """The handler is for the work only: the clients' exit hooks must not meet an exception."""
    source = (
        f"import os, signal, sys; sys.path.insert(0, {str(ROOT)!r}); from shared.cli.main import run_main\n"
        "def after():\n"
        "    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "import atexit; atexit.register(after)\n"
        "run_main(lambda: 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (-signal.SIGTERM, "")


# A main that signals itself, then signals itself again while it unwinds, and then cleans up.
UNWINDING = """
import os, signal, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from shared.cli.main import run_main

def main():
    try:
        os.kill(os.getpid(), signal.{name})
        time.sleep(5)
    finally:
        os.kill(os.getpid(), signal.{name})
        time.sleep(0.2)
        Path({marker!r}).write_text("cleaned")

run_main(main)
"""


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_unwinding_does_not_cut_it_short(tmp_path, signum, status):
    """Only the first signal raises: a second one (a storm of Ctrl-C) raised in the clean-up of the first,
    which then never finished."""
    name = signal.Signals(signum).name
    marker = tmp_path / "cleaned"
    source = UNWINDING.format(root=str(ROOT), name=name, marker=str(marker))
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (status, f"error: interrupted ({name})\n")
    assert marker.read_text() == "cleaned"


def test_sigint_after_the_work_ends_the_program_without_a_word():
    """A Ctrl-C while the exit hooks run (the worker threads' joins) printed a KeyboardInterrupt traceback
    after the error line; the program now just ends, as by SIGTERM."""
    source = (
        f"import os, signal, sys; sys.path.insert(0, {str(ROOT)!r}); from shared.cli.main import run_main\n"
        "import atexit; atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))\n"
        "run_main(lambda: 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (-signal.SIGINT, "")
