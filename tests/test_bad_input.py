"""Bad input across every script: each case its exit code, its one-line message, and nothing half-written.

Every case runs a script as a subprocess of this venv's Python (one through `uv run`), in a folder of
its own, with a throwaway HOME and no credentials but the ones the case gives. W&B cases talk to the
stand-in server. The cases the session selected run up front, a few at a time; each test checks one.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from tests.batches import Batches, selected_params
from tests.wandb_standin import DEFAULT_NOW, StandinDataset, StandinRun, StandinServer, StandinViewer

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "wandb"
SAMPLE_PROJECT = "graph_denoise_team_spectral_denoising"

ODD_CONFIG = {
    "nan": math.nan,
    "inf": math.inf,
    "huge": 2**70,
    "negative_huge": -(2**64),
    "nested": [[1, [2, 3]], {"a": [None, "ü"]}],
    "deep": {"x": {"y": {"z": [1.5]}}},
    "λ/é.key": "ünï",
}
ODD_RUN_NAMES = ["../../etc/passwd", "ünï cödé", "/absolute/path", "n" * 300]
LONG_PROJECT = "x" * 300


# ------------------------------------------------------------------ inputs shared by the cases


def odd_dataset() -> StandinDataset:
    """Entities, projects and runs with unicode, `..` and over-long names, and configs with NaN/inf/huge ints."""
    dataset = StandinDataset(viewer=StandinViewer(username="alice", entity="alice", teams=["ünï-team", ".."]))
    runs = [
        StandinRun(
            id=f"odd{index}",
            display_name=name,
            created_at=DEFAULT_NOW - timedelta(days=index + 1),
            config=ODD_CONFIG,
            summary={"loss": 1e308 if index == 0 else math.nan, "big": 2**80, "layers": [64, 64]},
            history=[
                {"_step": step, "_timestamp": 1.7e9 + step, "loss": 1.0 / (step + 1)} for step in range(5)
            ],
        )
        for index, name in enumerate(ODD_RUN_NAMES)
    ]
    dataset.add_project("ünï-team", "prøject ü", runs, is_team=True)
    # The stand-in's history URLs carry the project name, and `..` in a URL path is a dot segment.
    no_history = [replace(runs[0], history=None)]
    dataset.add_project("ünï-team", "..", no_history, is_team=True)
    dataset.add_project("ünï-team", "../../escape", runs[:1], is_team=True)
    dataset.add_project("..", "p", no_history, is_team=True)
    dataset.add_project("ünï-team", LONG_PROJECT, runs[:1], is_team=True)
    dataset.add_project("alice", "scratch", no_history)
    return dataset


ODD_OFFLINE_SCRIPT = """
import json, sys, wandb
config = json.loads(sys.argv[1])
for entity, project, name in [("../../evil", "..", "../../run"), ("ünï", "prøject ü", "ü" * 200)]:
    run = wandb.init(mode="offline", entity=entity, project=project, name=name, config=config)
    run.log({"loss": float("nan"), "x": 2**70})
    run.summary["big"] = 2**80
    run.finish()
"""


def closed_port_url() -> str:
    """An address on this machine where nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def neptune_token(address: str, key: str) -> str:
    """A Neptune API token as the service issues them: base64 of {api_address, api_url, api_key}."""
    return base64.b64encode(
        json.dumps({"api_address": address, "api_url": address, "api_key": key}).encode()
    ).decode()


def isolated_env(home: Path) -> dict[str, str]:
    """This environment without credentials or tracker settings, with a throwaway HOME and caches."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WANDB_", "NEPTUNE_")) and key != "GRAPH_DENOISE_TEAM_SERVICE"
    }
    for folder in ("wandb", "wandb-config", "wandb-cache", "wandb-data", "cache", "tmp"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    env |= {
        "HOME": str(home),
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(home / "wandb"),
        "WANDB_CONFIG_DIR": str(home / "wandb-config"),
        "WANDB_CACHE_DIR": str(home / "wandb-cache"),
        "WANDB_DATA_DIR": str(home / "wandb-data"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "TMPDIR": str(home / "tmp"),
        "NEPTUNE_RETRIES_TIMEOUT": "1",
        "NO_COLOR": "1",
    }
    return env


def run_script(
    script: str, args: list[str], *, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """A script run as users run it, with this venv's Python."""
    command = [sys.executable, str(ROOT / script), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Good, broken and unrelated inputs for the cases, under one folder."""
    from tests.neptune_fixtures import write_archive

    root = tmp_path_factory.mktemp("inputs")
    env = isolated_env(root / "home")
    exported = run_script(
        "wandb-tools/export_runs.py", ["--offline", str(SAMPLES), "-o", "good"], cwd=root, env=env
    )
    assert exported.returncode == 0, exported.stderr
    made = subprocess.run(
        [sys.executable, "-c", ODD_OFFLINE_SCRIPT, json.dumps(ODD_CONFIG)],
        cwd=root,
        env=env | {"WANDB_DIR": str(root / "odd")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr

    runs = (root / "good" / f"{SAMPLE_PROJECT}_runs.parquet").read_bytes()
    broken = root / "broken"
    broken.mkdir()
    (broken / "truncated_runs.parquet").write_bytes(runs[: len(runs) // 2])
    (broken / "text_runs.parquet").write_text("id,name\n1,a\n")
    pl.DataFrame({"a": [1, 2]}).write_parquet(root / "not_an_export_runs.parquet")

    logs = root / "logs"
    logs.mkdir()
    (logs / "empty.wandb").write_bytes(b"")
    (logs / "garbage.wandb").write_bytes(bytes(range(256)) * 40)
    sample_log = sorted(SAMPLES.glob("*/run-*.wandb"))[0]
    truncated = logs / "truncated" / sample_log.parent.name
    truncated.mkdir(parents=True)
    data = sample_log.read_bytes()
    (truncated / sample_log.name).write_bytes(data[: len(data) * 2 // 3])
    os.utime(truncated / sample_log.name, (1e9, 1e9))  # a job killed long ago (a fresh log is `running`)

    unrelated = root / "unrelated"
    (unrelated / "notes").mkdir(parents=True)
    (unrelated / "a.txt").write_text("hello\n")
    (unrelated / "b.csv").write_text("x,y\n1,2\n")

    write_archive(root / "archive")
    shutil.copytree(root / "archive", root / "broken_archive")
    part = sorted((root / "broken_archive").glob("*/*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:300])
    return root


@pytest.fixture(scope="module")
def odd_standin():
    with StandinServer(odd_dataset()) as server:
        yield server


# ------------------------------------------------------------------ the cases


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str
    folder: Path
    skipped: str | None = None


@dataclass(frozen=True)
class Case:
    """One script call: argv may use {in} (the inputs folder), {closed} (a dead address), {token} (Neptune)."""

    id: str
    script: str
    argv: tuple[str, ...]
    code: int
    message: str  # must appear in stderr (for failures: in its last line)
    server: str | None = None  # "default" or "odd": WANDB_BASE_URL and the stand-in's key
    env: dict[str, str | None] = field(default_factory=dict)  # None unsets
    setup: Callable[[Path], None] | None = None
    outputs: tuple[str, ...] = ()  # final paths that must hold nothing afterwards
    limit: str | None = None  # "full-disk" or "read-only", applied in the child before exec
    check: Callable[[Result], None] | None = None
    via_uv: bool = False


# Applied in a wrapper process that then execs the script: preexec_fn is not safe next to threads.
LIMITED_EXEC = """
import ctypes, os, resource, signal, sys
mode, argv = sys.argv[1], sys.argv[2:]
if mode == "full-disk":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail (EFBIG), as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
elif mode.startswith(("nofile=", "as=")):  # ulimit -n N; ulimit -v KB
    kind, value = mode.split("=")
    limit = int(value) * (1024 if kind == "as" else 1)
    resource.setrlimit(resource.RLIMIT_NOFILE if kind == "nofile" else resource.RLIMIT_AS, (limit, limit))
elif os.geteuid() == 0:  # root ignores file modes unless it drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    libc = ctypes.CDLL(None, use_errno=True)
    if any(libc.prctl(24, capability, 0, 0, 0) != 0 for capability in (1, 2)):  # PR_CAPBSET_DROP
        sys.exit(77)
os.execv(sys.executable, [sys.executable, *argv])
"""
CANNOT_LIMIT = 77


def read_only(name: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / name).mkdir()
        (folder / name).chmod(0o555)

    return setup


def plain_file(name: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / name).write_text("a file, not a folder\n")

    return setup


def runs_files(folder: Path) -> dict[str, pl.DataFrame]:
    return {path.name: pl.read_parquet(path) for path in sorted(folder.glob("*_runs.parquet"))}


def assert_inside(result: Result, output: str) -> list[Path]:
    """Every file the export wrote is a short-enough name directly in the output folder; nothing elsewhere."""
    folder = result.folder / output
    written = [
        p
        for p in result.folder.rglob("*")
        if p.is_file() and "home" not in p.relative_to(result.folder).parts
    ]
    assert written and all(p.parent == folder for p in written), written
    written = [p for p in written if not p.name.startswith(".")]  # the export's lock file
    assert all(len(p.name.encode()) <= 255 for p in written)
    leftovers = list((result.folder / "home" / "tmp").iterdir())
    assert leftovers == [], f"files outside the output folder: {leftovers}"
    return written


def check_empty_project(result: Result) -> None:
    runs = pl.read_parquet(result.folder / "out" / "graph_denoise_team_empty_project_runs.parquet")
    metadata = json.loads(
        (result.folder / "out" / "graph_denoise_team_empty_project_metadata.json").read_text()
    )
    assert runs.height == 0 and metadata["run_count"] == 0
    assert runs.columns[:4] == ["id", "name", "entity", "project"]


def check_odd_configs(frame: pl.DataFrame) -> None:
    """NaN/inf/huge ints/nested lists: sane flat columns, exact raw JSON."""
    row = frame.row(0, named=True)
    assert row["config_huge"] == float(2**70) and row["config_inf"] == math.inf
    assert row["config_negative_huge"] == -float(2**64)
    assert "config_nested" not in frame.columns and "config_deep_x_y_z" not in frame.columns  # lists stay raw
    raw = json.loads(row["_config_json"])
    assert raw["huge"] == 2**70 and raw["negative_huge"] == -(2**64)
    assert raw["nested"] == ODD_CONFIG["nested"] and raw["λ/é.key"] == "ünï"
    assert json.loads(row["_summary_json"])["big"] == 2**80


def check_odd_api(result: Result) -> None:
    assert_inside(result, "out")
    frames = runs_files(result.folder / "out")
    projects = {f["project"][0] for f in frames.values()}
    assert projects == {"prøject ü", "..", "../../escape", LONG_PROJECT}
    assert {f["entity"][0] for f in frames.values()} == {"ünï-team"}
    main = next(f for f in frames.values() if f["project"][0] == "prøject ü")
    assert sorted(main["name"]) == sorted(ODD_RUN_NAMES)
    check_odd_configs(main)
    assert math.isnan(main.filter(pl.col("id") == "odd1")["metric_loss"][0])
    history = pl.read_parquet(result.folder / "out" / "ünï-team_prøject_ü_history.parquet")
    assert history.height == 5 * len(ODD_RUN_NAMES) and history["value"].is_finite().all()


def check_odd_offline(result: Result) -> None:
    assert_inside(result, "out")
    frames = runs_files(result.folder / "out")
    assert {(f["entity"][0], f["project"][0]) for f in frames.values()} == {
        ("../../evil", ".."),
        ("ünï", "prøject ü"),
    }
    for frame in frames.values():
        check_odd_configs(frame)
        assert math.isnan(frame["metric_loss"][0])


def check_truncated_log(result: Result) -> None:
    (frame,) = runs_files(result.folder / "out").values()
    assert frame["state"].to_list() == ["crashed"]  # the exit record was cut off


def check_created_parents(result: Result) -> None:
    assert pl.read_parquet(result.folder / "a" / "b" / "c" / "u.parquet").height == 13


def check_no_side_effect(result: Result) -> None:
    assert not (result.folder / "pwned").exists()


W, N = "wandb-tools", "neptune-tools"
EXPORT, LIST, AGGREGATE, ANALYZE = (
    f"{W}/export_runs.py",
    f"{W}/list_entities.py",
    f"{W}/aggregate_runs.py",
    f"{W}/analyze_runs.py",
)
NEPTUNE_TOPK, NEPTUNE_EXPORT, WANDB_TOPK = f"{N}/query_topk.py", f"{N}/export_runs.py", f"{W}/query_topk.py"
GOOD_RUNS = f"{{in}}/good/{SAMPLE_PROJECT}_runs.parquet"
WRONG_KEY = "0bad0bad" * 5
SPECTRAL = ("-e", "graph_denoise_team", "-p", "spectral_denoising")

CASES = [
    # The slow ones first (retries against a dead address): the pool finishes sooner.
        Case("le-unreachable-server", LIST, ("--timeout", "2"), 1, "did not answer", server="default",
         env={"WANDB_BASE_URL": "{closed}"}),
    Case("le-no-workers", LIST, ("--workers", "0"), 2, "--workers must be at least 1"),
    Case("le-zero-timeout", LIST, ("--timeout", "0"), 2, "--timeout: '0' is not a number of seconds above 0"),
    Case("ex-bad-timeout", EXPORT, (*SPECTRAL, "-o", "out", "--timeout", "soon"), 2,
         "--timeout: 'soon' is not a number of seconds above 0", outputs=("out",)),
    Case("ex-nan-retry-time", EXPORT, (*SPECTRAL, "-o", "out", "--max-retry-time", "nan"), 2,
         "--max-retry-time must be 0 or more", outputs=("out",)),
    # empty values: never quietly the current folder or the default
    Case("ex-blank-output", EXPORT, (*SPECTRAL, "-o", ""), 2,
         "argument -o/--output: an empty path names nothing (use . for the current folder)"),
    Case("ex-blank-project", EXPORT, ("-e", "graph_denoise_team", "-p", ""), 2,
         "argument -p/--project: must not be empty"),
    Case("an-blank-input", ANALYZE, ("",), 2, "an empty path names nothing (use . for the current folder)"),
    Case("wq-blank-metric", WANDB_TOPK, ("--export", "{in}/good", "--metric", ""), 2,
         "argument --metric: must not be empty"),
    # credentials
    Case("le-rejected-key", LIST, (), 2, "W&B rejected the API key from WANDB_API_KEY", server="default",
         env={"WANDB_API_KEY": WRONG_KEY}),
    Case("ex-rejected-key", EXPORT, (*SPECTRAL, "-o", "out"), 2, "W&B rejected the API key", server="default",
         env={"WANDB_API_KEY": WRONG_KEY}, outputs=("out",)),
    Case("ex-no-key", EXPORT, (*SPECTRAL, "-o", "out"), 2, "no W&B API key found", server="default",
         env={"WANDB_API_KEY": None}, outputs=("out",)),
    Case("nq-no-token", NEPTUNE_TOPK, ("team/proj", "--metric", "loss"), 2, "no Neptune API token found"),
    Case("ne-no-token", NEPTUNE_EXPORT, ("-p", "team/proj", "-o", "out"), 2, "no Neptune API token found",
         outputs=("out",)),
        # unknown entity / project / run names
        Case("ex-unknown-entity", EXPORT, ("-e", "no-such-entity", "-o", "out"), 2, "unknown W&B entity", server="default",
         outputs=("out",)),
    Case("ex-unknown-project", EXPORT, ("-e", "graph_denoise_team", "-p", "nope", "-o", "out"), 2,
         "unknown project(s) in graph_denoise_team: nope (available: empty_project, spectral_denoising)",
         server="default", outputs=("out",)),
    Case("nq-unknown-project", NEPTUNE_TOPK, ("{in}/archive", "--project", "no/such", "--metric", "train/loss"), 2,
         "project 'no/such' is not in"),
    Case("ne-unknown-project", NEPTUNE_EXPORT, ("--source", "{in}/archive", "-p", "no/such", "-o", "out"), 2,
         "project 'no/such' is not in", outputs=("out",)),
    # bad --since / --where / regex / column / metric
    Case("ex-bad-since", EXPORT, (*SPECTRAL, "--since", "yesterday", "-o", "out"), 2, "bad --since 'yesterday'",
         outputs=("out",), via_uv=True),
    Case("ex-bad-since-date", EXPORT, (*SPECTRAL, "--since", "2026-13-45", "-o", "out"), 2, "bad --since '2026-13-45'",
         outputs=("out",)),
    Case("ex-since-overflow", EXPORT, (*SPECTRAL, "--since", "99999999d", "-o", "out"), 2,
         "bad --since '99999999d': that is before the year 1", server="default", outputs=("out",)),
    Case("ex-zero-workers", EXPORT, (*SPECTRAL, "--workers", "0"), 2, "--workers must be at least 1"),
    Case("nq-bad-where", NEPTUNE_TOPK, ("{in}/archive", "--metric", "train/loss", "--where", '"metrics/L0" <'), 2,
         "--where '\"metrics/L0\" <' is not a valid expression"),
    Case("nq-where-is-never-eval", NEPTUNE_TOPK,
         ("{in}/archive", "--metric", "train/loss", "--where", "__import__('os').system('touch pwned') = 0"), 2,
         "--where", check=check_no_side_effect),
    Case("wq-bad-where", WANDB_TOPK, ("--export", "{in}/good", "--metric", "test/mse", "--where", "loss <"), 2,
         "is not a valid expression"),
    Case("ag-bad-regex", AGGREGATE, (GOOD_RUNS, "--filter", "([", "-o", "out/u.parquet"), 2, "bad regex in --filter",
         outputs=("out",)),
    Case("an-bad-regex", ANALYZE, (GOOD_RUNS, "--filter", "(["), 2, "bad regex in --filter: '(['"),
    Case("an-unknown-column", ANALYZE, (GOOD_RUNS, "--group-by", "nope"), 2, "unknown column 'nope' in --group-by"),
    Case("an-unknown-metric", ANALYZE, (GOOD_RUNS, "--metric", "nope"), 2, "unknown metric 'nope' in --metric"),
    Case("nq-unknown-metric", NEPTUNE_TOPK, ("{in}/archive", "--metric", "nope"), 2, "unknown metric 'nope'"),
    Case("wq-unknown-metric", WANDB_TOPK, ("--export", "{in}/good", "--metric", "nope"), 2, "unknown metric"),
    # empty project, corrupt / truncated / empty logs, unrelated folders, broken parquet
    Case("ex-empty-project", EXPORT, ("-e", "graph_denoise_team", "-p", "empty_project", "-o", "out"), 0,
         "Saved 0 runs", server="default", check=check_empty_project),
    Case("off-empty-log", EXPORT, ("--offline", "{in}/logs/empty.wandb", "-o", "out"), 2,
         "empty file, not a W&B run log", outputs=("out",)),
    Case("off-garbage-log", EXPORT, ("--offline", "{in}/logs/garbage.wandb", "-o", "out"), 2, "not a W&B run log",
         outputs=("out",)),
    Case("off-truncated-log", EXPORT, ("--offline", "{in}/logs/truncated", "-o", "out"), 0,
         "corrupt or truncated record", check=check_truncated_log),
    Case("off-unrelated-folder", EXPORT, ("--offline", "{in}/unrelated", "-o", "out"), 2,
         "no W&B run logs (run-*.wandb) found", outputs=("out",)),
        Case("ag-unrelated-folder", AGGREGATE, ("{in}/unrelated", "-o", "out/u.parquet"), 2,
         "no *_runs.parquet in folder", outputs=("out",)),
    Case("nq-unrelated-folder", NEPTUNE_TOPK, ("{in}/unrelated", "--metric", "loss"), 2,
         "is neither a neptune-exporter data folder"),
    Case("ag-truncated-parquet", AGGREGATE, ("{in}/broken/truncated_runs.parquet", "-o", "out/u.parquet"), 2,
         "cannot read", outputs=("out",)),
        Case("an-text-as-parquet", ANALYZE, ("{in}/broken/text_runs.parquet",), 2, "cannot read"),
    Case("an-not-an-export", ANALYZE, ("{in}/not_an_export_runs.parquet",), 2, "is not a runs export"),
    Case("nq-truncated-archive-part", NEPTUNE_TOPK, ("{in}/broken_archive", "--metric", "train/loss", "--no-cache"), 2,
         "cannot read"),
    Case("wq-truncated-export", WANDB_TOPK, ("--export", "{in}/broken/truncated_runs.parquet", "--metric", "x"), 2,
         "cannot read"),
    # NaN/inf/huge ints/nested lists, unicode, `..` and over-long names: these succeed, sanely
    Case("ex-odd-names-and-configs", EXPORT, ("-e", "ünï-team", "-o", "out", "--include-history"), 0,
         f"Saved 1 runs to out/ünï-team_{'x' * 150}",
         server="odd", check=check_odd_api),
        Case("off-odd-names-and-configs", EXPORT, ("--offline", "{in}/odd/wandb", "-o", "out"), 0, "Saved 1 runs",
         check=check_odd_offline),
    # output folders: read-only, a file in the way, missing parents, a full disk
    Case("off-read-only-output", EXPORT, ("--offline", str(SAMPLES), "-o", "ro"), 2, "output folder ro is not writable",
         setup=read_only("ro"), outputs=("ro",), limit="read-only"),
    Case("ag-output-folder-is-a-file", AGGREGATE, (GOOD_RUNS, "-o", "out/u.parquet"), 2,
         "cannot create output folder out", setup=plain_file("out")),
    Case("ag-read-only-output", AGGREGATE, (GOOD_RUNS, "-o", "ro/u.parquet"), 2, "-o ro/u.parquet: folder ro is not writable",
         setup=read_only("ro"), outputs=("ro",), limit="read-only"),
    Case("ag-missing-output-parents", AGGREGATE, (GOOD_RUNS, "-o", "a/b/c/u.parquet"), 0, "Wrote 13 runs",
         check=check_created_parents),
    Case("off-full-disk", EXPORT, ("--offline", str(SAMPLES), "-o", "out", "--include-history"), 1, "File too large",
         outputs=("out",), limit="full-disk"),
    Case("ag-full-disk", AGGREGATE, (GOOD_RUNS, "-o", "out/u.parquet"), 1, "cannot write out/u.parquet",
         outputs=("out",), limit="full-disk"),
    Case("an-full-disk", ANALYZE, (GOOD_RUNS, "-o", "out/top.parquet"), 1, "cannot write out/top.parquet",
         setup=lambda folder: (folder / "out").mkdir(), outputs=("out",), limit="full-disk"),
    Case("nq-output-folder-missing", NEPTUNE_TOPK, ("{in}/archive", "--metric", "train/loss", "-o", "no/x.json"), 2,
         "does not exist", outputs=("no",)),
]  # fmt: skip
CASES = [case for case in CASES if (ROOT / case.script).is_file()]  # verbs other helpers are still adding


def run_case(
    case: Case, folder: Path, inputs: Path, servers: dict[str, StandinServer], closed: str
) -> Result:
    folder.mkdir(parents=True)
    if case.setup:
        case.setup(folder)
    env = isolated_env(folder / "home")
    if case.server:
        server = servers[case.server]
        env |= {"WANDB_BASE_URL": server.url, "WANDB_API_KEY": server.api_key}
    places = {"in": str(inputs), "closed": closed, "token": neptune_token(closed, "fake-neptune-key")}
    for key, value in case.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value.format(**places)
    argv = [part.format(**places) for part in case.argv]
    if case.env.get("WANDB_API_KEY", "") is None and (ROOT / ".env").is_file():
        return Result(0, "", "", folder, skipped="a .env beside the tools holds a key")
    if case.via_uv:
        # uv needs the real HOME (its cache, the Python it found); this case fails before credentials.
        command = ["uv", "run", "--quiet", str(ROOT / case.script), *argv]
        env["HOME"] = os.environ.get("HOME", env["HOME"])
    elif case.limit:
        command = [sys.executable, "-c", LIMITED_EXEC, case.limit, str(ROOT / case.script), *argv]
    else:
        command = [sys.executable, str(ROOT / case.script), *argv]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    if case.limit and done.returncode == CANNOT_LIMIT:
        return Result(done.returncode, done.stdout, done.stderr, folder, skipped=f"cannot apply {case.limit}")
    return Result(done.returncode, done.stdout, done.stderr, folder)


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, inputs, wandb_standin, odd_standin) -> Batches[Case, Result]:
    """Every case this session selected, run a few at a time (most of each is interpreter start-up)."""
    base = tmp_path_factory.mktemp("cases")
    servers = {"default": wandb_standin, "odd": odd_standin}
    closed = closed_port_url()
    return Batches(
        "tests/test_bad_input.py::test_bad_input",
        selected_params(request),
        case_id=lambda case: case.id,
        attempt=lambda case: run_case(case, base / case.id, inputs, servers, closed),
    )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, results: Batches[Case, Result]) -> None:
    result = results[case.id]
    if result.skipped:
        pytest.skip(result.skipped)
    context = (
        f"{case.id}: exit {result.code}\n--- stderr\n{result.stderr}\n--- stdout\n{result.stdout[-2000:]}"
    )
    assert result.code == case.code, context
    assert "Traceback" not in result.stderr, context
    assert case.message in result.stderr, context
    if case.code != 0:
        last = result.stderr.splitlines()[-1]
        assert "error: " in last and case.message in last and "\x1b" not in last, context
        if case.code == 2:
            assert sum("error:" in line for line in result.stderr.splitlines()) == 1, context
    for output in case.outputs:  # no output file (hidden ones: the export's lock, temp files below)
        path = result.folder / output
        held = [p for p in path.rglob("[!.]*") if p.is_file()] if path.is_dir() else [path] * path.exists()
        assert held == [], f"{case.id} left {held}"
    assert not [p for p in result.folder.rglob("*.tmp")], "a temp file was left behind"
    if case.check:
        case.check(result)


def test_the_corpus_covers_every_script_with_enough_cases():
    scripts = {case.script for case in CASES}
    present = {str(p.relative_to(ROOT)) for folder in (W, N) for p in (ROOT / folder).glob("*.py")}
    assert present <= scripts, f"scripts without a bad-input case: {sorted(present - scripts)}"
    assert len(CASES) >= 30 and len({case.id for case in CASES}) == len(CASES)
