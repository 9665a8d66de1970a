"""WandbQuery and wandb-tools/query_topk.py on the same runs from three sources: real offline runs, an
export of them made by export_runs.py, and the W&B API (the stand-in serving them); --pareto and --plot
on both top-k verbs."""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from shared.base.errors import BadInput
from shared.cli.main import run_main
from shared.query.wandb import WandbQuery
from shared.table.schema import RAW_JSON_COLUMNS
from tests.current_data import load_script
from tests.offline_client import offline_wandb
from tests.wandb_standin import HookResult, StandinDataset, StandinRun, StandinServer, StandinViewer

ROOT = Path(__file__).resolve().parent.parent
NAN, INF = math.nan, math.inf
ENTITY, PROJECT = "team", "sae-sweep"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Spec:
    """One run as logged: config, history series as (step, value), and values set only in the summary."""

    run_id: str
    name: str
    config: dict[str, Any]
    series: dict[str, list[tuple[int, float]]]
    summary: dict[str, Any] = field(default_factory=dict)


def every(*values: float, start: int = 0, step: int = 10) -> list[tuple[int, float]]:
    return [(start + i * step, v) for i, v in enumerate(values)]


# Run ids do not follow the names: ties must break by id (epsilon "b5…" before alpha "z1…").
SPECS = [
    Spec(
        "z1alpha", "alpha", {"lr": 0.01, "model": {"width": 1024, "optimizer": "adam"}},
        {"train/loss": every(1.0, 0.6, 0.41, 0.40), "metrics/L0": every(80.0, 60.0, 45.0, 42.0),
         "eval/accuracy": every(0.5, 0.7, 0.81, start=5)},
        {"metrics/L1": 0.2, "status": "ok"},
    ),
    Spec(
        "k2beta", "beta", {"lr": 0.03, "model": {"width": 2048, "optimizer": "adam"}},
        {"train/loss": every(0.9, 0.3, 0.2, 0.10), "metrics/L0": every(90.0, 85.0, 80.0, 75.0),
         "eval/accuracy": every(0.6, 0.9, 0.88, start=5)},
        {"metrics/L1": 0.5, "status": "ok"},
    ),
    Spec(  # never set L1
        "g3gamma", "gamma", {"lr": 0.02, "model": {"width": 1024, "optimizer": "sgd"}},
        {"train/loss": every(0.8, 0.35, 0.25), "metrics/L0": every(40.0, 35.0, 31.0),
         "eval/accuracy": every(0.6, 0.75, start=5)},
        {"status": "early-stopped"},
    ),
    Spec(  # NaN inside its loss and +inf last: the summary says inf, the last finite value is 0.32
        "d4delta", "delta", {"lr": 0.005, "model": {"width": 4096, "optimizer": "adam"}},
        {"train/loss": every(0.7, NAN, 0.32, INF), "metrics/L0": every(55.0, 50.0, 48.0),
         "eval/accuracy": every(0.5, 0.85, start=5)},
        {"metrics/L1": 0.15},
    ),
    Spec(  # ties with alpha on the last loss
        "b5epsilon", "epsilon", {"lr": 0.01, "model": {"width": 512, "optimizer": "adam"}},
        {"train/loss": every(1.2, 0.7, 0.40), "metrics/L0": every(35.0, 33.0),
         "eval/accuracy": every(0.4, 0.82, 0.79, start=5)},
        {"metrics/L1": 0.05},
    ),
    Spec(  # diverged: no finite loss at all
        "x6zeta", "zeta", {"lr": 0.3, "model": {"width": 1024, "optimizer": "sgd"}},
        {"train/loss": every(NAN, INF, NAN), "metrics/L0": every(20.0), "eval/accuracy": every(0.1, start=5)},
        {"metrics/L1": 0.3},
    ),
    Spec(
        "e7eta", "eta", {"lr": 0.001, "model": {"width": 2048, "optimizer": "adamw"}},
        {"train/loss": every(0.95, 0.5, 0.45, 0.44, 0.43, start=5),
         "metrics/L0": every(70.0, 58.0, 52.0, 49.0, 47.0, start=5),
         "eval/accuracy": every(0.7, 0.8, 0.83, 0.84, 0.86, start=5)},
        {"metrics/L1": 0.25},
    ),
]  # fmt: skip
BY_ID = {spec.run_id: spec for spec in SPECS}
LIVE_RUN, LIVE_FROM = "z1alpha", 15  # through the API, alpha's steps >= 15 are not exported yet


# ------------------------------------------------------------------ independent reference


def reference_metric(spec: Spec, key: str, aggregation: str, n: int) -> float | None:
    """W&B semantics by hand: a summary-only number is one point; NaN/inf points do not count."""
    if key in spec.series:
        values = [v for _, v in sorted(spec.series[key]) if math.isfinite(v)]
    else:
        value = spec.summary.get(key)
        values = [value] if isinstance(value, float) and math.isfinite(value) else []
    if not values:
        return None
    if aggregation in ("min", "max"):
        return min(values) if aggregation == "min" else max(values)
    window = {"last": values[-1:], "mean_last_n": values[-n:], "mean_all": values}[aggregation]
    return sum(window) / len(window)


def candidates(keys, constraints, aggregation, n) -> dict[str, dict[str, float]]:
    """run id → its values of `keys`, for the runs with every value that pass every constraint."""
    found = {}
    for spec in SPECS:
        values = {key: reference_metric(spec, key, aggregation, n) for key in [*keys, *constraints]}
        if all(v is not None for v in values.values()) and all(
            test(values[key]) for key, test in constraints.items()
        ):
            found[spec.run_id] = values
    return found


def reference(target, *, k=5, minimize=True, constraints=None, aggregation="last", n=10):
    """Top-k as (run id, value) by plain Python; ties by run id."""
    found = candidates([target], constraints or {}, aggregation, n)
    ranked = sorted(found.items(), key=lambda item: (item[1][target] * (1 if minimize else -1), item[0]))
    return [(run_id, values[target]) for run_id, values in ranked[:k]]


def reference_front(x, y, *, minimize_x=True, minimize_y=True, constraints=None, aggregation="last", n=10):
    """The non-dominated runs by brute force, by x ascending: (run id, x, y)."""
    found = candidates([x, y], constraints or {}, aggregation, n)
    sx, sy = (1 if minimize_x else -1), (1 if minimize_y else -1)

    def dominates(a, b) -> bool:
        better_or_equal = sx * a[x] <= sx * b[x] and sy * a[y] <= sy * b[y]
        return better_or_equal and (sx * a[x] < sx * b[x] or sy * a[y] < sy * b[y])

    front = [r for r, v in found.items() if not any(dominates(w, v) for o, w in found.items() if o != r)]
    return sorted(((r, found[r][x], found[r][y]) for r in front), key=lambda item: item[1])


def answer(results, target) -> list[tuple[str, float]]:
    return [(r.run_id, pytest.approx(r.metrics[target])) for r in results]


# ------------------------------------------------------------------ the three sources


def log_spec(wandb: Any, folder: Path, spec: Spec) -> None:
    settings = wandb.Settings(x_disable_stats=True, x_disable_meta=True, console="off", disable_git=True)
    run = wandb.init(
        mode="offline", dir=folder, entity=ENTITY, project=PROJECT, id=spec.run_id, name=spec.name,
        config=spec.config, settings=settings,
    )  # fmt: skip
    rows: dict[int, dict[str, float]] = {}
    for key, points in spec.series.items():
        for step, value in points:
            rows.setdefault(step, {})[key] = value
    for step in sorted(rows):
        run.log(rows[step], step=step)
    for key, value in spec.summary.items():
        run.summary[key] = value
    run.finish()


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> Path:
    """The wandb/ folder holding one real offline run per spec."""
    work = tmp_path_factory.mktemp("wandb-offline")
    with pytest.MonkeyPatch.context() as patch, offline_wandb(patch, work) as wandb:
        for spec in SPECS:
            log_spec(wandb, work, spec)
    return work / "wandb"


@pytest.fixture(scope="module")
def export(offline, tmp_path_factory) -> Path:
    """The offline runs exported with history by export_runs.py; and a copy without history."""
    folder = tmp_path_factory.mktemp("wandb-export")
    exporter = load_script("export_runs", "wandb-tools")
    assert (
        exporter.main(["--offline", str(offline), "-o", str(folder / "full"), "--include-history", "--json"])
        == 0
    )
    assert exporter.main(["--offline", str(offline), "-o", str(folder / "runs-only"), "--json"]) == 0
    return folder


def history_rows(history: pl.DataFrame) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for step, key, value in history.select("step", "key", "value").iter_rows():
        rows.setdefault(step, {"_step": step})[key] = value
    return [rows[step] for step in sorted(rows)]


@pytest.fixture(scope="module")
def server(offline) -> Iterator[StandinServer]:
    """A W&B stand-in serving the offline runs (config, summary, history) as team/sae-sweep."""
    from shared.wandb.offline import locate_run_logs, read_run_log

    runs = []
    for log in locate_run_logs(offline)[0]:
        found = read_run_log(log)
        record = found.record
        runs.append(
            StandinRun(
                id=record.id, display_name=record.name, created_at=record.created_at.astimezone(UTC).replace(tzinfo=None),
                state=record.state, config=record.config, summary=record.summary,
                history=history_rows(found.history),
                live_from_step=LIVE_FROM if record.id == LIVE_RUN else None,
            )
        )  # fmt: skip
    dataset = StandinDataset(viewer=StandinViewer(username="alice", entity="alice", teams=[ENTITY]))
    dataset.add_project(ENTITY, PROJECT, sorted(runs, key=lambda run: run.created_at), is_team=True)
    with StandinServer(dataset) as running:
        yield running
        running.assert_clean()


@pytest.fixture
def api(server, wandb_env, monkeypatch) -> Iterator[StandinServer]:
    """The real client pointed at `server` (in the isolated environment of `wandb_env`)."""
    monkeypatch.setenv("WANDB_BASE_URL", server.url)
    monkeypatch.setenv("WANDB_API_KEY", server.api_key)
    server.reset_counts()
    yield server


SOURCES = ["api", "offline", "export"]


def open_query(kind: str, request, **options: Any) -> WandbQuery:
    if kind == "api":
        request.getfixturevalue("api")
        return WandbQuery(f"{ENTITY}/{PROJECT}", workers=3, **options)
    if kind == "offline":
        return WandbQuery(source=request.getfixturevalue("offline"), **options)
    return WandbQuery(source=request.getfixturevalue("export") / "full", **options)


@pytest.fixture(params=SOURCES)
def query(request) -> Iterator[WandbQuery]:
    found = open_query(request.param, request)
    yield found
    found.cleanup()


# ------------------------------------------------------------------ answers


QUERIES = [
    {"metric_key": "train/loss"},
    {"metric_key": "train/loss", "constraints": {"metrics/L0": lambda x: x < 50}},
    {"metric_key": "train/loss", "constraints": {"metrics/L1": lambda x: x > 0.1}, "aggregation": "mean_last_n", "n_steps": 2},
    {"metric_key": "eval/accuracy", "minimize": False, "aggregation": "max", "k": 3},
    {"metric_key": "train/loss", "aggregation": "min", "constraints": {"eval/accuracy": lambda x: x > 0.8}},
    {"metric_key": "metrics/L0", "aggregation": "mean_all", "k": 10},
]  # fmt: skip


@pytest.mark.parametrize("asked", QUERIES, ids=lambda q: f"{q['metric_key']}-{q.get('aggregation', 'last')}")
def test_answers_match_the_reference_from_every_source(query, asked):
    results = query.query_topk(**asked)
    expected = reference(
        asked["metric_key"], k=asked.get("k", 5), minimize=asked.get("minimize", True),
        constraints=asked.get("constraints"), aggregation=asked.get("aggregation", "last"), n=asked.get("n_steps", 10),
    )  # fmt: skip
    assert answer(results, asked["metric_key"]) == expected
    assert {r.name for r in results} == {BY_ID[run_id].name for run_id, _ in expected}


def test_the_three_sources_give_the_same_runs(request):
    asked = {"metric_key": "train/loss", "k": 10, "where": '"metrics/L0" BETWEEN 30 AND 60'}
    seen = []
    for kind in SOURCES:
        with open_query(kind, request) as nq:
            found = nq.query_topk(**asked)
            seen.append(([(r.run_id, r.name, r.metrics, r.config) for r in found], nq.last_excluded))
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][0][0][1:] == ("gamma", {"train/loss": 0.25, "metrics/L0": 31.0}, BY_ID["g3gamma"].config)


def test_runs_that_fail_the_constraints_are_counted(query, capsys):
    assert query.query_topk("train/loss", where='"metrics/L0" > 1e9') == []
    failed = query.last_stats["failed_constraints"]
    assert failed == query.last_stats["considered"] - query.last_stats["excluded"] > 0
    assert f"{failed} run(s) did not meet the constraints" in "\n".join(query.events.notes)
    assert capsys.readouterr().err == ""  # the Python API reports as data, it prints nothing


def test_nan_inf_ties_and_exclusions(query, capsys):
    results = query.query_topk("train/loss", k=10, constraints={"metrics/L1": lambda x: x > 0})
    ranked = [(r.run_id, r.metrics["train/loss"]) for r in results]
    # delta's summary is inf: its last finite loss counts; epsilon and alpha tie at 0.40, epsilon's id first
    assert ranked == [
        ("k2beta", 0.1),
        ("d4delta", 0.32),
        ("b5epsilon", 0.4),
        ("z1alpha", 0.4),
        ("e7eta", 0.43),
    ]
    assert query.last_excluded == {"missing metrics/L1": 1, "no finite value for train/loss": 1}
    assert query.last_stats == {"considered": 7, "excluded": 2, "failed_constraints": 0, "returned": 5}
    assert "2 of 7 runs left out" in "\n".join(query.events.notes)
    assert capsys.readouterr().err == ""


def test_details_states_and_run_objects(query):
    best = query.query_topk("train/loss", k=1, state="finished")[0]
    details = query.get_run_details(best, ["eval/accuracy", "metrics/L1"], aggregation="mean_all")
    assert details["metrics"]["eval/accuracy"] == pytest.approx((0.6 + 0.9 + 0.88) / 3)
    assert details["metrics"]["metrics/L1"] == pytest.approx(0.5)  # a summary-only value: one point
    assert best.config["model"]["optimizer"] == "adam" and best.raw_run is not None
    assert query.query_topk("train/loss", state="crashed") == []
    assert {r.name for r in query.fetch_runs()} == {spec.name for spec in SPECS}
    with pytest.raises(BadInput, match="unknown run state 'finshed'"):
        query.query_topk("train/loss", state="finshed")
    assert query.query_topk("train/loss", state="active") == query.query_topk("train/loss", state="running")


def test_bad_metrics_are_usage_errors(query):
    with pytest.raises(BadInput, match=r"unknown metric 'train/los' \(did you mean 'train/loss'"):
        query.query_topk("train/los")
    with pytest.raises(BadInput, match="'status' holds text"):
        query.query_pareto("train/loss", "status")
    with pytest.raises(BadInput, match="quote metric paths"):
        query.query_topk("train/loss", where="metrics/L0 < 50")


# ------------------------------------------------------------------ the API: what is fetched


def graphql_bodies(server: StandinServer, monkeypatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    original = server.execute
    monkeypatch.setattr(server, "execute", lambda body: seen.append(body) or original(body))
    return seen


def test_api_reads_history_only_for_what_the_query_needs(api, monkeypatch):
    bodies = graphql_bodies(api, monkeypatch)
    nq = WandbQuery(f"{ENTITY}/{PROJECT}", workers=3)
    results = nq.query_topk("train/loss", constraints={"metrics/L0": lambda x: x < 50})
    assert answer(results, "train/loss") == reference(
        "train/loss", constraints={"metrics/L0": lambda x: x < 50}
    )
    # last: runs listed once (one page), summaries answer; only the runs whose summary loss is not finite
    # (delta's inf, zeta's NaN) have their history read: one batched lookup, one file each.
    assert api.requests["Runs"] == 1
    assert api.requests["RunParquetHistory"] == 1 and api.requests["GET /files"] == 2
    assert api.requests["RunHistoryKeys"] == api.requests["HistoryPage"] == 0

    api.reset_counts()
    constraints = {"metrics/L1": lambda x: x > 0.1}
    results = nq.query_topk("train/loss", constraints=constraints, aggregation="mean_last_n", n_steps=2)
    expected = reference("train/loss", constraints=constraints, aggregation="mean_last_n", n=2)
    assert answer(results, "train/loss") == expected
    # Every run but gamma (no L1 in its summary: it cannot rank) has its history read once for both keys
    # (delta and zeta too: only their loss was read before): one batched lookup, one file each. No runs are
    # listed again. Alpha's rows newer than its export come from the client's scan of its live steps, which
    # looks the run up once more (a lookup, its keys, one page of rows, its file).
    assert api.requests["Runs"] == 0
    assert api.requests["RunParquetHistory"] == 1 + 1 and api.requests["GET /files"] == 6 + 1
    assert api.requests["RunHistoryKeys"] == api.requests["HistoryPage"] == 1
    pages = [b["variables"] for b in bodies if b.get("operationName") == "HistoryPage"]
    [alpha] = [run for run in api.dataset.project(ENTITY, PROJECT).runs if run.id == LIVE_RUN]
    exported = max(row["_step"] for row in alpha.history_table().rows if row["_step"] < LIVE_FROM)
    assert [page["minStep"] for page in pages] == [exported + 1]  # only the rows not exported yet

    api.reset_counts()
    nq.query_topk("train/loss", constraints=constraints, aggregation="min")  # the same series: cached
    details = nq.get_run_details(results[0], ["metrics/L0"], aggregation="max")
    assert details["metrics"]["metrics/L0"] == pytest.approx(90.0)
    # min reuses the cached series; L0 of the winner is a new key: its history is read once more.
    assert api.requests["RunParquetHistory"] == 1 and api.requests["GET /files"] == 1
    assert api.requests["Runs"] == 0
    nq.cleanup()


def test_api_runs_without_history_are_never_asked(wandb_env):
    """vision-lab/segmentation (the shared stand-in) has runs with summaries but no history at all."""
    project = wandb_env.dataset.entities["vision-lab"].projects["segmentation"]
    with WandbQuery("vision-lab/segmentation") as nq:
        results = nq.query_topk("test/mse", k=10, aggregation="mean_all")
    expected = sorted((run.summary["test/mse"], run.id) for run in project.runs)
    assert [(r.metrics["test/mse"], r.run_id) for r in results] == expected  # one-point series
    assert wandb_env.requests["RunHistoryKeys"] == wandb_env.requests["RunParquetHistory"] == 0


def test_api_live_rows_of_keys_logged_at_other_steps_are_all_read(api):
    """alpha's loss (steps 0, 10, …) and accuracy (5, 15, …) are partly live: rows with either key count."""
    with WandbQuery(f"{ENTITY}/{PROJECT}", last_from="history") as nq:
        curves = nq.curves(["z1alpha"], "eval/accuracy")
        assert curves["z1alpha"] == ([5.0, 15.0, 25.0], [0.5, 0.7, 0.81])
        [alpha] = [r for r in nq.query_topk("train/loss", k=10, aggregation="last") if r.run_id == "z1alpha"]
        assert alpha.metrics["train/loss"] == pytest.approx(0.40)


@pytest.mark.parametrize(
    ("status", "error_type", "message"),
    [
        (500, "Incomplete", "cannot list the runs of W&B project team/sae-sweep: W&B server {url} "),
        (403, "BadInput", r"W&B server {url} refused it \(HTTP 403\): the key has no access"),
    ],
)
def test_a_failure_listing_runs_is_the_servers_or_the_keys(api, status, error_type, message):
    """A server error while listing runs is exit 1 (Incomplete), not bad input; a refusal is the key's."""
    from shared.base.errors import Incomplete

    api.request_hook = lambda info: HookResult(status=status) if info.operation == "Runs" else None
    try:
        with pytest.raises((BadInput, Incomplete)) as caught:
            WandbQuery(f"{ENTITY}/{PROJECT}", timeout=3).query_topk("train/loss")
    finally:
        api.request_hook = None
    assert type(caught.value).__name__ == error_type
    assert re.search(message.format(url=re.escape(api.url)), str(caught.value)), str(caught.value)


def test_api_failures_and_unknown_projects(api):
    from tests.wandb_standin import HookResult

    with pytest.raises(BadInput, match="cannot list the runs of W&B project team/nope"):
        WandbQuery(f"{ENTITY}/nope").query_topk("train/loss")
    api.request_hook = lambda info: HookResult(status=400) if info.operation == "RunParquetHistory" else None
    try:
        from shared.base.errors import Incomplete

        with pytest.raises(Incomplete, match=r"could not fetch .* history series"):
            WandbQuery(f"{ENTITY}/{PROJECT}", timeout=5).query_topk("train/loss", aggregation="max")
    finally:
        api.request_hook = None


# ------------------------------------------------------------------ exports and offline folders


def test_export_without_history_answers_last_and_refuses_series(export):
    nq = WandbQuery(source=export / "runs-only")
    # delta's and zeta's summary losses are not finite and no history is there to fall back on
    assert [r.run_id for r in nq.query_topk("train/loss")] == [
        "k2beta",
        "g3gamma",
        "b5epsilon",
        "z1alpha",
        "e7eta",
    ]
    assert nq.last_excluded == {"no finite value for train/loss": 2}
    with pytest.raises(BadInput, match="was exported without its history: this query needs it"):
        nq.query_topk("train/loss", aggregation="mean_all")


def test_a_history_file_left_by_an_earlier_export_is_not_read(offline, tmp_path, capsys):
    exporter = load_script("export_runs", "wandb-tools")
    assert exporter.main(["--offline", str(offline), "-o", str(tmp_path), "--include-history", "--json"]) == 0
    with_history = WandbQuery(source=tmp_path).query_topk("train/loss", aggregation="mean_all")
    assert len(with_history) == 5
    capsys.readouterr()
    assert exporter.main(["--offline", str(offline), "-o", str(tmp_path), "--json"]) == 0
    stale = next(tmp_path.glob("*_history.parquet"))
    assert f"{stale} is left from an earlier export" in capsys.readouterr().err
    with pytest.raises(BadInput, match="was exported without its history"):
        WandbQuery(source=tmp_path).query_topk("train/loss", aggregation="mean_all")


def test_export_and_offline_folders_pick_a_project(export, offline, tmp_path):
    runs_file = next((export / "full").glob("*_runs.parquet"))
    assert runs_file.name == f"{ENTITY}_{PROJECT}_runs.parquet"
    assert len(WandbQuery(source=runs_file).fetch_runs()) == len(SPECS)
    assert len(WandbQuery(f"{ENTITY}/{PROJECT}", source=export / "full").fetch_runs()) == len(SPECS)
    (tmp_path / "other_proj_runs.parquet").write_bytes(runs_file.read_bytes())
    (tmp_path / runs_file.name).write_bytes(runs_file.read_bytes())
    with pytest.raises(
        BadInput, match="several exports; name one as ENTITY/PROJECT: other_proj, team_sae-sweep"
    ):
        WandbQuery(source=tmp_path).fetch_runs()
    assert len(WandbQuery("proj", source=tmp_path).fetch_runs()) == len(SPECS)
    assert WandbQuery(f"{ENTITY}/elsewhere", source=offline).fetch_runs() == []


def test_a_project_without_runs_answers_nothing_and_says_why(offline, tmp_path, capsys):
    """No runs to know metrics from: an empty answer (exit 0 on the command line), not 'unknown metric'."""
    query = WandbQuery(f"{ENTITY}/elsewhere", source=offline)
    assert query.query_topk("train/loss") == []
    assert f"no offline run of {ENTITY}/elsewhere in {offline} (projects there: {ENTITY}/{PROJECT})" in (
        query.events.warnings
    )
    empty = tmp_path / f"{ENTITY}_{PROJECT}_runs.parquet"
    pl.DataFrame(
        schema={
            "id": pl.String,
            "name": pl.String,
            "state": pl.String,
            **dict.fromkeys(RAW_JSON_COLUMNS, pl.String),
        }
    ).write_parquet(empty)
    assert WandbQuery(source=empty).query_topk("train/loss", aggregation="last") == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no W&B run logs"):
        WandbQuery(source=tmp_path / "empty", kind="offline").fetch_runs()


# ------------------------------------------------------------------ Pareto fronts


@pytest.mark.parametrize(
    ("aggregation", "other", "maximize_other"),
    [("last", "metrics/L0", False), ("mean_all", "eval/accuracy", True), ("max", "metrics/L0", True),
     ("mean_last_n", "metrics/L1", False)],
)  # fmt: skip
def test_pareto_front_matches_brute_force(query, aggregation, other, maximize_other):
    constraints = {"eval/accuracy": lambda x: x > 0.3}
    front = query.query_pareto(
        "train/loss", other, pareto_minimize=not maximize_other, constraints=constraints,
        aggregation=aggregation, n_steps=2,
    )  # fmt: skip
    expected = reference_front(
        "train/loss",
        other,
        minimize_y=not maximize_other,
        constraints=constraints,
        aggregation=aggregation,
        n=2,
    )
    got = [(r.run_id, r.metrics["train/loss"], r.metrics[other]) for r in front]
    assert got == [(r, pytest.approx(x), pytest.approx(y)) for r, x, y in expected]
    assert 1 < len(got) < query.last_candidates.height  # a real front: some runs are dominated
    assert query.last_stats["returned"] == len(got)
    assert all(r.config and r.name == BY_ID[r.run_id].name for r in front)


# ------------------------------------------------------------------ the command lines


def cli(module: ModuleType, command: str) -> int:
    """Run a script's main on `command` (split like a shell) as `uv run` would: one-line errors, exit codes."""
    with pytest.raises(SystemExit) as stopped:
        run_main(lambda: module.main(shlex.split(command)))
    return stopped.value.code


@pytest.fixture(scope="module")
def wandb_cli() -> ModuleType:
    return load_script("query_topk", "wandb-tools")


@pytest.fixture(scope="module")
def neptune_cli() -> ModuleType:
    return load_script("query_topk", "neptune-tools")


def is_png(path: Path) -> bool:
    """A PNG of a sane size: signature, 5 kB to 2 MB, a figure of column width at 300 dpi."""
    data = path.read_bytes()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return (
        data.startswith(PNG_SIGNATURE)
        and 5_000 < len(data) < 2_000_000
        and 600 < width < 3000
        and 400 < height < 3000
    )


def test_cli_top_k_json_table_and_curves(wandb_cli, offline, tmp_path, capsys):
    plot = tmp_path / "curves.png"
    command = (
        f"--offline {offline} --metric train/loss --aggregation mean_last_n --n-steps 2 --json --plot {plot}"
    )
    assert cli(wandb_cli, command) == 0
    found = json.loads(capsys.readouterr().out)
    expected = reference("train/loss", aggregation="mean_last_n", n=2)
    assert [(r["run_id"], pytest.approx(r["metrics"]["train/loss"])) for r in found] == expected
    assert is_png(plot)

    out = tmp_path / "best.json"
    assert cli(wandb_cli, f"--export {tmp_path / 'nothing'} {ENTITY}/{PROJECT} --metric train/loss") == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        cli(wandb_cli, f"--offline {offline} --metric train/loss --details eval/accuracy -k 2 -o {out}") == 0
    )
    table = capsys.readouterr().out
    assert "top 2 of 7 runs: min last(train/loss)" in table
    assert "eval/accuracy" in table and "model.width" in table  # nested configs show as dotted keys
    assert [r["name"] for r in json.loads(out.read_text())] == ["beta", "gamma"]
    assert (
        cli(wandb_cli, f"--offline {offline} --metric train/loss -k 2 --json -o {tmp_path / 'both.json'}")
        == 0
    )
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "both.json").read_text())


def test_cli_pareto_table_json_and_plot(wandb_cli, export, tmp_path, capsys):
    plot = tmp_path / "front.svg"
    command = f"--export {export / 'full'} --metric train/loss --pareto metrics/L0 --json --plot {plot}"
    assert cli(wandb_cli, command) == 0
    found = json.loads(capsys.readouterr().out)
    expected = reference_front("train/loss", "metrics/L0")
    assert [(r["run_id"], r["metrics"]["train/loss"], r["metrics"]["metrics/L0"]) for r in found] == [
        (r, pytest.approx(x), pytest.approx(y)) for r, x, y in expected
    ]
    assert plot.read_text().lstrip().startswith("<?xml") and "Pareto front" in plot.read_text()
    command = f"--export {export / 'full'} --metric train/loss --pareto eval/accuracy --pareto-maximize"
    assert cli(wandb_cli, command) == 0
    table = capsys.readouterr().out
    assert "Pareto front:" in table and "max last(eval/accuracy)" in table


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("--metric metrics/L9", "unknown metric 'metrics/L9'"),
        ("--metric lr", 'a key logged with define_metric(summary="none") is not in them'),
        ("--metric train/loss --pareto status", "'status' holds text"),
        (
            "--metric train/loss --plot {tmp}/missing/plot.png -o {tmp}/best.json",
            "folder {tmp}/missing does not exist",
        ),
        ("--metric train/loss --plot {tmp}/plot.gif", "unknown extension .gif"),
        ("--metric train/loss -o {tmp}/nowhere/best.json", "folder {tmp}/nowhere does not exist"),
        ("--metric train/loss -o {tmp}", "-o {tmp} is a folder, not a file name"),
        ("--metric train/loss --pareto train/loss", "--pareto must name another metric"),
        ("""--metric train/loss --where '"metrics/L0" <'""", "not a valid expression"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(
    wandb_cli, offline, tmp_path, capsys, arguments, message
):
    assert cli(wandb_cli, f"--offline {offline} " + arguments.format(tmp=tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and message.format(tmp=tmp_path) in err
    assert list(tmp_path.iterdir()) == []


def test_cli_needs_a_source(wandb_cli, capsys):
    assert cli(wandb_cli, "--metric train/loss") == 2
    assert "name a W&B project (ENTITY/PROJECT) or local files with --source PATH" in capsys.readouterr().err


def test_neptune_verb_has_pareto_and_plots(neptune_cli, tmp_path, capsys):
    from tests.neptune_fixtures import PROJECT as NEPTUNE_PROJECT
    from tests.neptune_fixtures import SPECS as NEPTUNE_SPECS
    from tests.neptune_fixtures import write_archive

    archive = write_archive(tmp_path / "data")
    plot = tmp_path / "front.png"
    command = f"{archive} --metric train/loss --pareto metrics/L0 --json --plot {plot} --no-cache"
    assert cli(neptune_cli, command) == 0
    found = json.loads(capsys.readouterr().out)
    points = {}
    for spec in NEPTUNE_SPECS:  # the last finite value of each series
        values = [
            [v for _, v in spec.series.get(k, []) if math.isfinite(v)] for k in ("train/loss", "metrics/L0")
        ]
        if all(values):
            points[spec.name] = (values[0][-1], values[1][-1])
    front = sorted(
        (name, x, y)
        for name, (x, y) in points.items()
        if not any(ox <= x and oy <= y and (ox, oy) != (x, y) for ox, oy in points.values())
    )
    assert 1 < len(front) < len(points)
    assert sorted((r["name"], r["metrics"]["train/loss"], r["metrics"]["metrics/L0"]) for r in found) == front
    assert [r["metrics"]["train/loss"] for r in found] == sorted(r["metrics"]["train/loss"] for r in found)
    assert is_png(plot)
    curves = tmp_path / "curves.pdf"
    command = f"{archive} --project {NEPTUNE_PROJECT} --metric train/loss -k 3 --plot {curves} --no-cache"
    assert cli(neptune_cli, command) == 0
    assert curves.read_bytes().startswith(b"%PDF") and curves.stat().st_size > 5_000


# ------------------------------------------------------------------ as a module and as a command


def test_importing_the_script_does_no_work_and_never_imports_wandb(export):
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / "wandb-tools")!r})
from query_topk import WandbQuery, RunInfo
nq = WandbQuery("team/sae-sweep")  # an API query object: nothing is opened before the first query
assert nq._source is None
found = WandbQuery(source={str(export / "full")!r}).query_topk("train/loss", k=1)
assert found[0].name == "beta" and isinstance(found[0], RunInfo), found
assert "wandb" not in sys.modules, "wandb was imported"
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_uv_run_help_and_a_query(export):
    script = str(ROOT / "wandb-tools" / "query_topk.py")
    result = subprocess.run(["uv", "run", script, "--help"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "--pareto METRIC" in result.stdout and "--last-from" in result.stdout
    result = subprocess.run(
        ["uv", "run", script, "--export", str(export / "full"), "--metric", "train/loss", "-k", "2", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [r["name"] for r in json.loads(result.stdout)] == ["beta", "gamma"]
