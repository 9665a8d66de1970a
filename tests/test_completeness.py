"""Every run accounted for: export_runs.py against a stand-in that loses, mangles or miscounts runs.

Each export is counted against what the server reported (`runs_reported`/`runs_exported`/`failed_runs`
in the metadata); a shortfall is exit 1 with a line naming the project, never a quiet exit 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from shared.cli.main import run_main
from tests.current_data import load_script
from tests.export_checks import ENTITY, cron_standin, new_run, utc_now
from tests.wandb_standin import HistoryMeta, HookResult, StandinServer

export_runs = load_script("export_runs")
BETA = ["-e", ENTITY, "-p", "beta"]  # 5 runs, no history
ALPHA = ["-e", ENTITY, "-p", "alpha", "--include-history"]  # 12 runs with history
FAST_GIVE_UP = ["--max-retry-time", "2"]


@pytest.fixture
def wandb_standin() -> Iterator[StandinServer]:
    """Overrides the session server for `wandb_env`: these tests change the server's runs and faults."""
    with cron_standin() as server:
        yield server


def export(folder: Path, *argv: str) -> int:
    """The exit code of export_runs.py with `argv`, its error line on stderr as from the command line."""
    with pytest.raises(SystemExit) as leaving:
        run_main(lambda: export_runs.main([*argv, "-o", str(folder)]))
    return leaving.value.code


def metadata(folder: Path, project: str) -> dict:
    return json.loads((folder / f"{ENTITY}_{project}_metadata.json").read_text())


def runs_of(folder: Path, project: str) -> pl.DataFrame:
    return pl.read_parquet(folder / f"{ENTITY}_{project}_runs.parquet")


def test_metadata_counts_what_the_server_reported_and_what_was_written(wandb_env, tmp_path):
    assert export(tmp_path, *ALPHA) == 0
    recorded = metadata(tmp_path, "alpha")
    assert (recorded["runs_reported"], recorded["runs_exported"], recorded["failed_runs"]) == (12, 12, {})


def test_a_run_with_unparseable_config_or_summary_costs_only_those_fields(wandb_env, tmp_path, capsys):
    """The client parses a whole page at once: one bad run used to take its page (up to 100 runs) along."""
    beta = wandb_env.dataset.project(ENTITY, "beta")
    beta.runs[1].raw_config = '{"lr": 0.1, "broken": '
    beta.runs[3].raw_summary = '{"a": ' * 1000 + "1" + "}" * 1000  # RecursionError in the client
    assert export(tmp_path, *BETA) == 0
    err = capsys.readouterr().err
    assert f"run {beta.runs[1].id}: config: not valid JSON" in err
    assert f"run {beta.runs[3].id}: summaryMetrics: nested deeper than" in err
    runs = runs_of(tmp_path, "beta")
    assert sorted(runs["id"]) == sorted(run.id for run in beta.runs)
    by_id = {row["id"]: row for row in runs.iter_rows(named=True)}
    assert by_id[beta.runs[1].id]["_config_json"] == beta.runs[1].raw_config  # the raw text, kept
    assert by_id[beta.runs[3].id]["_summary_json"] == beta.runs[3].raw_summary
    assert json.loads(by_id[beta.runs[3].id]["_config_json"]) == beta.runs[3].config  # its config is fine
    assert metadata(tmp_path, "beta")["runs_exported"] == 5


def test_a_page_of_runs_without_its_edges_is_fetched_again(wandb_env, tmp_path):
    wandb_env.runs_page_faults = ["edges_null"]
    assert export(tmp_path, *BETA) == 0
    assert runs_of(tmp_path, "beta").height == 5


def test_pages_that_keep_coming_without_edges_fail_the_project(wandb_env, tmp_path, capsys):
    wandb_env.runs_page_faults = ["edges_null"] * 1000
    assert export(tmp_path, *BETA, *FAST_GIVE_UP) == 1
    err = capsys.readouterr().err
    assert "error: cron/beta not exported: runs of cron/beta: the server's page of runs lacks its runs" in err
    assert not (tmp_path / f"{ENTITY}_beta_runs.parquet").exists()


def test_endless_empty_pages_end_the_project_after_a_few_tries(wandb_env, tmp_path, capsys):
    wandb_env.runs_page_faults = ["empty_more"] * 10_000
    assert export(tmp_path, *BETA) == 1
    assert "3 pages in a row without a new run although it said more follow" in capsys.readouterr().err
    assert wandb_env.requests["Runs"] <= 5


def test_a_server_that_counts_more_runs_than_it_lists_is_a_shortfall(wandb_env, tmp_path, capsys):
    wandb_env.runs_count_extra = 2
    assert export(tmp_path, *BETA, "--json") == 1
    captured = capsys.readouterr()
    assert "error: cron/beta: 2 of 7 runs missing" in captured.err
    assert json.loads(captured.out)["incomplete"] == ["cron/beta: 2 of 7 runs missing"]
    recorded = metadata(tmp_path, "beta")  # what did arrive is kept, and says what is missing
    assert (recorded["runs_reported"], recorded["runs_exported"]) == (7, 5)


def test_a_history_file_without_steps_is_that_runs_failure_and_the_others_are_kept(
    wandb_env, tmp_path, capsys
):
    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    bad = next(run for run in alpha.runs if run.history is not None and run.live_from_step is None)
    bad.export_drop = ("_step",)
    assert export(tmp_path, *ALPHA) == 1
    err = capsys.readouterr().err
    assert f"run {bad.id} not exported: history: unexpected history file (no _step column)" in err
    assert f"error: cron/alpha: history of 1 run(s) missing ({bad.id})" in err
    recorded = metadata(tmp_path, "alpha")
    assert list(recorded["failed_runs"]) == [bad.id] and recorded["runs_exported"] == 12
    history = pl.read_parquet(tmp_path / f"{ENTITY}_alpha_history.parquet")
    assert bad.id not in history["run_id"].to_list()
    assert history["run_id"].n_unique() == sum(1 for run in alpha.runs if run.history is not None) - 1


def test_an_incremental_export_after_a_shortfall_fetches_the_failed_run_again(wandb_env, tmp_path, capsys):
    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    bad = next(run for run in alpha.runs if run.history is not None and run.live_from_step is None)
    bad.export_drop = ("_step",)
    assert export(tmp_path, *ALPHA, "--incremental") == 1
    bad.export_drop = ()  # the server's file is whole again
    wandb_env.clear_cache()
    capsys.readouterr()
    assert export(tmp_path, *ALPHA, "--incremental") == 0
    assert (
        "the server has 1 run(s) the files do not hold complete: fetching them too" in capsys.readouterr().err
    )
    history = pl.read_parquet(tmp_path / f"{ENTITY}_alpha_history.parquet")
    assert bad.id in history["run_id"].to_list()
    assert metadata(tmp_path, "alpha")["failed_runs"] == {}


def test_incremental_fetches_a_run_synced_late_with_old_times(wandb_env, tmp_path, capsys):
    """An offline run synced days after it ran keeps its old created/heartbeat: no `since` filter sees it."""
    assert export(tmp_path, *BETA, "--incremental") == 0
    beta = wandb_env.dataset.project(ENTITY, "beta")
    beta.runs.append(new_run("late0001", utc_now() - timedelta(days=30)))
    wandb_env.clear_cache()
    capsys.readouterr()
    assert export(tmp_path, *BETA, "--incremental") == 0
    assert (
        "the server has 1 run(s) the files do not hold complete: fetching them too" in capsys.readouterr().err
    )
    assert "late0001" in runs_of(tmp_path, "beta")["id"].to_list()
    recorded = metadata(tmp_path, "beta")
    assert (recorded["runs_reported"], recorded["runs_exported"]) == (6, 6)


def test_config_json_is_the_config_as_logged(wandb_env, tmp_path):
    """W&B wraps each top-level value once ({"value": v, "desc": d}); nothing deeper is unwrapped."""
    beta = wandb_env.dataset.project(ENTITY, "beta")
    logged = {"reward": {"value": 0.5, "scale": 2}, "opt": {"value": "adam"}, "plain": 3}
    beta.runs[0].config = logged  # served wrapped, as W&B does
    beta.runs[1].raw_config = json.dumps({"reward": {"value": 0.5, "scale": 2}})  # a value never wrapped
    assert export(tmp_path, *BETA) == 0
    runs = {row["id"]: row for row in runs_of(tmp_path, "beta").iter_rows(named=True)}
    assert json.loads(runs[beta.runs[0].id]["_config_json"]) == logged
    assert json.loads(runs[beta.runs[1].id]["_config_json"]) == {"reward": {"value": 0.5, "scale": 2}}


@pytest.mark.parametrize(
    "state",
    [
        '{"format": 1, "options": [], "since": 5, "exported_at": {}, "runs": "x"}',
        '{"format": 1, "options": {}, "since": null, "exported_at": "2026-01-01T00:00:00+00:00", "runs": {"a": 7}}',
        "[" * 100_000 + "]" * 100_000,
        "null",
    ],
    ids=["wrong-types", "wrong-run-entry", "deep", "null"],
)
def test_an_unreadable_state_is_one_warning_then_a_full_export(wandb_env, tmp_path, capsys, state):
    assert export(tmp_path, *BETA, "--incremental") == 0
    (tmp_path / f"{ENTITY}_beta_state.json").write_text(state)
    capsys.readouterr()
    for _ in range(2):  # and the export after it is incremental again
        assert export(tmp_path, *BETA, "--incremental") == 0
    err = capsys.readouterr().err
    assert err.count("unreadable export state") == 1
    assert "full export" in err and runs_of(tmp_path, "beta").height == 5


def test_offline_export_metadata_counts_the_logs_read(tmp_path):
    samples = Path(__file__).resolve().parent.parent / "samples" / "wandb"
    assert export(tmp_path, "--offline", str(samples)) == 0
    [metadata_file] = tmp_path.glob("*_metadata.json")
    recorded = json.loads(metadata_file.read_text())
    logs = len(list(samples.rglob("*.wandb")))
    assert (recorded["runs_reported"], recorded["runs_exported"], recorded["failed_runs"]) == (logs, logs, {})


KEEP = json.dumps({"entity": ENTITY, "project": "beta"})  # as the metadata of cron/beta would say


@pytest.mark.parametrize("kind", ["_runs.parquet", "_metadata.json", "_state.json"])
@pytest.mark.parametrize("inside", [True, False], ids=["target-inside", "target-outside"])
def test_a_symlink_at_a_final_path_is_refused_before_any_file_is_touched(
    wandb_env, tmp_path, capsys, kind, inside
):
    out = tmp_path / "out"
    out.mkdir()
    target = (out if inside else tmp_path) / "precious.txt"
    target.write_text(KEEP)
    link = out / f"{ENTITY}_beta{kind}"
    link.symlink_to(target)
    assert export(out, *BETA, "-p", "alpha", "--incremental") == 2
    err = capsys.readouterr().err
    expected = (
        f"refusing to write {link}: it is a symbolic link" if inside else f"refusing to write outside {out}"
    )
    assert expected in err and err.count("\n") == 1
    assert target.read_text() == KEEP
    left = {link.name, *([target.name] if inside else [])}
    assert {path.name for path in out.iterdir()} == left


def many_runs(server: StandinServer, count: int = 250) -> list:
    """cron/many: `count` runs without history, a minute apart (several pages of runs)."""
    start = utc_now() - timedelta(days=20)
    runs = [new_run(f"many{i:04d}", start + timedelta(minutes=i), steps=1) for i in range(count)]
    for made in runs:
        made.history = None
    server.dataset.add_project(ENTITY, "many", runs, is_team=True)
    return runs


def test_a_run_deleted_while_the_server_pages_costs_no_live_run(wandb_env, tmp_path, capsys):
    """Deleting a run of page 1 before page 2 shifts the runs by one: page 2 used to start one run late,
    and with the deleted run counted as exported the totals agreed (exit 0, a live run missing)."""
    runs = many_runs(wandb_env)
    deleted = runs[10]
    wandb_env.change_at("Runs", 2, lambda dataset: dataset.project(ENTITY, "many").runs.remove(deleted))
    assert export(tmp_path, "-e", ENTITY, "-p", "many") == 0
    exported = set(runs_of(tmp_path, "many")["id"])
    assert {run.id for run in runs if run is not deleted} <= exported
    assert f"deleted on the server while the export paged, exported as they were read: {deleted.id}" in (
        capsys.readouterr().err
    )
    assert metadata(tmp_path, "many")["runs_reported"] == 249


def test_a_run_added_before_the_cursor_while_the_server_pages_is_fetched(wandb_env, tmp_path):
    """A run synced late (an old creation time) lands among the runs already paged: page 2 repeated one
    run and the new one was never listed."""
    runs = many_runs(wandb_env)
    late = new_run("late0001", runs[5].created_at + timedelta(seconds=30), steps=1)
    late.history = None
    wandb_env.change_at("Runs", 2, lambda dataset: dataset.project(ENTITY, "many").runs.append(late))
    assert export(tmp_path, "-e", ENTITY, "-p", "many") == 0
    assert set(runs_of(tmp_path, "many")["id"]) == {run.id for run in runs} | {late.id}
    assert metadata(tmp_path, "many")["runs_reported"] == 251


def test_runs_that_keep_changing_while_the_ids_are_listed_again_fail_the_project(
    wandb_env, tmp_path, capsys, monkeypatch
):
    """Every listing of the ids (two pages each here) sees the count change: it cannot be trusted, so the
    export never ends with exit 0."""
    monkeypatch.setattr("shared.wandb.api.ID_PAGE", 200)
    runs = many_runs(wandb_env)
    added = iter(range(100))

    def add_old_run(dataset) -> None:
        late = new_run(f"late{next(added):04d}", runs[1].created_at + timedelta(seconds=1), steps=1)
        late.history = None
        dataset.project(ENTITY, "many").runs.append(late)

    for nth in range(2, 60):
        wandb_env.change_at("Runs", nth, add_old_run)
    assert export(tmp_path, "-e", ENTITY, "-p", "many") == 1
    err = capsys.readouterr().err
    assert "the runs kept changing while they were listed (3 times)" in err
    assert "error: cron/many: " in err


def finished_with_history(server: StandinServer):
    alpha = server.dataset.project(ENTITY, "alpha")
    return next(run for run in alpha.runs if run.history is not None and run.live_from_step is None)


def always(operation: str, answer: HookResult):
    return lambda request: answer if request.operation == operation else None


def test_a_run_deleted_before_its_history_is_located_keeps_the_others(wandb_env, tmp_path, capsys):
    """The server knows no such run any more: that run's history is named missing; its row (config and
    summary arrived) and every other run stay. It used to fail the whole project."""
    gone = finished_with_history(wandb_env)
    wandb_env.change_at(
        "RunParquetHistory", 1, lambda dataset: dataset.project(ENTITY, "alpha").runs.remove(gone)
    )
    assert export(tmp_path, *ALPHA) == 1
    err = capsys.readouterr().err
    assert f"run {gone.id} not exported: history: the server knows no such run" in err
    assert f"error: cron/alpha: history of 1 run(s) missing ({gone.id})" in err
    assert runs_of(tmp_path, "alpha").height == 12
    assert list(metadata(tmp_path, "alpha")["failed_runs"]) == [gone.id]


def test_history_that_cannot_be_located_keeps_every_runs_row(wandb_env, tmp_path, capsys):
    wandb_env.request_hook = always("RunParquetHistory", HookResult(status=403))
    assert export(tmp_path, *ALPHA, *FAST_GIVE_UP) == 1
    err = capsys.readouterr().err
    assert "history: could not be located" in err and "error: cron/alpha: history of" in err
    assert runs_of(tmp_path, "alpha").height == 12  # config and summary arrived: kept
    assert len(metadata(tmp_path, "alpha")["failed_runs"]) == 12


def test_live_history_rows_that_cannot_be_read_are_that_runs_failure(wandb_env, tmp_path, capsys):
    """scan_history (rows not exported yet) raised the client's own error (`input: …`, not retried): it
    took the project along."""
    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    live = [run.id for run in alpha.runs if run.live_from_step is not None]
    assert live
    refused = json.dumps({"errors": [{"message": "not allowed"}], "data": None}).encode()
    wandb_env.request_hook = always("HistoryPage", HookResult(body=refused))  # a GraphQL error: not retried
    assert export(tmp_path, *ALPHA, *FAST_GIVE_UP) == 1
    assert runs_of(tmp_path, "alpha").height == 12
    assert sorted(metadata(tmp_path, "alpha")["failed_runs"]) == sorted(live)
    assert "error: cron/alpha: history of" in capsys.readouterr().err


def test_a_finished_run_with_fewer_history_rows_than_the_server_counts_is_named(wandb_env, tmp_path, capsys):
    short = finished_with_history(wandb_env)
    meta = wandb_env.history_meta(short)
    short.history_meta = HistoryMeta(meta.last_step, meta.line_count + 3, meta.key_types)
    assert export(tmp_path, *ALPHA) == 1
    err = capsys.readouterr().err
    expected = f"{meta.line_count} of the {meta.line_count + 3} history rows the server counts arrived"
    assert f"run {short.id} not exported: history: {expected}" in err
    assert runs_of(tmp_path, "alpha").height == 12
    assert list(metadata(tmp_path, "alpha")["failed_runs"]) == [short.id]


def test_history_keys_keep_every_row_so_the_line_count_still_holds(wandb_env, tmp_path):
    assert export(tmp_path, *ALPHA, "--history-keys", "train/loss") == 0
    assert metadata(tmp_path, "alpha")["failed_runs"] == {}


def test_a_run_deleted_on_the_server_does_not_hide_a_late_run_from_an_update(wandb_env, tmp_path, capsys):
    """The files keep a run deleted on the server; a run synced late (old times) then makes the counts
    agree again: compared by count, the update never fetched it."""
    assert export(tmp_path, *BETA, "--incremental") == 0
    beta = wandb_env.dataset.project(ENTITY, "beta")
    beta.runs.pop(0)
    beta.runs.append(new_run("late0001", utc_now() - timedelta(days=30)))
    wandb_env.clear_cache()
    capsys.readouterr()
    assert export(tmp_path, *BETA, "--incremental") == 0
    assert "the server has 1 run(s) the files do not hold complete" in capsys.readouterr().err
    assert "late0001" in runs_of(tmp_path, "beta")["id"].to_list()
