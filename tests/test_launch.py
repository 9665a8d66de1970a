"""The scripts as files: all executable with uv's shebang, and under a Python without their dependencies
(`python3 script.py`) one line saying to run them with uv, exit 2, instead of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli.launch import missing_dependencies

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(str(path.relative_to(ROOT)) for path in ROOT.glob("*-tools/*.py"))


def test_there_are_seven_scripts():
    assert len(SCRIPTS) == 7, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_is_executable_in_git_and_on_disk(script):
    staged = subprocess.run(
        ["git", "ls-files", "-s", script], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert staged.startswith("100755 "), staged
    assert os.access(ROOT / script, os.X_OK)
    assert (ROOT / script).read_text().startswith("#!/usr/bin/env -S uv run --script\n")


@pytest.mark.parametrize("script", SCRIPTS)
def test_without_its_dependencies_a_script_says_to_use_uv_in_one_line(script):
    # -S: no site-packages, as a system python3 without polars, rich, wandb, ... would be
    ran = subprocess.run(
        [sys.executable, "-S", script, "--api-key", "secret-key", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (ran.returncode, ran.stdout) == (2, "")
    lines = ran.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: run this script with uv: uv run {script} … ("), (
        lines
    )
    assert "polars" in lines[0] and "secret-key" not in lines[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_with_its_dependencies_nothing_is_missing(script):
    assert missing_dependencies(ROOT / script) == []


def test_the_dependencies_are_read_from_the_metadata_block_only(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text(
        '#!/usr/bin/env -S uv run --script\n# /// script\n# dependencies = [\n#     "polars>=2.1",\n'
        '#     "python-dotenv>=1.2",\n#     "no-such-package>=1",\n# ]\n# ///\n'
        '#     "after-the-block",\n'
    )
    assert missing_dependencies(script) == ["no-such-package"]
