"""The layers of shared/ hold: `lint-imports` (import-linter, configured in pyproject.toml's
[tool.importlinter]) keeps every contract, checks all of them, and breaks one when a forbidden import is
planted in a copy of the package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The console script of the dev dependency import-linter, installed beside this interpreter.
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
SUMMARY = re.compile(r"^Contracts: (\d+) kept, (\d+) broken\.?$", re.MULTILINE)
PLANTED = "  # planted"


def contracts(pyproject: Path) -> list[dict]:
    """The contracts of a pyproject.toml's [tool.importlinter]."""
    return tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on `root`'s shared/ package with `root`'s pyproject.toml, without its cache.

    import-linter reads pyproject.toml from the working directory and puts that directory first on
    sys.path; PYTHONPATH says so again, so that `shared` can only be `root`'s. Its output is drawn by rich
    at the width COLUMNS gives: wide enough that no contract name or import is wrapped.
    """
    assert LINT_IMPORTS.exists(), (
        f"{LINT_IMPORTS} is missing: run `uv sync` (import-linter is a dev dependency)"
    )
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "1000", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def summary(result: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    """(kept, broken) from the `Contracts: N kept, M broken.` line."""
    found = SUMMARY.findall(result.stdout)
    assert len(found) == 1, f"no single summary line in the output:\n{result.stdout}\n{result.stderr}"
    kept, broken = found[0]
    return int(kept), int(broken)


def copy_project(destination: Path) -> Path:
    """shared/ and pyproject.toml copied into `destination` (bytecode caches left behind)."""
    shutil.copytree(ROOT / "shared", destination / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", destination / "pyproject.toml")
    return destination


def test_every_contract_is_checked_and_kept():
    """`lint-imports` passes on the repository, and it checked as many contracts as pyproject.toml holds,
    all kept: a contract that stopped being checked (or was dropped from the run) fails here."""
    expected = len(contracts(ROOT / "pyproject.toml"))
    assert expected >= 2, "pyproject.toml should hold the layers contract and the forbidden contract"

    result = lint_imports(ROOT)

    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}\n{result.stderr}"
    assert summary(result) == (expected, 0), result.stdout


def test_an_unplanted_copy_keeps_every_contract(tmp_path):
    """The copy the planted-import tests lint is clean as copied: what breaks there is the planted line."""
    project = copy_project(tmp_path)

    result = lint_imports(project)

    assert result.returncode == 0, f"lint-imports failed on the copy:\n{result.stdout}\n{result.stderr}"
    assert summary(result) == (len(contracts(project / "pyproject.toml")), 0), result.stdout


@pytest.mark.parametrize(
    ("module", "imported", "contract_type"),
    [
        # An analysis reaching for a tracker: allowed by the layers (analysis sits above the trackers),
        # refused by the forbidden contract.
        ("shared.analysis.frames", "shared.wandb.api", "forbidden"),
        # The run table reaching up into the command-line shell.
        ("shared.table.schema", "shared.cli.main", "layers"),
        # One tracker importing the other: the trackers are independent siblings of one layer.
        ("shared.wandb.tidy", "shared.neptune.runs", "layers"),
    ],
    ids=["analysis-imports-wandb", "table-imports-cli", "wandb-imports-neptune"],
)
def test_a_planted_forbidden_import_breaks_a_contract(tmp_path, module, imported, contract_type):
    """One forbidden import appended to one module of a copy of shared/ makes `lint-imports` exit non-zero
    and name that import (importer -> imported, at the planted line of the copy) under the contract it
    breaks."""
    project = copy_project(tmp_path)
    source = project / Path(*module.split(".")).with_suffix(".py")
    assert (project / Path(*imported.split("."))).with_suffix(".py").exists(), f"{imported} is not a module"
    text = source.read_text()
    planted_line = text.count("\n") + (0 if text.endswith("\n") else 1) + 1
    source.write_text(text + ("" if text.endswith("\n") else "\n") + f"import {imported}{PLANTED}\n")
    assert source.read_text().splitlines()[planted_line - 1] == f"import {imported}{PLANTED}"
    names = [c["name"] for c in contracts(project / "pyproject.toml") if c["type"] == contract_type]
    assert names, f"pyproject.toml holds no {contract_type} contract"

    result = lint_imports(project)
    output = result.stdout

    assert result.returncode != 0, f"the planted import went unnoticed:\n{output}\n{result.stderr}"
    kept, broken = summary(result)
    assert broken >= 1 and kept + broken == len(contracts(project / "pyproject.toml")), output
    # The line number is the copy's: the repository's own module has no such line, so this is the copy.
    line = re.compile(
        rf"^-\s+{re.escape(module)} -> {re.escape(imported)} \(l\.{planted_line}\)$", re.MULTILINE
    )
    assert line.search(output), (
        f"the output does not name {module} -> {imported} (l.{planted_line}):\n{output}"
    )
    _, _, broken_section = output.partition("Broken contracts")
    assert any(f"{name}\n" in broken_section for name in names), (
        f"no {contract_type} contract is reported broken:\n{output}"
    )
