"""Hostile sweep cases (issue 20). Clocks and dates (i), runs that change while the server pages (m)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from tests.export_checks import ENTITY, cron_dataset, new_run, utc_now
from tests.sweep import (
    ALPHA,
    BETA,
    EXPORT,
    FAST,
    NEPTUNE_EXPORT,
    Case,
    Mutate,
    Outcome,
    alpha,
    api_export,
    beta,
    history_run,
    listed_runs,
    metadata_of,
    row_of,
    run,
    runs_frame,
    script_run,
    server_env,
)
from tests.wandb_standin import HistoryMeta, HookResult, StandinDataset, StandinServer

MANY = ("-e", ENTITY, "-p", "many", "-o", "out")


# (i) clocks and dates ---------------------------------------------------------------------------


def since(name: str, value: str) -> Case:
    """--since `value` is no date or duration: exit 2 naming it, before anything is fetched."""
    return Case(f"i-since-{name}", "i", api_export((*BETA, "--since", value)), 2, f"bad --since {value!r}",
                check=nothing_exported)  # fmt: skip


def nothing_exported(outcome: Outcome) -> None:
    out = outcome.folder / "out"
    assert not out.is_dir() or not [path for path in out.iterdir() if path.suffix == ".parquet"]


AHEAD = timedelta(days=400)  # the clock of the host that made the state


def state_from_the_future(since: str | None = None) -> Callable[[Path], Outcome]:
    """An --incremental export (with `--since since`) whose state was made on a host whose clock ran
    AHEAD; then a run changes on the server: the next update must fetch it (it used to answer "no
    run changed", and a `--since` duration resolved then lay ahead too)."""
    argv = [*BETA, "--incremental", *(["--since", since] if since else [])]

    def scenario(folder: Path) -> Outcome:
        dataset = cron_dataset()
        with StandinServer(dataset) as server:
            env = server_env(folder, server)
            first = run(EXPORT, argv, folder, env)
            assert first.code == 0, first.stderr
            state_path = folder / "out" / f"{ENTITY}_beta_state.json"
            state = json.loads(state_path.read_text())
            state["exported_at"] = (utc_now() + AHEAD).isoformat() + "+00:00"
            if state["since"]:
                state["since"] = (datetime.fromisoformat(state["since"]) + AHEAD).isoformat()
            state_path.write_text(json.dumps(state))
            changed = beta(dataset).runs[2]
            changed.heartbeat_at, changed.state = utc_now(), "crashed"
            server.clear_cache()
            outcome = run(EXPORT, argv, folder, env)
        outcome.server_runs = listed_runs(dataset)
        return outcome

    return scenario


def check_future_state(outcome: Outcome) -> None:
    run_id = beta(cron_dataset()).runs[2].id
    assert row_of(outcome, run_id)["state"] == "crashed"
    assert "fetching the runs changed since" in outcome.stderr


def heartbeat_before_creation(dataset: StandinDataset, server: StandinServer) -> None:
    """beta's run 1: its last heartbeat an hour before its creation, its own clock's `_runtime` negative."""
    target = beta(dataset).runs[1]
    target.heartbeat_at = target.created_at - timedelta(hours=1)
    target.summary = {**target.summary, "_runtime": -3600.0}


def check_null_runtime(outcome: Outcome) -> None:
    run_id = beta(cron_dataset()).runs[1].id
    assert row_of(outcome, run_id)["runtime_s"] is None
    assert f"run {run_id}: runtime -3600.0 s left out (null): its last heartbeat" in outcome.stderr
    assert runs_frame(outcome)["runtime_s"].null_count() == 1


def neptune_heartbeat_before_creation(folder: Path) -> None:
    """A Neptune archive whose first run was last pinged a day before its creation and has no running
    time of its own: its runtime is the last heartbeat less the creation."""
    from tests.neptune_fixtures import CREATED, SPECS, write_archive

    before = CREATED - timedelta(days=1)
    clock = {"sys/ping_time": before, "sys/modification_time": before, "sys/running_time": "unknown"}
    first = dataclasses.replace(SPECS[0], attributes={**SPECS[0].attributes, **clock})
    write_archive(folder / "archive", specs=[first, *SPECS[1:]])


def check_neptune_null_runtime(outcome: Outcome) -> None:
    [runs_path] = (outcome.folder / "out").glob("*_runs.parquet")
    runs = pl.read_parquet(runs_path)
    assert runs.filter(pl.col("id") == "TEST-1")["runtime_s"].to_list() == [None]
    assert runs.filter(pl.col("id") != "TEST-1")["runtime_s"].null_count() == 0
    assert "run TEST-1: runtime -86400.0 s left out (null): its last heartbeat" in outcome.stderr


# (m) runs that change while the server pages, and history that cannot be had ---------------------


def many(count: int = 250) -> Mutate:
    """cron/many: `count` runs without history, a minute apart (100 a page)."""

    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        start = utc_now() - timedelta(days=20)
        runs = [new_run(f"many{i:05d}", start + timedelta(minutes=i), steps=1) for i in range(count)]
        for made in runs:
            made.history = None
        dataset.add_project(ENTITY, "many", runs, is_team=True)

    return mutate


def then(*mutations: Mutate) -> Mutate:
    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        for each in mutations:
            each(dataset, server)

    return mutate


def project_runs(dataset: StandinDataset, name: str) -> list:
    found = dataset.project(ENTITY, name)
    assert found is not None
    return found.runs


def delete_at(operation: str, nth: int, project: str, index: int) -> Mutate:
    """The project's run `index` deleted just before the `nth` `operation` request is answered."""

    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        gone = project_runs(dataset, project)[index]
        server.change_at(operation, nth, lambda data: project_runs(data, project).remove(gone))

    return mutate


def add_old_run_at(*nths: int) -> Mutate:
    """A run synced late (created among the first runs) added before each of these Runs requests."""

    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        first = project_runs(dataset, "many")[1].created_at
        for nth in nths:

            def add(data: StandinDataset, nth: int = nth) -> None:
                late = new_run(f"late{nth:04d}", first + timedelta(seconds=nth), steps=1)
                late.history, late.heartbeat_at = None, utc_now()  # synced now: a change since any cutoff
                project_runs(data, "many").append(late)

            server.change_at("Runs", nth, add)

    return mutate


def every_live_run(project: str) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        assert outcome.server_runs is not None
        exported = set(runs_frame(outcome, project)["id"])
        assert set(outcome.server_runs[project]) <= exported
        recorded = metadata_of(outcome, project)
        assert recorded["runs_reported"] == len(outcome.server_runs[project])

    return check


def says(text: str) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        assert text in outcome.stderr

    return check


def answer(operation: str, verdict: HookResult) -> Mutate:
    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        server.request_hook = lambda request: verdict if request.operation == operation else None

    return mutate


GRAPHQL_ERROR = HookResult(body=json.dumps({"errors": [{"message": "not allowed"}], "data": None}).encode())


def short_line_count(dataset: StandinDataset, server: StandinServer) -> None:
    """A finished run of alpha whose server counts 3 history rows more than its files hold."""
    target = history_run(dataset)
    meta = server.history_meta(target)
    target.history_meta = HistoryMeta(meta.last_step, meta.line_count + 3, meta.key_types)


def rows_kept(failed: Callable[[StandinDataset], list[str]], reason: str) -> Callable[[Outcome], None]:
    """Every alpha run's row is kept; the runs `failed` picks are named (only they) under failed_runs."""

    def check(outcome: Outcome) -> None:
        dataset = cron_dataset()
        assert outcome.server_runs is not None
        assert set(outcome.server_runs["alpha"]) <= set(runs_frame(outcome, "alpha")["id"])
        names = failed(dataset)
        assert sorted(metadata_of(outcome, "alpha")["failed_runs"]) == sorted(names)
        for run_id in names:
            assert f"run {run_id} not exported: history: " in outcome.stderr
        assert reason in outcome.stderr

    return check


def alpha_with_history(dataset: StandinDataset) -> list[str]:
    return [made.id for made in alpha(dataset).runs if made.history is not None]


def live_runs(dataset: StandinDataset) -> list[str]:
    return [made.id for made in alpha(dataset).runs if made.live_from_step is not None]


def changed_while_incremental(folder: Path) -> Outcome:
    """An --incremental update of many during which a run synced late lands among the runs already paged
    (the count and the changed runs' pages move): the run is in the files, exit 0."""
    argv = [*MANY, "--incremental"]
    dataset = cron_dataset()
    with StandinServer(dataset) as server:
        many()(dataset, server)
        env = server_env(folder, server)
        first = run(EXPORT, argv, folder, env)
        assert first.code == 0, first.stderr
        for made in project_runs(dataset, "many")[:150]:  # changed since: the update pages through them
            made.heartbeat_at = utc_now()
        server.clear_cache()
        server.reset_counts()
        add_old_run_at(4)(dataset, server)  # after the two counts and the first page of changed runs
        outcome = run(EXPORT, argv, folder, env)
    outcome.server_runs = listed_runs(dataset)
    return outcome


def deleted_run_hides_a_late_one(folder: Path) -> Outcome:
    """--incremental of beta; then a run is deleted on the server and one synced late (old times) arrives:
    the counts agree, yet the files lack the late run."""
    argv = [*BETA, "--incremental"]
    dataset = cron_dataset()
    with StandinServer(dataset) as server:
        env = server_env(folder, server)
        first = run(EXPORT, argv, folder, env)
        assert first.code == 0, first.stderr
        beta(dataset).runs.pop(0)
        beta(dataset).runs.append(new_run("late0001", utc_now() - timedelta(days=30)))
        server.clear_cache()
        outcome = run(EXPORT, argv, folder, env)
    outcome.server_runs = listed_runs(dataset)
    return outcome


CASES: list[Case] = [
    since("superscript-two-days", "\u00b2d"),  # passes str.isdigit(), then int() raised a traceback
    since("arabic-indic-three-days", "\u0663d"),
    since("year-1-at-plus-one", "0001-01-01T00:00:00+01:00"),  # before year 1 in UTC: was exit 1
    since("year-9999-at-minus-twelve", "9999-12-31T23:00:00-12:00"),  # after year 9999 in UTC
    since("empty", ""),  # used to mean no --since at all
    Case("i-incremental-state-from-the-future", "i", state_from_the_future(), 0,
         "a clock ahead or a copied folder; not trusted", check=check_future_state),
    Case("i-incremental-since-resolved-on-a-clock-ahead", "i", state_from_the_future("365d"), 0,
         "resolved again", check=check_future_state),
    Case("i-heartbeat-before-creation", "i", api_export(BETA, heartbeat_before_creation), 0,
         "left out (null): its last heartbeat", check=check_null_runtime),
    Case("i-neptune-heartbeat-before-creation", "i",
         script_run(NEPTUNE_EXPORT, ("--source", "archive", "-o", "out"), neptune_heartbeat_before_creation), 0,
         "left out (null): its last heartbeat", check=check_neptune_null_runtime),
    Case("m-run-deleted-from-a-paged-page", "m", api_export(MANY, then(many(), delete_at("Runs", 2, "many", 10))), 0,
         "deleted on the server while the export paged", check=every_live_run("many")),
    Case("m-run-deleted-before-the-last-page", "m",
         api_export(MANY, then(many(), delete_at("Runs", 3, "many", 150))), 0, check=every_live_run("many")),
    Case("m-old-run-added-while-paging", "m", api_export(MANY, then(many(), add_old_run_at(2))), 0,
         check=every_live_run("many")),
    Case("m-runs-added-at-every-page-of-a-long-listing", "m",
         api_export(MANY, then(many(1100), add_old_run_at(*range(2, 40))), timeout=180), 1,
         "runs missing from: cron/many"),
    Case("m-incremental-old-run-added-while-paging", "m", changed_while_incremental, 0,
         check=every_live_run("many")),
    Case("m-incremental-deleted-run-hides-a-late-one", "m", deleted_run_hides_a_late_one, 0,
         "the files do not hold complete: fetching them too"),
    Case("m-history-of-a-run-deleted-before-it-is-located", "m",
         api_export(ALPHA, delete_at("RunParquetHistory", 1, "alpha", 0)), 1, "runs missing from: cron/alpha",
         check=says("history: the server knows no such run (deleted during the export?)")),
    Case("m-history-locations-refused", "m", api_export((*ALPHA, *FAST), answer("RunParquetHistory", GRAPHQL_ERROR)),
         1, "runs missing from: cron/alpha", check=rows_kept(alpha_with_history, "could not be located")),
    Case("m-live-history-rows-refused", "m", api_export((*ALPHA, *FAST), answer("HistoryPage", GRAPHQL_ERROR)), 1,
         "runs missing from: cron/alpha", check=rows_kept(live_runs, "")),
    Case("m-history-shorter-than-the-line-count", "m", api_export(ALPHA, short_line_count), 1,
         "runs missing from: cron/alpha",
         check=rows_kept(lambda dataset: [history_run(dataset).id], "history rows the server counts arrived")),
]  # fmt: skip
