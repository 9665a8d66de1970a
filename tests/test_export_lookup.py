"""query_topk.py --export picks a project's files by the entity/project its metadata records, so projects
whose file names collide (`a b`/`a_b`, `x_y`+`z`/`x`+`y_z`) each answer with their own runs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.current_data import load_script
from tests.test_name_collisions import (
    PROJECTS,
    export,
    server_ids,
    wandb_standin,  # noqa: F401  (the four colliding projects)
)
from tests.test_wandb_query import cli

query_topk = load_script("query_topk")


@pytest.fixture
def folder(wandb_env, tmp_path) -> Path:
    """One folder with all four projects, exported one after another (the later ones get digest names)."""
    out = tmp_path / "exports"
    export(out, "x_y", "a b")
    export(out, "x_y", "a_b", "z")
    export(out, "x", "y_z")
    assert len(list(out.glob("*_runs.parquet"))) == len(PROJECTS)
    return out


def answered(source: Path, project: str, capsys) -> list[str]:
    """The run ids query_topk.py ranks for `project` in `source` (every run, from its history)."""
    command = (
        f"--export {source} {shlex.quote(project)} --metric train/loss --aggregation mean_all -k 50 --json"
    )
    assert cli(query_topk, command) == 0, capsys.readouterr().err
    return sorted(run["run_id"] for run in json.loads(capsys.readouterr().out))


def error_line(command: str, capsys) -> str:
    assert cli(query_topk, command) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    return err


def test_each_colliding_project_answers_with_its_own_runs(folder, wandb_env, capsys):
    assert (folder / "x_y_a_b_runs.parquet").is_file()  # `a b` took the plain name, `a_b` a digest one
    for entity, project in PROJECTS:
        assert answered(folder, f"{entity}/{project}", capsys) == server_ids(wandb_env, entity, project)
    assert answered(folder, "a_b", capsys) == server_ids(wandb_env, "x_y", "a_b")  # no entity: by project


def test_files_without_metadata_are_found_by_name(folder, wandb_env, capsys):
    for metadata in folder.glob("*_metadata.json"):
        metadata.unlink()  # as an older version, or files copied without their metadata, leave them
    for entity, project in PROJECTS:  # a digest name wins over the plain one another project holds
        assert answered(folder, f"{entity}/{project}", capsys) == server_ids(wandb_env, entity, project)


def test_a_project_not_there_is_one_line_naming_the_projects_there(folder, capsys):
    err = error_line(f"--export {folder} x_y/y_z --metric train/loss", capsys)
    assert f"project 'x_y/y_z' is not in {folder}" in err
    assert all(f"{entity}/{project}" in err for entity, project in PROJECTS)

    plain = folder / "x_y_a_b_runs.parquet"
    err = error_line(f"--export {plain} x_y/a_b --metric train/loss", capsys)
    assert err == f"error: {plain} holds the export of x_y/a b, not x_y/a_b"

    for kind in ("_runs.parquet", "_metadata.json"):  # a copy of x_y/z's files under another name
        (folder / f"copy{kind}").write_bytes((folder / f"x_y_z{kind}").read_bytes())
    err = error_line(f"--export {folder} x_y/z --metric train/loss", capsys)
    assert "project 'x_y/z' matches several exports" in err and "copy_runs.parquet, x_y_z_runs.parquet" in err
