"""--help and usage errors answer before the heavy libraries load: every script parses its arguments with
light modules only (polars, pyarrow and the clients are imported once the arguments are good). How fast
that is belongs to bench/ (`uv run <tool> --help` in bench/run_all.py); this checks what is imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("polars", "pyarrow", "numpy", "pandas", "matplotlib", "wandb", "neptune")
W, N = "wandb-tools", "neptune-tools"
# Per script, a usage error past argparse's own checks: a bad value of a typed flag, or a check of
# parse_args once the flags are read.
USAGE_ERRORS = {
    f"{W}/list_entities.py": ["--timeout", "0"],
    f"{W}/export_runs.py": ["--since", "soon"],
    f"{W}/aggregate_runs.py": ["exports/", "--format", "yaml"],
    f"{W}/analyze_runs.py": ["--top", "abc"],
    f"{W}/query_topk.py": ["--metric", "test/mse"],  # no project, --offline or --export
    f"{N}/export_runs.py": ["--workers", "0"],
    f"{N}/query_topk.py": ["runs/", "--metric", "loss", "--plot", "front.txt"],
}
SCRIPTS = list(USAGE_ERRORS)


def imported(script: str, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `script` with `args` under -X importtime; its result and the top-level packages it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    modules = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "argparse" in modules, done.stderr[-2000:]  # the import lines were read
    return done, modules


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_imports_no_heavy_library(script, tmp_path):
    done, modules = imported(script, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: ")
    assert not modules & set(HEAVY), f"{script} --help imported {sorted(modules & set(HEAVY))}"


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("case", ["unknown flag", "bad value"])
def test_a_usage_error_imports_no_heavy_library(script, case, tmp_path):
    args = ["--bogus-flag"] if case == "unknown flag" else USAGE_ERRORS[script]
    done, modules = imported(script, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: " in done.stderr
    assert not modules & set(HEAVY), f"{script} {' '.join(args)} imported {sorted(modules & set(HEAVY))}"


@pytest.mark.parametrize(
    ("folder", "names"), [(W, ["WandbQuery", "RunInfo"]), (N, ["NeptuneQuery", "RunInfo"])]
)
def test_the_query_classes_load_on_first_use(folder, names):
    """`from query_topk import NeptuneQuery` (docs/topk.md) still works; importing the script alone does
    not load polars."""
    program = f"""
import sys
sys.path.insert(0, {str(ROOT / folder)!r})
import query_topk
assert "polars" not in sys.modules, "importing the script loaded polars"
from query_topk import {", ".join(names)}
from shared.query.api import RunInfo as Shared
assert RunInfo is Shared and all(name in query_topk.__all__ for name in {names!r})
assert "polars" in sys.modules
try:
    query_topk.NoSuchName
except AttributeError:
    pass
else:
    raise AssertionError("an unknown name was found")
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("in_venv", [True, False])
def test_a_script_environment_keeps_bytecode_under_pythondontwritebytecode(in_venv, tmp_path):
    """Where PYTHONDONTWRITEBYTECODE=1 is set, importing shared turns bytecode writing back on inside a
    virtual environment (a script's uv environment: polars is not compiled again at every start) and
    leaves a system Python's as the user set it."""
    python = sys.executable if in_venv else str(Path(sys.base_prefix) / "bin" / "python3")
    (tmp_path / "probe.py").write_text("import sys\nimport shared\nprint(sys.dont_write_bytecode)\n")
    done = subprocess.run(
        [python, str(tmp_path / "probe.py")],
        env={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("False" if in_venv else "True")


def test_the_query_modules_import_no_pyarrow():
    """A query over an archive or offline logs never needs pyarrow (0.18 s with numpy at every start):
    the query modules tell an export folder apart by its file names and open one on first use."""
    probe = "import sys, shared.query.neptune, shared.query.wandb; print('pyarrow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_analyze_of_one_export_imports_no_pyarrow(tmp_path):
    """analyze reads an export's footer with polars: pyarrow and numpy (0.1 s at every start) load only
    to tell many exports' schemas apart, or to write. Its answer is checked: the imports were of real work."""
    from tests.current_data import make_runs, write_export

    write_export(tmp_path / "export", make_runs())
    done, modules = imported(
        f"{W}/analyze_runs.py", "export", "--metric", "test/mse", "--top", "3", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "polars" in modules and "metric_test_mse" in done.stdout
    assert not modules & {"pyarrow", "numpy"}, sorted(modules & {"pyarrow", "numpy"})
