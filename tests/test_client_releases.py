"""Offline runs written by real old client releases (tests/fixtures/releases/, remade by
make_release_fixtures.py) export value by value as they were logged: W&B 0.17 to 0.31, Neptune 1.7 and 1.14."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest

from tests.current_data import load_script

RELEASES = Path(__file__).resolve().parent / "fixtures" / "releases"
WANDB_RELEASES = sorted(path.name for path in RELEASES.glob("wandb-*"))
NEPTUNE_RELEASES = sorted(path.name for path in RELEASES.glob("neptune-*"))
wandb_export = load_script("export_runs")
neptune_export = load_script("export_runs", "neptune-tools")


def logged(release: str) -> dict:
    return json.loads((RELEASES / release / "logged.json").read_text())["runs"]


def as_logged(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def exported(folder: Path, suffix: str) -> pl.DataFrame:
    [path] = folder.glob(f"*{suffix}")
    return pl.read_parquet(path)


def same_number(got: object, want: object) -> bool:
    if isinstance(want, float) and isinstance(got, int | float):
        return math.isclose(got, want, rel_tol=1e-12)
    return got == want


@pytest.mark.parametrize("release", WANDB_RELEASES)
def test_wandb_offline_runs_of_every_release_export_as_logged(release, tmp_path):
    assert (
        wandb_export.main(
            ["--offline", str(RELEASES / release / "wandb"), "-o", str(tmp_path), "--include-history"]
        )
        == 0
    )
    runs, history = exported(tmp_path, "_runs.parquet"), exported(tmp_path, "_history.parquet")
    want = logged(release)
    assert sorted(runs["id"]) == sorted(want), "one row per run, a resumed run included"
    metadata = json.loads(next(tmp_path.glob("*_metadata.json")).read_text())
    # What the fixture counts as not a number (a histogram) is in history_other now; none is skipped.
    assert metadata["skipped_history_values"] == 0
    other = exported(tmp_path, "_history_other.parquet")
    assert other.height == sum(run["skipped_values"] for run in want.values())
    assert set(other.select("step", "key", "type").rows()) <= {(1, "weights", "histogram")}
    assert (metadata["runs_reported"], metadata["runs_exported"]) == (len(want), len(want))
    for row in runs.iter_rows(named=True):
        run = want[row["id"]]
        assert (row["name"], row["state"]) == (run["name"], run["state"]), release
        assert json.loads(row["_config_json"]) == run["config"], f"{release} {run['name']}"
        summary = json.loads(row["_summary_json"])
        for key, value in run["summary"].items():
            assert same_number(summary.get(key), value), (
                f"{release} {run['name']} summary {key}: {summary.get(key)}"
            )
        points = history.filter(pl.col("run_id") == row["id"]).sort("step", "key")
        got = [
            [step, key, as_logged(value)]
            for step, key, value in points.select("step", "key", "value").iter_rows()
        ]
        assert len(got) == len(run["history"]), f"{release} {run['name']}"
        for point, expected in zip(got, run["history"], strict=True):
            assert point[:2] == expected[:2] and same_number(point[2], expected[2]), (
                f"{release}: {point} != {expected}"
            )


@pytest.mark.parametrize("release", WANDB_RELEASES)
def test_a_run_resumed_offline_keeps_its_first_sessions_creation_time(release, tmp_path):
    from shared.wandb.offline import read_run_log

    sessions = [
        read_run_log(log, include_history=False) for log in (RELEASES / release).rglob("run-resume01.wandb")
    ]
    assert len(sessions) == 2
    assert wandb_export.main(["--offline", str(RELEASES / release / "wandb"), "-o", str(tmp_path)]) == 0
    [resumed] = exported(tmp_path, "_runs.parquet").filter(pl.col("id") == "resume01").iter_rows(named=True)
    assert resumed["created_at"] == min(session.record.created_at for session in sessions)
    assert resumed["heartbeat_at"] == max(session.record.heartbeat_at for session in sessions)


@pytest.mark.parametrize("release", WANDB_RELEASES)
def test_query_topk_offline_sees_a_resumed_run_once_with_its_last_value(release, capsys):
    query = load_script("query_topk")
    folder = str(RELEASES / release / "wandb")
    assert query.main(["compat/releases", "--offline", folder, "--metric", "train/loss", "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert [run["run_id"] for run in ranked].count("resume01") == 1
    [resumed] = [run for run in ranked if run["run_id"] == "resume01"]
    assert math.isclose(resumed["metrics"]["train/loss"], 1 / 6)
    assert (
        query.main(
            [
                "compat/releases",
                "--offline",
                folder,
                "--metric",
                "train/loss",
                "--aggregation",
                "max",
                "--json",
            ]
        )
        == 0
    )
    [resumed] = [run for run in json.loads(capsys.readouterr().out) if run["run_id"] == "resume01"]
    assert resumed["metrics"]["train/loss"] == 1.0, "history of both sessions"


@pytest.mark.parametrize("release", NEPTUNE_RELEASES)
def test_neptune_offline_runs_of_every_release_export_as_logged(release, tmp_path):
    source = RELEASES / release / ".neptune"
    assert neptune_export.main(["--source", str(source), "-o", str(tmp_path), "--include-history"]) == 0
    runs, history = exported(tmp_path, "_runs.parquet"), exported(tmp_path, "_history.parquet")
    want = logged(release)
    version = tuple(int(part) for part in release.removeprefix("neptune-").split(".")[:2])
    drops_non_finite = version >= (1, 8)  # from 1.8 on the client drops NaN/inf with a warning
    assert sorted(runs["name"]) == sorted(want)
    for row in runs.iter_rows(named=True):
        run = want[row["name"]]
        assert row["state"] == ("failed" if run["failed"] else "finished")
        assert json.loads(row["_config_json"]) == run["parameters"]
        assert row["created_at"] is not None and row["heartbeat_at"] >= row["created_at"], release
        assert row["runtime_s"] is not None and row["runtime_s"] >= 0
        points = history.filter(pl.col("run_id") == row["id"])
        assert set(points["key"]) == set(run["series"]), (
            "float series only (the string series is not history)"
        )
        for key, logged_points in run["series"].items():
            expected = [
                point for point in logged_points if not (drops_non_finite and isinstance(point[1], str))
            ]
            got = points.filter(pl.col("key") == key).sort("step").select("step", "value").rows()
            assert [[step, as_logged(value)] for step, value in got] == expected, f"{release} {key}"
        assert points["timestamp"].null_count() == 0
