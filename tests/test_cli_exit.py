"""How scripts end: with their own status soon after the work, even when a client's exit hook hangs or the
reader of stdout has gone away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shared.cli.main import run_main

ROOT = Path(__file__).resolve().parent.parent
# A program whose main ends with `status`, then an exit hook that blocks like wandb-core's teardown can.
PROGRAM = """
import atexit, sys, time
sys.path.insert(0, {root!r})
import shared.cli.main as cli
cli.EXIT_GRACE_S = 1.0
def main():
    if {hang}:
        atexit.register(time.sleep, 600)
    print("data")
    return {status}
cli.run_main(main)
"""


def run_program(status: int, hang: bool) -> tuple[subprocess.CompletedProcess[str], float]:
    source = PROGRAM.format(root=str(ROOT), hang=hang, status=status)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


@pytest.mark.parametrize("status", [0, 1, 2])
def test_a_hanging_exit_hook_is_cut_short_with_the_scripts_own_status(status):
    done, elapsed = run_program(status, hang=True)
    assert done.returncode == status
    assert done.stdout == "data\n"
    assert "did not shut down within 1 s" in done.stderr
    assert elapsed < 60, "the exit hook's 600 s sleep was waited for"


def test_a_clean_exit_says_nothing_more():
    done, _ = run_program(0, hang=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "data\n", "")


def test_calling_run_main_in_process_arms_nothing():
    """Tests call run_main directly: the process they run in must never be cut short."""
    before = set(threading.enumerate())
    with pytest.raises(SystemExit) as leaving:
        run_main(lambda: 2)
    assert leaving.value.code == 2
    assert set(threading.enumerate()) == before


@pytest.fixture(scope="module")
def sample_export(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample-export")
    command = [
        sys.executable,
        str(ROOT / "wandb-tools/export_runs.py"),
        "--offline",
        str(ROOT / "samples/wandb"),
    ]
    subprocess.run([*command, "-o", str(folder), "--include-history"], check=True, capture_output=True)
    return folder


@pytest.mark.parametrize(
    "argv",
    [
        ["wandb-tools/query_topk.py", "--export", "{export}", "--metric", "test/mse"],
        ["wandb-tools/aggregate_runs.py", "{export}", "-o", "{tmp}/all.parquet"],
        ["wandb-tools/export_runs.py", "--offline", str(ROOT / "samples/wandb"), "-o", "{tmp}/again"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_table_for_a_reader_that_went_away_is_not_a_failure(argv, sample_export, tmp_path):
    """`… | head -1` stops reading early: the table's end is dropped, and the script still succeeds."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    command = [
        sys.executable,
        str(ROOT / argv[0]),
        *(a.format(export=sample_export, tmp=tmp_path) for a in argv[1:]),
    ]
    try:
        done = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower()


# A main that loads the wandb client (its temp folders), then leaves no file descriptor free.
NO_FILES_LEFT = """
import os, resource, sys
sys.path.insert(0, {root!r})
import wandb.sdk.data_types._private, wandb.sdk.artifacts.artifact
from shared.cli.main import run_main
def main():
    in_use = len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor is closed again
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return 1
run_main(main)
"""


def test_the_wandb_clients_temp_folders_go_quietly_with_no_file_descriptor_left(tmp_path):
    """Its exit hooks printed two tracebacks (EMFILE) after the error line and left their folders."""
    env = os.environ | {"TMPDIR": str(tmp_path)}
    source = NO_FILES_LEFT.format(root=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=120, env=env
    )
    assert (done.returncode, done.stderr) == (1, "")
    assert list(tmp_path.iterdir()) == []


WARNING = """
import sys, warnings
sys.path.insert(0, {root!r})
from shared.cli.main import run_main
run_main(lambda: warnings.warn("POLARS_MAX_BLOCKING_THREAD_COUNT reached (512), this may indicate a deadlock"))
"""


@pytest.mark.parametrize("debug", [False, True])
def test_library_warnings_stay_off_stderr_unless_asked_for(debug):
    env = {key: value for key, value in os.environ.items() if key != "RUN_TOOLS_TRACEBACK"}
    if debug:
        env["RUN_TOOLS_TRACEBACK"] = "1"
    source = WARNING.format(root=str(ROOT))
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0
    assert ("UserWarning: POLARS_MAX_BLOCKING_THREAD_COUNT" in done.stderr) is debug, done.stderr


LIMITED = """
import os, resource, signal, sys, time
resource.setrlimit(resource.RLIMIT_AS, (64 * 2**30, resource.RLIM_INFINITY))  # ulimit -v, far from reach
sys.path.insert(0, {root!r})
from shared.cli.main import run_main
def main():
    print("working", flush=True)
    if {how!r} == "abort":
        os.abort()  # as a failed allocation in Rust or C++ code ends a process
    if {how!r} == "wait":
        time.sleep(60)
    return 2
run_main(main)
"""


@pytest.mark.parametrize("how", ["abort", "return", "wait"])
def test_under_an_address_limit_an_abort_is_one_error_line(how):
    """The work runs in a child: its abort (exit 134, not a word) becomes one line and exit 1; a status
    or a signal sent to the process the user started passes through."""
    source = LIMITED.format(root=str(ROOT), how=how)
    child = subprocess.Popen(
        [sys.executable, "-c", source], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "working\n"
    if how == "wait":
        time.sleep(0.5)
        child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    expected = {
        "abort": (1, "error: out of memory: the address space is limited to 65536 MiB (ulimit -v); an allocation"
                  " failed in a library, which aborted the process\n"),
        "return": (2, ""),
        "wait": (143, "error: interrupted (SIGTERM)\n"),
    }  # fmt: skip
    assert (child.returncode, stderr) == expected[how]
