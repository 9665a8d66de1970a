"""The error model (shared/base/errors.py) as the verbs meet it: a bug of ours is said to be one, in one line
(RUN_TOOLS_TRACEBACK=1 adds the traceback), never as bad input; expected errors keep their exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.base.errors import BadInput, Incomplete, UnknownMetric, is_bug
from shared.table.metrics import metric_column

ROOT = Path(__file__).resolve().parent.parent
# A script's main that fails as the flags say: a bug inside shared/, an error of our own, or a library's.
PROGRAM = """
import sys
sys.path.insert(0, {root!r})
from shared.base.errors import BadInput
from shared.cli.main import run_main
from shared.table.metrics import metric_column

def main():
    kind = {kind!r}
    if kind == "bug":
        metric_column(None)  # an AttributeError raised in shared/
    if kind == "bad input":
        raise BadInput("no such thing")
    if kind == "library":
        import json
        json.loads("{{")  # a ValueError raised by the standard library: no code path expects it here
    return 0

run_main(main)
"""


def run(kind: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM.format(root=str(ROOT), kind=kind)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_a_bug_is_one_line_saying_so_exit_1():
    done = run("bug")
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: AttributeError: ") and "(a bug in run-tools; please report it;" in line
    assert "RUN_TOOLS_TRACEBACK=1 shows where it happened" in line and "Traceback" not in done.stderr


def test_the_traceback_comes_first_when_asked_for():
    done = run("bug", RUN_TOOLS_TRACEBACK="1")
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and lines[0] == "Traceback (most recent call last):"
    assert "shared/table/metrics.py" in done.stderr and lines[-1].startswith("error: AttributeError: ")


def test_an_unexpected_library_error_is_not_called_our_bug():
    done = run("library")
    [line] = done.stderr.splitlines()
    assert done.returncode == 1 and line.startswith("error: JSONDecodeError: ")
    assert "(an error run-tools did not expect; please report it;" in line


def test_bad_input_keeps_exit_2():
    done = run("bad input")
    assert (done.returncode, done.stderr) == (2, "error: no such thing\n")


def test_is_bug_looks_at_where_the_error_was_raised():
    with pytest.raises(AttributeError) as ours:
        metric_column(None)  # type: ignore[arg-type]
    assert is_bug(ours.value)
    with pytest.raises(TypeError) as theirs:
        sorted([1, "a"])  # raised by Python itself, from a test's frame
    assert not is_bug(theirs.value)
    assert not is_bug(BadInput("x")) and not is_bug(Incomplete("x")) and not is_bug(ValueError("x"))


def test_unknown_metric_is_bad_input_that_carries_the_names():
    error = UnknownMetric("unknown metric 'x'", ["x"], ["loss", "acc"])
    assert isinstance(error, BadInput) and isinstance(error, ValueError)
    assert (error.unknown, error.known) == (["x"], ["loss", "acc"])
