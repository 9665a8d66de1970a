"""The README's commands run as written: every command of its ```bash blocks (those need no account or
server; ```sh blocks do) but the test command itself, in order, in a fresh copy of the repository."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEST_COMMAND = "uv run pytest"


def runnable_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks, comments, blank lines and the test command left out."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    lines = (line.split("  #")[0].strip() for block in blocks for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#") and line != TEST_COMMAND]


def test_the_readme_has_runnable_quick_starts_and_names_its_test_command():
    text = README.read_text()
    commands = runnable_commands(text)
    assert any("wandb-tools/export_runs.py" in c for c in commands) and any(
        "neptune-tools" in c for c in commands
    )
    assert "uv run pytest" in text and "uv run pytest" not in commands, (
        "the test command is shown, not run here"
    )
    assert len(text.splitlines()) <= 250


@pytest.mark.slow
def test_every_readme_command_that_needs_no_server_runs_in_a_fresh_copy(tmp_path):
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    copy = tmp_path / "repo"
    for name in files:
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    for command in runnable_commands(README.read_text()):
        done = subprocess.run(shlex.split(command), cwd=copy, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stderr[-2000:]}"
    assert (copy / "wandb_export").is_dir() and (copy / "neptune_export").is_dir()
