"""Hostile inputs to the analysis tools: devices and pipes as files, huge files and --where, deep JSON, huge ints.

Each is refused with exit code 2 and one `error:` line, before it can hang, crash or exhaust the machine.
Scripts run as subprocesses when the unfixed behaviour would hang or crash the test process itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.analysis.enrich import load_rules
from shared.base.errors import BadInput
from shared.base.limits import MAX_TEXT_FILE_BYTES
from shared.query.constraints import ConstraintError, parse_where
from tests.current_data import load_script
from tests.test_bad_input import SAMPLES, isolated_env

ROOT = Path(__file__).resolve().parent.parent
AGGREGATE, ANALYZE = "wandb-tools/aggregate_runs.py", "wandb-tools/analyze_runs.py"
WANDB_QUERY, NEPTUNE_QUERY = "wandb-tools/query_topk.py", "neptune-tools/query_topk.py"
HUGE = "99999999999999999999999"
METRIC = "test/mse"  # in the sample runs


def run(script: str, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A script run as users run it; a hang fails the test (and the child is killed) after `timeout`."""
    command = [sys.executable, str(ROOT / script), *args]
    env = isolated_env(cwd / "home")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit code 2 and `message` in the last line, which is an `error:` line; no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "error: " in lines[-1] and message in lines[-1], lines[-1][:2000]


@pytest.fixture(scope="module")
def sample_export(tmp_path_factory) -> Path:
    """The sample offline runs exported once; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("sample")
    result = run(
        "wandb-tools/export_runs.py", "--offline", str(SAMPLES), "-o", "export", cwd=root, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return root / "export"


@pytest.fixture
def export(sample_export, tmp_path) -> Path:
    return Path(shutil.copytree(sample_export, tmp_path / "export"))


@pytest.fixture
def archive(tmp_path) -> Path:
    from tests.neptune_fixtures import write_archive

    return write_archive(tmp_path / "archive")


# ------------------------------------------------------------------ files: devices, pipes, size, depth


@pytest.mark.parametrize("script", [AGGREGATE, ANALYZE])
@pytest.mark.parametrize("kind", ["character device", "named pipe"])
def test_a_rules_file_that_is_no_regular_file_is_refused(script, kind, export, tmp_path):
    # /dev/null read as empty rules; a pipe waited for a writer forever (/dev/zero was read without end)
    rules = tmp_path / "rules.toml"
    if kind == "named pipe":
        os.mkfifo(rules)
    else:
        rules = Path(os.devnull)
    result = run(
        script, str(export), "-o", str(tmp_path / "out.parquet"), "--rules", str(rules), cwd=tmp_path
    )
    refused(result, f"cannot read rules file {rules}: not a regular file (a {kind})")


def test_a_rules_file_over_the_size_limit_is_refused(tmp_path):
    rules = tmp_path / "rules.toml"
    with rules.open("wb") as stream:
        stream.truncate(MAX_TEXT_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(BadInput, match=rf"cannot read rules file {rules}: larger than 16 MiB"):
        load_rules(rules)


@pytest.mark.parametrize("script", [AGGREGATE, ANALYZE, WANDB_QUERY])
def test_export_metadata_nested_too_deep_is_a_usage_error(script, export, tmp_path):
    metadata = next(export.glob("*_metadata.json"))
    metadata.write_text("[" * 100_000 + "]" * 100_000)
    argv = ["--export", str(export), "--metric", METRIC] if script == WANDB_QUERY else [str(export)]
    if script == AGGREGATE:
        argv += ["-o", str(tmp_path / "out.parquet")]
    refused(run(script, *argv, cwd=tmp_path), f"unreadable export metadata {metadata}: nested too deep")


def test_export_metadata_that_is_a_named_pipe_is_refused(export, tmp_path):
    metadata = next(export.glob("*_metadata.json"))
    metadata.unlink()
    os.mkfifo(metadata)
    refused(
        run(ANALYZE, str(export), cwd=tmp_path),
        f"cannot read export metadata {metadata}: not a regular file (a named pipe)",
    )


def test_a_runs_file_that_is_a_named_pipe_is_refused(export, tmp_path):
    pipe = export / "other_runs.parquet"
    os.mkfifo(pipe)
    refused(run(ANALYZE, str(export), cwd=tmp_path), f"cannot read runs file {pipe}: not a regular file")


def test_a_device_given_as_input_is_named_as_such(tmp_path):
    refused(run(ANALYZE, os.devnull, cwd=tmp_path), f"cannot read runs file {os.devnull}: not a regular file")


def test_a_neptune_archive_part_that_is_a_named_pipe_is_refused(archive, tmp_path):
    pipe = next(archive.glob("*/*.parquet")).with_name("TEST-0_part_0.parquet")
    os.mkfifo(pipe)
    result = run(NEPTUNE_QUERY, str(archive), "--metric", "train/loss", cwd=tmp_path)
    refused(result, f"cannot read archive part {pipe}: not a regular file (a named pipe)")


# ------------------------------------------------------------------ --where: bounded before polars


def query_argv(script: str, source: Path, *where: str) -> list[str]:
    target = ["--export", str(source), "--metric", METRIC] if script == WANDB_QUERY else [str(source)]
    metric = [] if script == WANDB_QUERY else ["--metric", "train/loss"]
    return [*target, *metric, *(part for text in where for part in ("--where", text))]


@pytest.mark.parametrize("script", [WANDB_QUERY, NEPTUNE_QUERY])
def test_a_90_kb_where_is_refused_before_polars_parses_it(script, export, archive, tmp_path):
    where = '"train/loss"' + " + 1" * 22_500 + " < 1"  # polars' parser overflowed its stack: a segfault
    source = export if script == WANDB_QUERY else archive
    result = run(script, *query_argv(script, source, where), cwd=tmp_path)
    refused(result, f"is too long: {len(where):,} characters (at most 10,000)")


@pytest.mark.parametrize("script", [WANDB_QUERY, NEPTUNE_QUERY])
def test_a_long_concatenation_is_refused_before_polars_runs_it(script, export, archive, tmp_path):
    where = '"train/loss"' + " || 'x'" * 500 + " = 'y'"  # 4 kB, and polars crashed evaluating it
    source = export if script == WANDB_QUERY else archive
    result = run(script, *query_argv(script, source, where), cwd=tmp_path)
    refused(result, "--where holds 1,003 names, numbers and operators (at most 500)")


def test_the_bounds_apply_to_every_where_flag_together(export, tmp_path):
    result = run(WANDB_QUERY, *query_argv(WANDB_QUERY, export, *[f'"{METRIC}" < 1'] * 101), cwd=tmp_path)
    refused(result, "--where holds 101 tests joined by AND/OR (at most 100)")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (" AND ".join(['"a" < 1'] * 150), "holds 150 tests joined by AND/OR (at most 100)"),
        ('"a"' + " + 1" * 300 + " < 1", "holds 603 names, numbers and operators (at most 500)"),
        ("(" * 60 + '"a" < 1' + ")" * 60, "nests parentheses 60 deep (at most 50)"),
    ],
    ids=["terms", "tokens", "depth"],
)
def test_where_is_bounded_in_terms_tokens_and_depth(where, message):
    with pytest.raises(ConstraintError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_where(where)


def test_a_long_bad_where_is_quoted_shortened_in_its_message():
    with pytest.raises(ConstraintError, match="is not a valid expression") as raised:
        parse_where('"a" < ' + "1" * 9_000 + " <")
    assert len(str(raised.value)) < 500


# ------------------------------------------------------------------ integer flags


@pytest.mark.parametrize(
    ("folder", "name", "argv"),
    [
        ("wandb-tools", "analyze_runs", ["--top", HUGE]),
        ("wandb-tools", "query_topk", ["--export", "x", "--metric", "m", "-k", HUGE]),
        ("wandb-tools", "query_topk", ["--export", "x", "--metric", "m", "--n-steps", HUGE]),
        ("wandb-tools", "query_topk", ["--export", "x", "--metric", "m", "--workers", HUGE]),
        ("neptune-tools", "query_topk", ["x", "--metric", "m", "-k", HUGE]),
        ("neptune-tools", "query_topk", ["x", "--metric", "m", "--n-steps", HUGE]),
        ("neptune-tools", "query_topk", ["x", "--metric", "m", "--workers", HUGE]),
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value[-2:-1]),
)
def test_an_integer_flag_too_large_is_a_usage_error(folder, name, argv, capsys):
    script = load_script(name, folder)
    with pytest.raises(SystemExit) as leaving:
        script.parse_args(argv)
    assert leaving.value.code == 2
    flag = "--top/-k" if argv[-2] in ("--top", "-k") else argv[-2]  # the one flag with its two spellings
    assert f"argument {flag}: {HUGE} is too large (at most 1,000,000,000)" in capsys.readouterr().err


def test_analyze_top_too_large_is_one_error_line_not_a_traceback(export, tmp_path):
    result = run(ANALYZE, str(export), "--top", HUGE, cwd=tmp_path)
    refused(result, f"argument --top/-k: {HUGE} is too large (at most 1,000,000,000)")


# ------------------------------------------------------------------ names polars would take for a glob


def test_folders_named_with_glob_characters_are_read_as_named(sample_export, archive, tmp_path):
    """`exp[lr=0.1]`, `runs*` and `what?` are folder names, not patterns: polars globs a path it is given
    unless told not to, and found no file in such a folder ("expanded paths were empty")."""
    export = Path(shutil.copytree(sample_export, tmp_path / "exp[lr=0.1]" / "runs*"))
    nightly = Path(shutil.copytree(sample_export, tmp_path / "what?" / "export"))
    neptune = Path(shutil.copytree(archive, tmp_path / "arch[1]"))
    shown = run(ANALYZE, str(export), "--metric", METRIC, "--top", "1", "--format", "json", cwd=tmp_path)
    assert shown.returncode == 0 and "xqlp9ego" in shown.stdout, shown.stderr[-2000:]
    merged = tmp_path / "all[2]" / "u.parquet"
    done = run(AGGREGATE, str(export), str(nightly), "-o", str(merged), "--no-enrich", cwd=tmp_path)
    assert done.returncode == 0 and merged.is_file(), done.stderr[-2000:]
    asked = run(WANDB_QUERY, "--source", str(nightly), "--metric", METRIC, "-k", "1", cwd=tmp_path)
    assert asked.returncode == 0 and "xqlp9ego" in asked.stdout, asked.stderr[-2000:]
    ranked = run(NEPTUNE_QUERY, "--source", str(neptune), "--metric", "train/loss", "-k", "1", cwd=tmp_path)
    assert ranked.returncode == 0 and ranked.stdout.count("\n") >= 2, ranked.stderr[-2000:]


def test_paths_that_are_not_utf8_are_refused_by_name_or_read(sample_export, archive, tmp_path):
    """A folder named in Latin-1 (`caf\\xe9`): polars and pyarrow take only UTF-8 paths, so the readers of
    parquet refuse it with one line naming it (exit 2), not an error they did not expect; the W&B offline
    reader, which is ours, exports from it."""
    latin = os.fsdecode(b"caf\xe9")
    export = Path(shutil.copytree(sample_export, tmp_path / latin / "export"))
    neptune = Path(shutil.copytree(archive, tmp_path / latin / "archive"))
    refused(run(ANALYZE, str(export), "--metric", METRIC, cwd=tmp_path), "caf\\xe9")
    refused(
        run(NEPTUNE_QUERY, "--source", str(neptune), "--metric", "train/loss", cwd=tmp_path),
        "not valid UTF-8",
    )
    out = tmp_path / latin / "out"
    refused(
        run("wandb-tools/export_runs.py", "--offline", str(SAMPLES), "-o", str(out), cwd=tmp_path),
        "output folder",
    )
    logs = Path(shutil.copytree(SAMPLES, tmp_path / latin / "wandb"))
    done = run("wandb-tools/export_runs.py", "--offline", str(logs), "-o", "utf8", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(next((tmp_path / "utf8").glob("*_metadata.json")).read_text())["runs_exported"] == 13
