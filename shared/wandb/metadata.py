"""A W&B run's metadata (git, host, OS, Python, program, arguments, CPUs, GPU) as the runs table's core
columns. Offline logs hold it as environment records, the server as the run's `wandb-metadata.json`; both
are the client's EnvironmentRecord in its JSON names (`gpu` for `gpu_type`, `git.remote` for its URL).
Over the API, shared.wandb.run_contents fetches the file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.base.text import without_userinfo


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    # JSON protobuf writes 64-bit integers as strings; a count of 0 is the field left unset.
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def run_metadata(environment: Mapping[str, Any]) -> dict[str, Any]:
    """The RunRecord's metadata fields from an environment in JSON names; None where it has no value."""
    git = environment.get("git")
    git = git if isinstance(git, Mapping) else {}
    remote = _text(git.get("remote"))
    args = environment.get("args")
    return {
        "git_commit": _text(git.get("commit")),
        "git_remote": without_userinfo(remote) if remote else None,  # wandb blanks a password, not the user
        "host": _text(environment.get("host")),
        "os": _text(environment.get("os")),
        "python": _text(environment.get("python")),
        "program": _text(environment.get("program")),
        # The client leaves an empty list out (protobuf's JSON): a recorded program ran with no arguments.
        "args": [str(arg) for arg in args]
        if isinstance(args, list)
        else []
        if environment.get("program")
        else None,
        "cpu_count": _count(environment.get("cpu_count")),
        "gpu": _text(environment.get("gpu")),
        "gpu_count": _count(environment.get("gpu_count")),
    }
