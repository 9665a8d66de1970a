"""Projects whose file names collide (`a b`/`a_b`, `x_y`+`z`/`x`+`y_z`) keep their own export files."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from shared.base.errors import BadInput
from shared.table.export_folder import find_export
from tests.current_data import load_script
from tests.export_checks import new_run, utc_now
from tests.neptune_fixtures import SPECS, write_archive
from tests.offline_client import offline_wandb
from tests.wandb_standin import StandinDataset, StandinServer, StandinViewer

export_runs = load_script("export_runs")
neptune_export_runs = load_script("export_runs", "neptune-tools")

# (entity, project) -> prefix of its run ids. The first two share `x_y_a_b`, the last two `x_y_z`.
PROJECTS = {("x_y", "a b"): "sp", ("x_y", "a_b"): "us", ("x_y", "z"): "xy", ("x", "y_z"): "yz"}
TAGGED = re.compile(r"-[0-9a-f]{8}$")


@pytest.fixture
def wandb_standin() -> Iterator[StandinServer]:
    """Overrides the session server for `wandb_env`: four small projects, changed by the tests."""
    created = utc_now() - timedelta(days=3)  # long before any export: a rerun fetches only new runs
    dataset = StandinDataset(viewer=StandinViewer(teams=["x", "x_y"]), now=utc_now())
    for (entity, project), prefix in PROJECTS.items():
        runs = [new_run(f"{prefix}{i:04d}", created + timedelta(minutes=i), steps=3) for i in range(3)]
        dataset.add_project(entity, project, runs, is_team=True)
    with StandinServer(dataset) as server:
        yield server
    server.assert_clean()


def export(folder: Path, entity: str, *projects: str, incremental: bool = True) -> None:
    argv = ["-e", entity, "-p", ",".join(projects), "--include-history", "-o", str(folder)]
    assert export_runs.main([*argv, *(["--incremental"] if incremental else [])]) == 0


def exported(folder: Path) -> dict[tuple[str, str], tuple[str, list[str], list[str]]]:
    """(entity, project) → (file stem, run ids in the runs file, run ids in the history file), by metadata."""
    found = {}
    for metadata_path in sorted(folder.glob("*_metadata.json")):
        metadata = json.loads(metadata_path.read_text())
        stem = metadata_path.name.removesuffix("_metadata.json")
        assert metadata["files"] == {
            "runs": f"{stem}_runs.parquet",
            "history": f"{stem}_history.parquet",
            "history_other": f"{stem}_history_other.parquet",
            "files": f"{stem}_files.parquet",
        }
        runs = pl.read_parquet(folder / metadata["files"]["runs"])
        assert set(zip(runs["entity"], runs["project"], strict=True)) == {
            (metadata["entity"], metadata["project"])
        }
        history = pl.read_parquet(folder / metadata["files"]["history"])
        found[metadata["entity"], metadata["project"]] = (
            stem,
            sorted(runs["id"]),
            sorted(set(history["run_id"])),
        )
    return found


def server_ids(server: StandinServer, entity: str, project: str) -> list[str]:
    found = server.dataset.project(entity, project)
    assert found is not None
    return sorted(run.id for run in found.runs)


def assert_each_project_has_its_runs(folder: Path, server: StandinServer, pairs: list[tuple[str, str]]):
    files = exported(folder)
    assert sorted(files) == sorted(pairs)
    for pair in pairs:
        _, runs, history = files[pair]
        assert runs == history == server_ids(server, *pair)
    states = sorted(path.name.removesuffix("_state.json") for path in folder.glob("*_state.json"))
    assert states == sorted(stem for stem, _, _ in files.values())
    plain = [stem for stem, _, _ in files.values() if not TAGGED.search(stem)]
    assert len(plain) == 1  # the first project exported keeps the spec's plain name
    return files


def add_run(server: StandinServer, entity: str, project: str, run_id: str) -> None:
    found = server.dataset.project(entity, project)
    assert found is not None
    found.runs.append(new_run(run_id, utc_now(), steps=3))


def test_colliding_projects_of_one_export_keep_their_files_and_update_from_their_state(
    wandb_env, tmp_path, capsys
):
    pairs = [("x_y", "a b"), ("x_y", "a_b")]
    export(tmp_path, "x_y", "a b", "a_b")
    first = assert_each_project_has_its_runs(tmp_path, wandb_env, pairs)
    assert first["x_y", "a b"][0] == "x_y_a_b"

    for pair in pairs:
        add_run(wandb_env, *pair, f"{PROJECTS[pair]}new1")
    wandb_env.clear_cache()
    capsys.readouterr()
    export(tmp_path, "x_y", "a_b", "a b")  # the other order: names stay with their projects
    err = capsys.readouterr().err
    for entity, project in pairs:
        assert f"{entity}/{project}: fetching runs changed since" in err
        assert f"{entity}/{project}: 1 new or changed run(s) merged into the files" in err
    assert "full export" not in err
    again = assert_each_project_has_its_runs(tmp_path, wandb_env, pairs)
    assert {pair: stem for pair, (stem, _, _) in again.items()} == {
        pair: stem for pair, (stem, _, _) in first.items()
    }

    export(tmp_path, "x_y", "a_b", "a b", incremental=False)  # a fresh full export finds them again
    assert exported(tmp_path) == again


def test_colliding_projects_of_successive_exports_keep_their_files_and_update_from_their_state(
    wandb_env, tmp_path, capsys
):
    pairs = [("x_y", "z"), ("x", "y_z")]
    for entity, project in pairs:
        export(tmp_path, entity, project)
    first = assert_each_project_has_its_runs(tmp_path, wandb_env, pairs)
    assert first["x_y", "z"][0] == "x_y_z" and TAGGED.search(first["x", "y_z"][0])

    for pair in pairs:
        add_run(wandb_env, *pair, f"{PROJECTS[pair]}new1")
    wandb_env.clear_cache()
    capsys.readouterr()
    for entity, project in reversed(pairs):
        export(tmp_path, entity, project)
        err = capsys.readouterr().err
        assert f"{entity}/{project}: 1 new or changed run(s) merged into the files" in err, err
    assert exported(tmp_path).keys() == first.keys()
    assert_each_project_has_its_runs(tmp_path, wandb_env, pairs)


def test_offline_runs_of_colliding_projects_in_one_export_keep_their_own_files(tmp_path, monkeypatch):
    with offline_wandb(monkeypatch, tmp_path) as wandb:
        for entity, project in [("x", "y_z"), ("x_y", "z")]:
            run = wandb.init(mode="offline", dir=tmp_path, entity=entity, project=project)
            run.log({"loss": 1.0})
            run.finish()
    out = tmp_path / "out"
    assert export_runs.main(["--offline", str(tmp_path / "wandb"), "--include-history", "-o", str(out)]) == 0
    files = exported(out)
    assert {pair: len(runs) for pair, (_, runs, _) in files.items()} == {("x", "y_z"): 1, ("x_y", "z"): 1}
    assert len({stem for stem, _, _ in files.values()}) == 2


def test_neptune_projects_whose_names_collide_keep_their_own_files(tmp_path):
    archive = tmp_path / "archive"
    write_archive(archive, "ws/a b", specs=SPECS[:2])
    write_archive(archive, "ws/a_b", specs=SPECS[:1])
    out = tmp_path / "out"
    assert neptune_export_runs.main(["--source", str(archive), "-o", str(out)]) == 0
    counts = {}
    for metadata_path in out.glob("*_metadata.json"):
        metadata = json.loads(metadata_path.read_text())
        runs = pl.read_parquet(out / metadata["files"]["runs"])
        assert set(runs["project"]) == {metadata["project"]}
        counts[metadata["project"]] = runs.height
    assert counts == {"a b": 2, "a_b": 1}


def metadata_by_source(folder: Path) -> dict[str, tuple[str, dict]]:
    """source → (file stem, metadata) of every export in `folder`."""
    found = {}
    for path in sorted(folder.glob("*_metadata.json")):
        metadata = json.loads(path.read_text())
        assert metadata["source"] not in found, f"two exports from {metadata['source']}"
        found[metadata["source"]] = (path.name.removesuffix("_metadata.json"), metadata)
    return found


def offline_runs(tmp_path: Path, entity: str, project: str, count: int = 1) -> Path:
    with pytest.MonkeyPatch.context() as patch, offline_wandb(patch, tmp_path / "client") as wandb:
        for _ in range(count):
            run = wandb.init(mode="offline", dir=tmp_path, entity=entity, project=project)
            run.log({"loss": 1.0})
            run.finish()
    return tmp_path / "wandb"


def test_one_project_name_from_two_trackers_keeps_both_exports(tmp_path, capsys):
    """W&B offline runs of team/sae-sweep, then a Neptune archive of team/sae-sweep, into one folder: the
    second gets digest-suffixed names (with a note), and reruns of each keep their own files."""
    logs = offline_runs(tmp_path, "team", "sae-sweep", count=2)
    archive = write_archive(tmp_path / "archive", "team/sae-sweep", specs=SPECS[:3])
    out = tmp_path / "out"
    for _ in range(2):
        assert export_runs.main(["--offline", str(logs), "--include-history", "-o", str(out)]) == 0
        assert neptune_export_runs.main(["--source", str(archive), "--include-history", "-o", str(out)]) == 0
        exports = metadata_by_source(out)
        assert sorted(exports) == ["neptune", "wandb-offline"]
        assert exports["wandb-offline"][0] == "team_sae-sweep" and TAGGED.search(exports["neptune"][0])
        for stem, metadata in exports.values():
            runs = pl.read_parquet(out / f"{stem}_runs.parquet")
            assert runs.height == metadata["runs_exported"] == (3 if metadata["source"] == "neptune" else 2)
            assert set(pl.read_parquet(out / f"{stem}_history.parquet")["run_id"]) == set(runs["id"])
    err = capsys.readouterr().err
    assert (
        f"team/sae-sweep: its files are named {exports['neptune'][0]}_… (team_sae-sweep_metadata.json holds"
        " the export of team/sae-sweep from wandb-offline)" in err
    )
    with pytest.raises(BadInput, match=r"matches several exports in .*: give the \*_runs.parquet itself$"):
        find_export(out, "team/sae-sweep")  # ENTITY/PROJECT cannot tell them apart: the file does
    assert find_export(out / f"{exports['neptune'][0]}_runs.parquet", "team/sae-sweep").name.startswith(
        exports["neptune"][0]
    )


def test_an_incremental_export_never_takes_another_trackers_files_or_state(wandb_env, tmp_path, capsys):
    """Offline logs of x_y/z exported first; then the server's x_y/z, incrementally: a full export into
    files of its own, whose state its next update reads (the offline export's files stay as they were)."""
    logs = offline_runs(tmp_path, "x_y", "z")
    out = tmp_path / "out"
    assert export_runs.main(["--offline", str(logs), "--include-history", "-o", str(out)]) == 0
    offline_files = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    capsys.readouterr()
    export(out, "x_y", "z")
    assert "x_y/z: full export (no previous export state)" in capsys.readouterr().err
    add_run(wandb_env, "x_y", "z", "xynew1")
    wandb_env.clear_cache()
    export(out, "x_y", "z")
    err = capsys.readouterr().err
    assert "x_y/z: 1 new or changed run(s) merged into the files" in err, err
    exports = metadata_by_source(out)
    assert sorted(exports) == ["wandb-api", "wandb-offline"]
    stem = exports["wandb-api"][0]
    assert TAGGED.search(stem) and (out / f"{stem}_state.json").is_file()
    assert sorted(pl.read_parquet(out / f"{stem}_runs.parquet")["id"]) == server_ids(wandb_env, "x_y", "z")
    assert {name: (out / name).read_bytes() for name in offline_files} == offline_files
