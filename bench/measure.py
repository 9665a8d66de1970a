"""Measuring commands from outside: wall time, peak RSS (largest process and whole tree), benchmark env."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass
class Measurement:
    """One command run: wall seconds, peak RSS of its largest process and of all its processes at once."""

    seconds: float
    peak_rss_mb: float  # the largest single process (kernel's maxrss of the child and reaped descendants)
    peak_tree_mb: float  # sampled sum over the process and every descendant (e.g. wandb-core)
    returncode: int
    stdout: str
    stderr: str


def run_measured(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    sample_s: float = 0.02,
) -> Measurement:
    """Run `command` to completion, sampling its process tree's memory every `sample_s` seconds."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        root = psutil.Process(process.pid)
        peak_tree = 0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            try:
                members = [root, *root.children(recursive=True)]
                peak_tree = max(peak_tree, sum(_rss(member) for member in members))
            except psutil.NoSuchProcess:
                pass
            time.sleep(sample_s)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measurement(
            seconds=seconds,
            peak_rss_mb=usage.ru_maxrss / 1024,
            peak_tree_mb=max(peak_tree / 2**20, usage.ru_maxrss / 1024),
            returncode=process.returncode,
            stdout=out.read(),
            stderr=err.read(),
        )


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def command_env(pycache: Path) -> dict[str, str]:
    """The environment for timed `uv run` commands: bytecode caching on, as on a user's machine.

    Some sandboxes set PYTHONDONTWRITEBYTECODE, which makes every start compile wandb & co. from
    source (~1 s); users' Pythons cache bytecode. The cache goes to `pycache`, not into the tree.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env
