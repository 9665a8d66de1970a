"""Everything a run holds (issue 21), item 1: its metadata (git, host, OS, Python, program, arguments, CPUs,
GPU) as core columns of the runs table, for every source, compared with what the real clients recorded."""

from __future__ import annotations

import math
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import psutil
import pytest

from shared.base.errors import Incomplete
from tests.current_data import load_script
from tests.neptune_fixtures import Spec, write_archive
from tests.test_wandb_offline import export_offline
from tests.wandb_standin import HookResult

METADATA = [
    "git_commit",
    "git_remote",
    "host",
    "os",
    "python",
    "program",
    "args",
    "cpu_count",
    "gpu",
    "gpu_count",
]
TRAIN = """\
import wandb
run = wandb.init(mode="offline", project="proj", name="in-a-repo")
run.log({"loss": 1.0})
run.finish()
"""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def test_an_offline_run_keeps_the_environment_it_ran_in(tmp_path: Path):
    """A script run by the real client in a git repository with a remote: the export's metadata columns
    are this machine's, the script's and the repository's, and the remote's credentials are gone."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "remote", "add", "origin", "https://someone:s3cret@example.com/team/repo.git")
    (repo / "train.py").write_text(TRAIN)
    git(repo, "add", "train.py")
    git(repo, "-c", "user.email=a@example.com", "-c", "user.name=a", "commit", "-qm", "train")
    home = tmp_path / "home"
    home.mkdir()
    keep = {name: value for name, value in os.environ.items() if not name.startswith("WANDB_")}
    environment = keep | {"HOME": str(home), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    args = ["--lr", "0.1", "two words"]
    subprocess.run([sys.executable, "train.py", *args], cwd=repo, env=environment, check=True, timeout=120)

    results, failures = export_offline([repo / "wandb"], tmp_path / "out")
    assert failures == []
    runs = pl.read_parquet(results[0].runs_path)
    assert runs.schema["args"] == pl.List(pl.String) and runs.schema["cpu_count"] == pl.Int64
    assert runs.select(METADATA).to_dicts() == [
        {
            "git_commit": git(repo, "rev-parse", "HEAD"),
            "git_remote": "https://example.com/team/repo.git",
            "host": socket.gethostname(),
            "os": platform.platform(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "program": str(repo / "train.py"),
            "args": args,
            "cpu_count": psutil.cpu_count(logical=False),
            "gpu": None,  # this machine has none
            "gpu_count": None,
        }
    ]
    assert b"s3cret" not in results[0].runs_path.read_bytes()


@pytest.mark.parametrize("remote", ["https://someone:s3cret@example.com/r.git", "git@example.com:team/r.git"])
def test_a_remote_keeps_its_address_but_not_its_credentials(remote: str):
    from shared.wandb.metadata import run_metadata

    kept = run_metadata({"git": {"remote": remote}})["git_remote"]
    assert "s3cret" not in kept and kept.endswith("r.git")


def test_a_program_run_without_arguments_has_an_empty_list_of_them():
    """wandb leaves an empty `args` out of the record and the JSON; with the program recorded, it is []."""
    from shared.wandb.metadata import run_metadata

    assert run_metadata({"program": "train.py"})["args"] == []
    assert run_metadata({})["args"] is None


NEPTUNE_TRAIN = """\
import neptune
run = neptune.init_run(mode="offline", project="ws/proj", name="monitored")
run["train/loss"].append(1.0)
run.stop()
"""


def neptune_runs(arguments: list[str], out: Path) -> pl.DataFrame:
    assert load_script("export_runs", "neptune-tools").main([*arguments, "-o", str(out)]) == 0
    (runs,) = out.glob("*_runs.parquet")
    return pl.read_parquet(runs)


def test_a_neptune_offline_run_keeps_its_host_and_entry_point(tmp_path: Path):
    """The real client's defaults record the host (sys/hostname, monitoring/<hash>/hostname) and the entry
    point; offline it records no git reference, and nothing of the other metadata."""
    (tmp_path / "train.py").write_text(NEPTUNE_TRAIN)
    keep = {name: value for name, value in os.environ.items() if not name.startswith("NEPTUNE_")}
    environment = keep | {"HOME": str(tmp_path), "NEPTUNE_DATA_DIRECTORY": str(tmp_path / ".neptune")}
    subprocess.run([sys.executable, "train.py"], cwd=tmp_path, env=environment, check=True, timeout=120)

    runs = neptune_runs(["--source", str(tmp_path / ".neptune")], tmp_path / "out")
    assert runs.select(METADATA).to_dicts() == [
        dict.fromkeys(METADATA) | {"host": socket.gethostname(), "program": "train.py"}
    ]


def test_an_archive_run_keeps_host_entry_point_and_commit(tmp_path: Path):
    """An archive's attributes: sys/hostname before a monitored process's hostname, which stands in when
    sys/hostname is missing; source_code/git as a commit id."""
    recorded = {"source_code/entrypoint": "train.py", "monitoring/0a1b2c3d/hostname": "node-8"}
    specs = [
        Spec("both", {}, {}, attributes=recorded | {"sys/hostname": "node-7", "source_code/git": "c0ffee"}),
        Spec("monitored", {}, {}, attributes=recorded),
    ]
    runs = neptune_runs(["--source", str(write_archive(tmp_path / "data", specs=specs))], tmp_path / "out")
    got = {row["name"]: row for row in runs.select("name", *METADATA).to_dicts()}
    empty = dict.fromkeys(METADATA) | {"program": "train.py"}
    assert got["both"] == {"name": "both"} | empty | {"host": "node-7", "git_commit": "c0ffee"}
    assert got["monitored"] == {"name": "monitored"} | empty | {"host": "node-8"}


def test_an_api_export_keeps_each_runs_wandb_metadata_json(wandb_env, tmp_path: Path):
    """Each run's metadata is its wandb-metadata.json as the stand-in serves it, looked up for 25 runs per
    request; a run without the file has only the Runs reply's commit. The remote's token is not kept."""
    team, project = "graph_denoise_team", "spectral_denoising"
    held = wandb_env.dataset.project(team, project).runs
    assert load_script("export_runs").main(["-e", team, "-p", project, "-o", str(tmp_path)]) == 0
    runs = pl.read_parquet(tmp_path / f"{team}_{project}_runs.parquet")
    got = {row.pop("id"): row for row in runs.select("id", *METADATA).to_dicts()}
    for run in held:
        file = run.metadata or {}
        assert got[run.id] == {
            "git_commit": run.commit,
            "git_remote": "https://github.com/team/graph.git" if file else None,
            "host": file.get("host"),
            "os": file.get("os"),
            "python": file.get("python"),
            "program": file.get("program"),
            "args": file.get("args"),
            "cpu_count": file.get("cpu_count"),
            "gpu": file.get("gpu"),
            "gpu_count": file.get("gpu_count"),
        }, run.id
    assert any(run.metadata is None for run in held) and any(run.metadata for run in held)
    assert got and b"ghp_secret" not in (tmp_path / f"{team}_{project}_runs.parquet").read_bytes()
    assert wandb_env.requests["RunContents"] == math.ceil(len(held) / 25)
    assert wandb_env.requests["GET /files/wandb-metadata.json"] == sum(
        run.metadata is not None for run in held
    )
    wandb_env.assert_clean()


def test_a_metadata_file_that_cannot_be_had_names_its_run_and_the_export_is_incomplete(
    wandb_env, tmp_path: Path, capsys
):
    """The server refuses one run's wandb-metadata.json: that run is named, the export ends incomplete,
    and every run is still written, the others with their metadata."""
    team, project = "vision-lab", "segmentation"
    held = wandb_env.dataset.project(team, project).runs
    broken = next(run for run in held if run.metadata)
    refused = f"/{broken.id}/wandb-metadata.json"
    wandb_env.request_hook = lambda request: (
        HookResult(status=403) if request.path.endswith(refused) else None
    )
    try:
        with pytest.raises(Incomplete):
            load_script("export_runs").main(["-e", team, "-p", project, "-o", str(tmp_path)])
    finally:
        wandb_env.request_hook = None
    err = capsys.readouterr().err
    assert f"run {broken.id} not exported: wandb-metadata.json: download failed (HTTP 403)" in err
    runs = pl.read_parquet(tmp_path / f"{team}_{project}_runs.parquet")
    hosts = dict(zip(runs["id"], runs["host"], strict=True))
    assert hosts == {run.id: (run.metadata or {}).get("host") for run in held} | {broken.id: None}


def test_the_report_shows_where_the_best_runs_ran(wandb_env, tmp_path: Path):
    """analyze --report's top table carries the best runs' commit, host, program and GPU (item 6); a
    metadata column empty for all of them is left out."""
    from tests.report_fixtures import PageTables

    team, project = "graph_denoise_team", "spectral_denoising"
    assert load_script("export_runs").main(["-e", team, "-p", project, "-o", str(tmp_path)]) == 0
    runs_path = tmp_path / f"{team}_{project}_runs.parquet"
    report = tmp_path / "report.html"
    argv = [str(runs_path), "--metric", "test/mse", "--top", "10", "--report", str(report)]
    assert load_script("analyze_runs").main(argv) == 0
    page = PageTables(report.read_text())
    top = pl.read_parquet(runs_path).filter(pl.col("id").is_in(page.column("top-runs", "id")))
    shown = {column: page.column("top-runs", column) for column in ("id", "git_commit", "host", "gpu")}
    by_id = {row["id"]: row for row in top.iter_rows(named=True)}
    for column in ("git_commit", "host"):
        assert shown[column] == [by_id[run_id][column] or "" for run_id in shown["id"]], column
    assert any(shown["host"]) and "program" in page.tables["top-runs"]["header"]


def test_a_neptune_server_runs_table_gives_the_commit_id_of_source_code_git(monkeypatch, tmp_path: Path):
    """The live client's runs table holds `source_code/git` as its commit id (neptune 1.x's table.py);
    the stand-in client serves the first run with it, the host and the entry point."""
    from dataclasses import replace

    from tests.neptune_fixtures import PROJECT, SPECS, Calls, StandInClient

    recorded = {"source_code/git": "c0ffee", "sys/hostname": "node-3", "source_code/entrypoint": "main.py"}
    first = replace(SPECS[0], attributes={**SPECS[0].attributes, **recorded})
    monkeypatch.setitem(sys.modules, "neptune", StandInClient(Calls(), {}, [first, *SPECS[1:]]))
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "token-for-tests")
    runs = neptune_runs(["-p", PROJECT], tmp_path / "out").sort("id")
    assert runs.select(METADATA).row(0, named=True) == dict.fromkeys(METADATA) | {
        "git_commit": "c0ffee",
        "host": "node-3",
        "program": "main.py",
    }
    assert all(value is None for row in runs.select(METADATA).slice(1).iter_rows() for value in row)
