"""The real `wandb.Api()` client (wandb-core included) against the local W&B stand-in."""

from __future__ import annotations

import base64
import json
import math
import os
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import wandb
from wandb.errors import AuthenticationError, CommError
from wandb.sdk.lib.service.service_connection import WandbApiFailedError

from tests.wandb_standin import (
    DEFAULT_NOW,
    HookResult,
    StandinDataset,
    StandinRun,
    StandinServer,
    default_dataset,
    run_matches,
    synthetic_dataset,
)

SPECTRAL = "graph_denoise_team/spectral_denoising"


def canon(value: Any) -> Any:
    """Comparable form: ints as floats (JSON round trips drop `.0`), NaN as a marker, nested alike."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return "NaN" if isinstance(value, float) and math.isnan(value) else float(value)
    if isinstance(value, dict):
        return {key: canon(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [canon(item) for item in value]
    return value


def spectral_runs(server: StandinServer) -> list[StandinRun]:
    project = server.dataset.project("graph_denoise_team", "spectral_denoising")
    assert project is not None
    return project.runs


def by_created(runs: list[StandinRun]) -> list[str]:
    return [run.id for run in sorted(runs, key=lambda run: run.created_at)]


def post_graphql(
    server: StandinServer, query: str, key: str | None = None, **variables: Any
) -> tuple[int, Any]:
    """A raw GraphQL POST, as wandb-core sends them."""
    request = urllib.request.Request(
        f"{server.url}/graphql",
        data=json.dumps({"query": query, "variables": variables, "operationName": ""}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"api:{key or server.api_key}".encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture
def api(wandb_env: StandinServer) -> wandb.Api:
    return wandb.Api(timeout=20)


@pytest.fixture
def private_server() -> Any:
    """A throwaway server with a small dataset, for tests that break things on purpose."""
    dataset = StandinDataset()
    dataset.add_project("alice", "tiny", [StandinRun("tinyrun1", "tiny-1", DEFAULT_NOW - timedelta(days=1))])
    with StandinServer(dataset) as server:
        yield server


# ------------------------------------------------------------------------------------ identity


def test_api_knows_the_viewer_its_entity_and_teams(api, wandb_env):
    assert api.default_entity == "alice"
    viewer = api.viewer
    assert (viewer.username, viewer.entity) == ("alice", "alice")
    assert viewer.teams == ["graph_denoise_team", "vision-lab"]
    # wandb-core checks the key with `Viewer` when the Api is made; the rest are the Python client's.
    assert wandb_env.requests["Viewer"] == 1
    assert wandb_env.requests["GetDefaultEntity"] == 1 and wandb_env.requests["GetViewer"] == 1


def test_a_wrong_api_key_is_rejected_with_401(wandb_env):
    rejected_before = wandb_env.rejected_auth
    with pytest.raises(AuthenticationError, match="invalid API key"):
        wandb.Api(api_key="0" * 40, timeout=20)
    assert wandb_env.rejected_auth == rejected_before + 1
    status, body = post_graphql(wandb_env, "query Viewer { viewer { id } }", key="0" * 40)
    assert status == 401 and body["errors"]


def test_projects_come_in_pages(api, wandb_env):
    names = [project.name for project in api.projects("graph_denoise_team", per_page=1)]
    assert sorted(names) == ["empty_project", "spectral_denoising"]
    assert wandb_env.requests["GetProjects"] == 2
    assert [p.name for p in api.projects("vision-lab")] == ["segmentation"]


def test_projects_of_an_unknown_entity_fail(api):
    with pytest.raises(WandbApiFailedError, match="entity no-such-entity not found"):
        list(api.projects("no-such-entity"))


# ------------------------------------------------------------------------------------ runs


def test_all_runs_come_back_in_created_order_across_pages(api, wandb_env):
    runs = api.runs(SPECTRAL, per_page=50, lazy=False)
    assert len(runs) == 250
    listed = list(runs)
    expected = sorted(spectral_runs(wandb_env), key=lambda run: run.created_at)
    assert [run.id for run in listed] == [run.id for run in expected]
    assert wandb_env.requests["Runs"] == 5  # 250 runs, 50 a page; len() reuses the first page
    first, source = listed[0], expected[0]
    assert (first.name, first.state, first.tags, first.group) == (
        source.display_name,
        source.state,
        source.tags,
        source.group,
    )
    assert (first.job_type, first.sweep_name, first.user.username, first.notes) == (
        source.job_type,
        source.sweep_name,
        source.user,
        source.notes,
    )
    assert first.created_at == source.created_at.strftime("%Y-%m-%dT%H:%M:%S")
    assert first.url.endswith(f"/graph_denoise_team/spectral_denoising/runs/{source.id}")


def test_an_empty_project_has_no_runs(api, wandb_env):
    runs = api.runs("graph_denoise_team/empty_project")
    assert len(runs) == 0 and list(runs) == []


def test_config_and_summary_round_trip_with_nan_and_infinity(api, wandb_env):
    source = {run.id: run for run in spectral_runs(wandb_env)}
    seen_nan = seen_inf = False
    for run in api.runs(SPECTRAL, per_page=100, lazy=False):
        assert canon(run.config) == canon(source[run.id].config)
        summary = dict(run.summary_metrics)
        assert canon(summary) == canon(source[run.id].summary)
        seen_nan |= math.isnan(summary["best/val"])
        seen_inf |= math.isinf(summary["ratio"])
    assert seen_nan and seen_inf
    one = source[next(iter(source))]
    assert api.run(f"{SPECTRAL}/{one.id}").config["a.b"] == 1  # the dotted key survives as a key


def test_lazy_runs_load_config_on_demand(api, wandb_env):
    run = api.runs("alice/scratch", per_page=5)[0]
    assert "config" not in run._attrs  # the lightweight fragment has no config
    source = {r.id: r for r in wandb_env.dataset.project("alice", "scratch").runs}[run.id]
    assert canon(run.config) == canon(source.config)
    assert wandb_env.requests["Run"] == 1


def test_runs_newest_first(api, wandb_env):
    ids = [run.id for run in api.runs(SPECTRAL, order="-created_at", per_page=100)]
    assert ids == by_created(spectral_runs(wandb_env))[::-1]
    by_heartbeat = [run.id for run in api.runs(SPECTRAL, order="+heartbeat_at", per_page=100)]
    runs = spectral_runs(wandb_env)
    assert by_heartbeat == [r.id for r in sorted(runs, key=lambda r: (r.heartbeat_at, runs.index(r)))]


CUTOFF = DEFAULT_NOW - timedelta(days=7)
FILTERS: list[tuple[str, dict[str, Any], Any]] = [
    ("created since", {"createdAt": {"$gte": CUTOFF.isoformat()}}, lambda r: r.created_at >= CUTOFF),
    (
        "created since, with Z",
        {"createdAt": {"$gt": CUTOFF.isoformat() + "Z"}},
        lambda r: r.created_at > CUTOFF,
    ),
    ("finished", {"state": "finished"}, lambda r: r.state == "finished"),
    ("not finished", {"state": {"$ne": "finished"}}, lambda r: r.state != "finished"),
    (
        "crashed or failed",
        {"$or": [{"state": "crashed"}, {"state": {"$eq": "failed"}}]},
        lambda r: r.state in ("crashed", "failed"),
    ),
    (
        "gcn in a window",
        {
            "$and": [
                {"config.model.value.type": "gcn"},
                {"heartbeatAt": {"$lt": CUTOFF.isoformat()}},
                {"createdAt": {"$lte": (CUTOFF + timedelta(days=1)).isoformat()}},
            ]
        },
        lambda r: (
            r.config["model"]["type"] == "gcn"
            and r.heartbeat_at < CUTOFF
            and r.created_at <= CUTOFF + timedelta(days=1)
        ),
    ),
    ("k in", {"config.model.k": {"$in": [1, 2]}}, lambda r: r.config["model"]["k"] in (1, 2)),
    (
        "lr value",
        {"config.optimizer.value.lr": {"$gte": 1e-3}},
        lambda r: r.config["optimizer"]["lr"] >= 1e-3,
    ),
    (
        "graph not in",
        {"config.data.graph_type": {"$nin": ["er", "sbm"]}},
        lambda r: r.config["data"]["graph_type"] == "grid",
    ),
    ("tag", {"tags": "baseline"}, lambda r: "baseline" in r.tags),
    ("tags in", {"tags": {"$in": ["debug", "λ-test"]}}, lambda r: bool({"debug", "λ-test"} & set(r.tags))),
    ("name regex", {"displayName": {"$regex": "^brisk-"}}, lambda r: r.display_name.startswith("brisk-")),
    ("id", {"name": "placeholder"}, None),
    ("group", {"group": "sweep-group"}, lambda r: r.group == "sweep-group"),
    ("no group", {"group": None}, lambda r: r.group is None),
    ("job type", {"jobType": "eval"}, lambda r: r.job_type == "eval"),
    ("sweep", {"sweep": "sw33p0ne"}, lambda r: r.sweep_name == "sw33p0ne"),
    (
        "summary metric",
        {"summary_metrics.test/accuracy": {"$gt": 0.9}},
        lambda r: r.summary["test/accuracy"] > 0.9,
    ),
    ("mixed type key", {"config.mixed": {"$regex": "^v"}}, lambda r: isinstance(r.config["mixed"], str)),
    (
        "numbers only compare to numbers",
        {"config.mixed": {"$lt": 10}},
        lambda r: r.config["mixed"] in range(10),
    ),
]


@pytest.mark.parametrize(("label", "filters", "expected"), FILTERS, ids=[f[0] for f in FILTERS])
def test_filters_select_the_same_runs_as_python(api, wandb_env, label, filters, expected):
    runs = spectral_runs(wandb_env)
    if expected is None:  # filter on one run's id
        target = runs[17].id
        filters, expected = {"name": target}, (lambda r: r.id == target)
    matching = [run for run in runs if expected(run)]
    assert matching, "a filter that matches nothing proves little"
    result = api.runs(SPECTRAL, filters=filters, per_page=40)
    assert len(result) == len(matching)
    assert [run.id for run in result] == by_created(matching)


def test_a_missing_project_raises_value_error(api):
    with pytest.raises(ValueError, match="Could not find project nope"):
        list(api.runs("graph_denoise_team/nope"))
    with pytest.raises(ValueError, match="Could not find project nope-again"):
        len(api.runs("graph_denoise_team/nope-again"))
    with pytest.raises(ValueError, match="Project nope not found"):
        _ = api.project("nope", "graph_denoise_team").id


def test_a_missing_run_raises_comm_error(api):
    with pytest.raises(CommError, match="Could not find run"):
        api.run(f"{SPECTRAL}/zzzzzzzz")


# ------------------------------------------------------------------------------------ history


def exported_run(server: StandinServer) -> StandinRun:
    """150 steps in two parquet files, NaN at step 75."""
    run = spectral_runs(server)[0]
    assert run.state == "finished" and run.export_files == 2 and run.live_from_step is None
    return run


def live_run(server: StandinServer) -> StandinRun:
    """80 steps, 0-63 exported, 64-79 live."""
    run = spectral_runs(server)[10]
    assert run.state == "running" and run.live_from_step == 64
    return run


def from_parquet(row: dict[str, Any]) -> dict[str, Any]:
    """A row read from the exported parquet: absent keys are None, media are JSON strings."""
    return {
        key: json.loads(value) if isinstance(value, str) and value.startswith("{") else value
        for key, value in row.items()
        if value is not None
    }


def test_scan_history_with_keys_returns_every_exported_step(api, wandb_env):
    source = exported_run(wandb_env)
    rows = list(api.run(f"{SPECTRAL}/{source.id}").scan_history(keys=["train/loss", "test/accuracy"]))
    expected = [
        {"_step": row["_step"], "train/loss": row["train/loss"], "test/accuracy": row.get("test/accuracy")}
        for row in source.history
    ]
    # From parquet files wandb-core returns every step; keys not logged at a step come back as None.
    assert canon(rows) == canon(expected)
    assert math.isnan(rows[75]["train/loss"])


def test_scan_history_returns_the_dataset_rows(api, wandb_env):
    source = exported_run(wandb_env)
    rows = list(api.run(f"{SPECTRAL}/{source.id}").scan_history())
    assert canon([from_parquet(row) for row in rows]) == canon(source.history)
    assert isinstance(rows[9]["predictions"], str)  # media dicts are JSON strings in the parquet export
    assert rows[0]["test/accuracy"] is None
    cached = list(Path(os.environ["WANDB_CACHE_DIR"]).glob("*.runhistory.parquet"))
    assert len(cached) == 2  # wandb-core caches whole files under WANDB_CACHE_DIR when no keys are given


def test_download_history_exports_gives_parquet_that_polars_reads(api, wandb_env, tmp_path):
    source = exported_run(wandb_env)
    result = api.run(f"{SPECTRAL}/{source.id}").download_history_exports(
        tmp_path, require_complete_history=False
    )
    assert not result.errors and not result.contains_live_data
    names = sorted(path.name for path in result.paths)  # the order is not guaranteed
    assert names == [
        f"graph_denoise_team_spectral_denoising_{source.id}_{i}.runhistory.parquet" for i in (0, 1)
    ]
    frame = pl.concat([pl.read_parquet(tmp_path / name) for name in names])
    assert frame.height == len(source.history)
    assert frame.schema["_step"] == pl.Int64
    assert frame.schema["_timestamp"] == frame.schema["_runtime"] == frame.schema["train/loss"] == pl.Float64
    assert frame.schema["predictions"] == pl.String
    assert frame["_step"].to_list() == list(range(len(source.history)))
    assert canon(frame["test/accuracy"].to_list()) == canon([r.get("test/accuracy") for r in source.history])


def test_a_running_run_serves_its_unexported_steps_live(api, wandb_env, tmp_path):
    source = live_run(wandb_env)
    run = api.run(f"{SPECTRAL}/{source.id}")
    result = run.download_history_exports(tmp_path, require_complete_history=False)
    assert result.contains_live_data
    exported = pl.concat([pl.read_parquet(path) for path in result.paths])
    assert exported["_step"].to_list() == list(range(64))

    rows = list(run.scan_history())
    assert [row["_step"] for row in rows] == list(range(80))
    assert canon(rows[64:]) == canon(source.history[64:])  # live rows: as logged, media as dicts
    assert canon([from_parquet(row) for row in rows[:64]]) == canon(source.history[:64])
    assert wandb_env.requests["HistoryPage"] >= 1

    keyed = list(run.scan_history(keys=["test/accuracy"]))
    live_part = [row for row in keyed if row["_step"] >= 64]
    # Live rows with keys come from SampledHistoryPage: only steps that logged every key.
    assert live_part == [
        {"_step": row["_step"], "test/accuracy": row["test/accuracy"]}
        for row in source.history[64:]
        if "test/accuracy" in row
    ]
    assert wandb_env.requests["SampledHistoryPage"] >= 1

    from wandb.apis.public import IncompleteRunHistoryError

    with pytest.raises(IncompleteRunHistoryError):
        run.download_history_exports(tmp_path / "strict")


def test_sampled_and_full_history(api, wandb_env):
    source = exported_run(wandb_env)
    run = api.run(f"{SPECTRAL}/{source.id}")
    assert run.lastHistoryStep == 149
    full = run.history(pandas=False, samples=1000)
    assert canon(full) == canon(source.history)
    sampled = run.history(keys=["test/accuracy"], pandas=False)
    assert sampled == [
        {"_step": row["_step"], "test/accuracy": row["test/accuracy"]}
        for row in source.history
        if "test/accuracy" in row
    ]
    assert len(run.history(pandas=False, samples=10)) == 10


def test_a_run_without_history_scans_nothing(api, wandb_env):
    source = next(run for run in spectral_runs(wandb_env) if run.history is None)
    assert list(api.run(f"{SPECTRAL}/{source.id}").scan_history()) == []


# ------------------------------------------------------------------------------------ the server itself


def test_unknown_operations_fields_and_filters_are_recorded_and_fail_the_guard(private_server):
    status, body = post_graphql(private_server, "query SomethingNew { viewer { id } }")
    assert status == 200 and "unknown operation 'SomethingNew'" in body["errors"][0]["message"]
    assert private_server.unknown_operations[0].startswith("GraphQL operation SomethingNew")

    status, body = post_graphql(private_server, "query Viewer { viewer { id shoeSize } }")
    assert body["errors"] and private_server.unknown_fields == ["Viewer: viewer.shoeSize"]

    query = 'query Runs($filters: JSONString) { project(name: "tiny", entityName: "alice") { runCount(filters: $filters) } }'
    status, body = post_graphql(private_server, query, filters=json.dumps({"config.x": {"$where": "1"}}))
    assert body["errors"] and "'$where'" in private_server.unknown_operations[-1]

    with pytest.raises(AssertionError, match="SomethingNew"):
        private_server.assert_clean()


def test_telemetry_is_accepted_and_other_routes_are_not(private_server):
    request = urllib.request.Request(f"{private_server.url}/sdk/otel/v1/metrics", data=b"\x00", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert private_server.telemetry_posts == 1 and not private_server.problems()
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{private_server.url}/elsewhere", timeout=10)
    assert private_server.unknown_operations == ["GET /elsewhere"]


def test_latency_and_the_request_hook(private_server):
    private_server.latency_s = 0.2
    started = time.monotonic()
    status, body = post_graphql(private_server, "query GetDefaultEntity { viewer { id entity } }")
    assert status == 200 and body == {
        "data": {"viewer": {"id": body["data"]["viewer"]["id"], "entity": "alice"}}
    }
    assert time.monotonic() - started >= 0.2
    private_server.latency_s = 0.0
    private_server.request_hook = lambda info: (
        HookResult(status=503) if info.operation == "GetDefaultEntity" else None
    )
    assert post_graphql(private_server, "query GetDefaultEntity { viewer { id entity } }")[0] == 503
    assert private_server.requests["GetDefaultEntity"] == 2
    private_server.reset_counts()
    assert not private_server.requests and not private_server.operations


def test_several_servers_and_keys_work_in_one_process(api, wandb_env):
    """wandb-core is one process, but each Api carries its own base URL and key."""
    other = synthetic_dataset(3, 40, 4, entity="bench", project="synthetic")
    with StandinServer(other, api_key="b" * 40) as server:
        other_api = wandb.Api(api_key="b" * 40, overrides={"base_url": server.url}, timeout=20)
        runs = list(other_api.runs("bench/synthetic", per_page=2))
        assert [run.id for run in runs] == [
            run.id for run in other.entities["bench"].projects["synthetic"].runs
        ]
        rows = list(runs[1].scan_history(keys=["metric_002"]))
        assert [row["_step"] for row in rows] == list(range(40))
        assert math.isclose(rows[5]["metric_002"], math.sin(((5 * 3) + 1 * 7919) * 0.001))
        assert len(api.runs("alice/scratch")) == 12  # the first Api still talks to its own server
        server.assert_clean()


def test_a_run_with_nothing_exported_yet_is_read_live(wandb_env):
    rows = [{"_step": step, "loss": 1.0 / (step + 1), "note": f"s{step}"} for step in range(30)]
    run = StandinRun("allive01", "all-live", DEFAULT_NOW, state="running", history=rows, live_from_step=0)
    dataset = StandinDataset()
    dataset.add_project("alice", "live", [run])
    with StandinServer(dataset) as server:
        api = wandb.Api(api_key=server.api_key, overrides={"base_url": server.url}, timeout=20)
        client_run = api.run("alice/live/allive01")
        assert list(client_run.scan_history(page_size=7)) == rows
        assert [row["loss"] for row in client_run.scan_history(keys=["loss"])] == [r["loss"] for r in rows]
        # No parquet files; 30 live steps read 7 a page.
        assert server.requests["GET /files"] == 0 and server.requests["HistoryPage"] == 5
        server.assert_clean()


def test_default_dataset_is_deterministic_and_has_the_odd_cases():
    first, second = default_dataset(), default_dataset()
    ids = [
        run.id for project in first.entities["graph_denoise_team"].projects.values() for run in project.runs
    ]
    assert ids == [
        run.id for project in second.entities["graph_denoise_team"].projects.values() for run in project.runs
    ]
    assert [r.id for r in default_dataset(seed=1).entities["alice"].projects["scratch"].runs] != [
        r.id for r in first.entities["alice"].projects["scratch"].runs
    ]
    runs = first.entities["graph_denoise_team"].projects["spectral_denoising"].runs
    assert len(runs) == 250 and len(first.entities["alice"].projects["scratch"].runs) == 12
    assert {type(run.config["mixed"]) for run in runs} == {int, str}
    assert all(DEFAULT_NOW - timedelta(days=31) < run.created_at <= DEFAULT_NOW for run in runs)
    with_history = [run for run in runs if run.history]
    assert all(20 <= len(run.history) <= 200 for run in with_history)


def test_filter_semantics_for_missing_and_odd_values():
    run = StandinRun("abcd1234", "x", DEFAULT_NOW, tags=["a"], config={"a.b": 1, "a": {"b": 2}})
    assert run_matches(run, {"config.a.b": 1})  # the literal dotted key wins
    assert run_matches(run, {"config.a.value.b": 2})
    assert run_matches(run, {"config.missing": None})
    assert run_matches(run, {"config.missing": {"$exists": False}})
    assert run_matches(run, {"config.missing": {"$ne": 3}})
    assert not run_matches(run, {"config.missing": {"$gt": 0}})
    assert run_matches(run, {"tags": {"$nin": ["b"]}}) and not run_matches(run, {"tags": {"$ne": "a"}})
    assert run_matches(
        run, {"createdAt": {"$gte": (DEFAULT_NOW - timedelta(hours=1)).isoformat() + "+00:00"}}
    )
