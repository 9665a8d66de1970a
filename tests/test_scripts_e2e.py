"""Every script as users run it (`uv run …`), and the README quick start exactly as written."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(
    p.relative_to(ROOT) for folder in ("wandb-tools", "neptune-tools") for p in (ROOT / folder).glob("*.py")
)


def uv_run(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["uv", "run", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def readme_quick_start() -> list[str]:
    """The commands of the README's first code block."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README has no bash block"
    return [
        line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=str)
def test_every_script_explains_itself(script):
    result = uv_run(str(script), "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "examples:" in result.stdout
    assert (ROOT / f"{script}.lock").is_file(), f"{script} has no committed uv lock"


def test_readme_opens_with_the_quick_start_and_the_ci_test_command():
    commands = readme_quick_start()
    assert len(commands) == 2
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci_script.splitlines(), "CI must run exactly the README's test command"


@pytest.mark.slow
def test_readme_quick_start_runs_as_written(tmp_path):
    for folder in ("wandb-tools", "shared", "samples"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    quick_start = shlex.split(readme_quick_start()[0])
    assert quick_start[:2] == ["uv", "run"]
    result = uv_run(*quick_start[2:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Saved 13 runs to" in result.stderr
    assert "graph_denoise_team" in result.stdout and "spectral_denoising" in result.stdout
    out = tmp_path / (quick_start[quick_start.index("-o") + 1] if "-o" in quick_start else "wandb_export")
    runs = pl.read_parquet(out / "graph_denoise_team_spectral_denoising_runs.parquet")
    history = pl.read_parquet(out / "graph_denoise_team_spectral_denoising_history.parquet")
    metadata = json.loads((out / "graph_denoise_team_spectral_denoising_metadata.json").read_text())
    assert runs.height == metadata["run_count"] == 13
    assert sorted(runs["state"].unique()) == ["failed", "finished"]
    assert history.height == metadata["history_rows"] > 0
    assert set(history["key"].unique()) == {"train/loss", "test/mse", "test/accuracy"}
