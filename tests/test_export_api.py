"""export_runs.py and list_entities.py through the real wandb client against the stand-in server."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, timedelta
from pathlib import Path

import polars as pl
import pytest

from shared.base.errors import BadInput, Incomplete, RunToolsError
from shared.table.schema import is_internal_key
from tests.current_data import load_script
from tests.wandb_standin import HookResult, StandinServer, html_page

ROOT = Path(__file__).resolve().parent.parent
TEAM, PROJECT = "graph_denoise_team", "spectral_denoising"
export_runs = load_script("export_runs")
list_entities = load_script("list_entities")


def same_json(left: object, right: object) -> bool:
    """Equality that treats NaN as equal to NaN (JSON round-trips keep NaN, but NaN != NaN)."""
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


def expected_history(run) -> pl.DataFrame:
    """The numeric values the stand-in holds for a run, computed from its rows in plain Python."""
    rows = []
    for row in run.history_table().rows:
        for key, value in row.items():
            if is_internal_key(key) or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            rows.append({"step": row["_step"], "key": key, "value": float(value)})
    return pl.DataFrame(rows, schema={"step": pl.Int64, "key": pl.String, "value": pl.Float64}).sort(
        "step", "key"
    )


def test_each_run_keeps_the_commit_the_server_records(wandb_env, tmp_path):
    """The commit every Runs reply carries is the runs table's git_commit column (null when none)."""
    dataset_runs = wandb_env.dataset.project(TEAM, PROJECT).runs
    assert export_runs.main(["-e", TEAM, "-p", PROJECT, "-o", str(tmp_path)]) == 0
    runs = pl.read_parquet(tmp_path / f"{TEAM}_{PROJECT}_runs.parquet")
    assert runs.schema["git_commit"] == pl.String
    assert dict(zip(runs["id"], runs["git_commit"], strict=True)) == {
        r.id: r.commit or None for r in dataset_runs
    }
    assert runs["git_commit"].null_count() < runs.height


def test_export_with_history_matches_the_server(wandb_env, tmp_path, capsys):
    dataset_runs = wandb_env.dataset.project(TEAM, PROJECT).runs
    code = export_runs.main(
        ["-e", TEAM, "-p", PROJECT, "-o", str(tmp_path), "--include-history", "--workers", "4"]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "... fetched 100 runs" in err and "... fetched 200 runs" in err
    assert f"Saved {len(dataset_runs)} runs to" in err

    runs = pl.read_parquet(tmp_path / f"{TEAM}_{PROJECT}_runs.parquet")
    by_created = sorted(dataset_runs, key=lambda r: r.created_at)
    assert runs["id"].to_list() == [r.id for r in by_created]
    assert runs.columns[:15] == [
        "id", "name", "entity", "project", "state", "created_at", "heartbeat_at", "runtime_s",
        "tags", "group", "job_type", "sweep", "user", "notes", "url",
    ]  # fmt: skip
    assert runs.schema["created_at"] == pl.Datetime("us", "UTC")
    first = by_created[0]
    row = runs.row(0, named=True)
    assert row["created_at"].replace(tzinfo=None) == first.created_at
    assert (row["name"], row["state"], row["tags"]) == (first.display_name, first.state, first.tags)
    assert row["url"].endswith(f"/{TEAM}/{PROJECT}/runs/{first.id}")
    for run, config_text, summary_text in zip(
        by_created, runs["_config_json"], runs["_summary_json"], strict=True
    ):
        assert same_json(json.loads(config_text), run.config)
        assert same_json(json.loads(summary_text), run.summary)
    # Flattened columns: nested keys, the collision kept apart, mixed types as string, NaN/inf as floats.
    assert runs["config_model_type"].to_list() == [r.config["model"]["type"] for r in by_created]
    assert {"config_a_b", "config_a_b__2", "config_a_b__3"} <= set(runs.columns)
    assert runs.schema["config_mixed"] == pl.String
    best = runs["metric_best_val"].to_list()
    assert [math.isnan(v) for v in best] == [math.isnan(r.summary["best/val"]) for r in by_created]
    assert "metric_test_weights" not in runs.columns and "metric__runtime" not in runs.columns

    history = pl.read_parquet(tmp_path / f"{TEAM}_{PROJECT}_history.parquet")
    metadata = json.loads((tmp_path / f"{TEAM}_{PROJECT}_metadata.json").read_text())
    assert metadata["run_count"] == len(dataset_runs) and metadata["history_rows"] == history.height
    assert metadata["source"] == "wandb-api" and metadata["skipped_history_values"] == 0
    assert metadata["history_other_rows"] > 0  # the values that are not numbers (tests/test_run_streams.py)
    for run in by_created:
        got = history.filter(pl.col("run_id") == run.id).select("step", "key", "value").sort("step", "key")
        want = expected_history(run) if run.history is not None else got.clear()
        assert got.equals(want, null_equal=True), run.id
    live_run = next(r for r in dataset_runs if r.live_from_step is not None)
    assert history.filter(pl.col("run_id") == live_run.id)["step"].max() >= live_run.live_from_step

    written = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*.json")) + err
    assert wandb_env.api_key not in written


def test_summary_pages_stay_within_one_request_per_page(wandb_env, tmp_path):
    assert export_runs.main(["-e", TEAM, "-p", PROJECT, "-o", str(tmp_path)]) == 0
    pages = math.ceil(len(wandb_env.dataset.project(TEAM, PROJECT).runs) / 100)
    assert wandb_env.requests["Runs"] <= pages + 1
    assert wandb_env.requests["Run"] == 0, "no per-run requests for config or summary"
    assert not (tmp_path / f"{TEAM}_{PROJECT}_history.parquet").exists()


def test_since_filters_on_the_server_and_history_keys_select(wandb_env, tmp_path):
    cutoff = (wandb_env.dataset.now - timedelta(days=10)).replace(microsecond=0)
    argv = ["-e", "alice", "-p", "scratch", "-o", str(tmp_path), "--since", cutoff.isoformat()]
    assert export_runs.main([*argv, "--history-keys", "train/loss"]) == 0
    runs = pl.read_parquet(tmp_path / "alice_scratch_runs.parquet")
    expected = {r.id for r in wandb_env.dataset.project("alice", "scratch").runs if r.created_at >= cutoff}
    assert set(runs["id"]) == expected and 0 < len(expected) < 12
    history = pl.read_parquet(tmp_path / "alice_scratch_history.parquet")
    assert set(history["key"]) == {"train/loss"} and set(history["run_id"]) <= expected
    metadata = json.loads((tmp_path / "alice_scratch_metadata.json").read_text())
    assert metadata["filters"]["since"].startswith(cutoff.isoformat())
    assert runs["created_at"].min() >= cutoff.replace(tzinfo=UTC)


def test_star_exports_every_project_including_an_empty_one(wandb_env, tmp_path, capsys):
    assert export_runs.main(["-e", TEAM, "-p", "*", "-o", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {(p["project"], p["runs"]) for p in summary["exported"]} == {(PROJECT, 250), ("empty_project", 0)}
    assert pl.read_parquet(tmp_path / f"{TEAM}_empty_project_runs.parquet").height == 0


def test_a_name_given_twice_is_exported_and_listed_once(wandb_env, tmp_path, capsys):
    argv = [
        "-e",
        TEAM,
        "-p",
        f"empty_project,{PROJECT}",
        "-p",
        "empty_project",
        "-o",
        str(tmp_path),
        "--json",
    ]
    assert export_runs.main(argv) == 0
    assert [p["project"] for p in json.loads(capsys.readouterr().out)["exported"]] == [
        "empty_project",
        PROJECT,
    ]
    assert list_entities.main(["-e", TEAM, "-e", TEAM, "--json"]) == 0
    assert [entry["entity"] for entry in json.loads(capsys.readouterr().out)] == [TEAM]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-e", TEAM, "-p", "nope"],
            "unknown project(s) in graph_denoise_team: nope (available: empty_project, spectral_denoising)",
        ),
        (["-e", TEAM, "-p", "*,nope"], "unknown project(s) in graph_denoise_team: nope"),
        (["-e", "nobody", "-p", "x"], "unknown W&B entity 'nobody'"),
        (["-e", TEAM, "--since", "yesterday"], "bad --since 'yesterday'"),
    ],
)
def test_bad_input_is_one_clear_usage_error_and_writes_nothing(wandb_env, tmp_path, argv, message):
    with pytest.raises(BadInput) as caught:
        export_runs.main([*argv, "-o", str(tmp_path / "out")])
    assert message in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_wrong_key_is_a_credentials_error_that_hides_the_key(wandb_env, tmp_path, monkeypatch):
    wrong = "0123456789abcdef" * 2 + "deadbeef"
    monkeypatch.setenv("WANDB_API_KEY", wrong)
    with pytest.raises(BadInput) as caught:
        export_runs.main(["-e", TEAM, "-p", PROJECT, "-o", str(tmp_path)])
    assert "rejected the API key from WANDB_API_KEY" in str(caught.value) and wrong not in str(caught.value)


def test_unreachable_server_fails_with_exit_1_message(wandb_env, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(Incomplete, match="did not answer"):
        export_runs.main(["-e", TEAM, "-p", PROJECT, "-o", str(tmp_path), "--timeout", "3"])


# A server that is not W&B's API, one that fails, one that refuses the key: what each tool says (issue 23).
NOT_WANDB = {
    "html-page": (html_page(200), BadInput, r"no W&B API at {url}: {url}/graphql answered with an HTML page"),
    "html-404": (html_page(404), BadInput, r"no W&B API at {url}: {url}/graphql answered HTTP 404"),
    "json-404": (HookResult(status=404), BadInput, r"no W&B API at {url}: {url}/graphql answered HTTP 404"),
    "server-500": (
        HookResult(status=500),
        Incomplete,
        r"W&B server {url} failed with HTTP 500 \(a server error\)",
    ),
    "html-502": (html_page(502), Incomplete, r"W&B server {url} failed with HTTP 502"),
    "key-403": (
        HookResult(status=403),
        BadInput,
        r"W&B rejected the API key from WANDB_API_KEY for {url} \(HTTP 403\)",
    ),
}


@pytest.mark.parametrize("mode", NOT_WANDB, ids=list(NOT_WANDB))
def test_the_login_check_says_what_the_server_answered(wandb_env, monkeypatch, mode):
    answer, error_type, message = NOT_WANDB[mode]
    with StandinServer(wandb_env.dataset) as server:
        server.not_wandb = answer
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        with pytest.raises(RunToolsError) as caught:
            list_entities.main(["--json", "--timeout", "3"])
    assert type(caught.value) is error_type  # BadInput: exit 2, Incomplete: exit 1
    assert re.search(message.format(url=re.escape(server.url)), str(caught.value)), str(caught.value)


def test_a_redirect_to_a_login_page_is_no_wandb_api(wandb_env, monkeypatch):
    with StandinServer(wandb_env.dataset) as server:
        login = f"http://user:secret@127.0.0.1:{server.port}/login?state=s3cr3t"
        server.not_wandb = HookResult(status=302, headers={"Location": login}, body=b"")
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        with pytest.raises(BadInput) as caught:
            list_entities.main(["--json", "--timeout", "3"])
    expected = (
        f"no W&B API at {server.url}: {server.url}/graphql redirects to http://127.0.0.1:{server.port}/login"
    )
    assert str(caught.value) == f"{expected} (check WANDB_BASE_URL)"


def test_a_key_the_server_rejects_says_so_with_its_status(wandb_env, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef" * 2 + "deadbeef")
    with pytest.raises(BadInput) as caught:
        list_entities.main(["--json"])
    assert str(caught.value) == f"W&B rejected the API key from WANDB_API_KEY for {wandb_env.url} (HTTP 401)"


def test_a_malformed_key_is_said_to_be_checked_locally(wandb_env, tmp_path, monkeypatch):
    """The client refuses a key of the wrong form before any request: the server saw none."""
    monkeypatch.setenv("WANDB_API_KEY", "short-key")
    with pytest.raises(BadInput) as caught:
        export_runs.main(["-e", TEAM, "-p", PROJECT, "-o", str(tmp_path / "out")])
    assert str(caught.value).startswith("the API key from WANDB_API_KEY is malformed: API key must have 40+")
    assert f"checked locally by the W&B client; nothing was sent to {wandb_env.url}" in str(caught.value)
    assert "short-key" not in str(caught.value) and wandb_env.operations == []


def test_a_wrong_url_path_is_no_wandb_api(wandb_env, monkeypatch):
    """WANDB_BASE_URL with a path the server does not serve: its 404, not a rejected key."""
    with StandinServer(wandb_env.dataset) as server:  # its own: the route it lacks is noted as unknown
        monkeypatch.setenv("WANDB_BASE_URL", f"{server.url}/wandb")
        expected = rf"no W&B API at {re.escape(server.url)}/wandb: .* answered HTTP 404"
        with pytest.raises(BadInput, match=expected):
            list_entities.main(["--json"])


def test_unreachable_says_connection_refused(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(Incomplete) as caught:
        list_entities.main(["--json", "--timeout", "2"])
    assert (
        str(caught.value) == "W&B server http://127.0.0.1:9 did not answer: unreachable (connection refused)"
    )


def test_a_server_that_stalls_the_login_check_did_not_answer_in_time(wandb_env, monkeypatch):
    with StandinServer(wandb_env.dataset) as server:
        server.request_hook = lambda info: HookResult(delay_s=6)
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        with pytest.raises(Incomplete) as caught:
            list_entities.main(["--json", "--timeout", "2"])
        server.request_hook = None
    expected = f"W&B server {server.url} did not answer: nothing within 2 s (too slow or unreachable)"
    assert str(caught.value) == expected


@pytest.mark.parametrize("operation", ["GetProjects", "Runs"])
def test_list_entities_after_the_login_a_server_error_is_exit_1(wandb_env, monkeypatch, operation):
    """A 500 while listing projects or counting runs is the server's failure (it was "unknown W&B entity",
    exit 2, or an unexpected error)."""
    with StandinServer(wandb_env.dataset) as server:
        server.request_hook = lambda info: HookResult(status=500) if info.operation == operation else None
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        with pytest.raises(Incomplete, match=rf"of {TEAM}.*: W&B server {re.escape(server.url)} "):
            list_entities.main(["-e", TEAM, "--json", "--timeout", "3"])


def test_export_without_entity_a_server_error_asking_the_default_one_is_exit_1(
    wandb_env, tmp_path, monkeypatch
):
    with StandinServer(wandb_env.dataset) as server:
        server.request_hook = lambda info: (
            HookResult(status=500) if info.operation == "GetDefaultEntity" else None
        )
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        with pytest.raises(
            Incomplete, match=rf"the key's default entity: W&B server {re.escape(server.url)} "
        ):
            export_runs.main(["-p", PROJECT, "-o", str(tmp_path / "out"), "--timeout", "3"])
    assert not (tmp_path / "out").exists()


def test_list_entities_reports_projects_with_counts(wandb_env, capsys):
    # A timeout under a second is waited for as given (it was once truncated to 0: "did not answer").
    assert list_entities.main(["--json", "--timeout", "0.5"]) == 0
    report = {entry["entity"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert set(report) == {"alice", TEAM, "vision-lab"}
    projects = {p["project"]: p for p in report[TEAM]["projects"]}
    runs = wandb_env.dataset.project(TEAM, PROJECT).runs
    assert projects[PROJECT]["runs"] == len(runs)
    assert projects[PROJECT]["finished"] == sum(r.state == "finished" for r in runs)
    newest = max(r.created_at for r in runs).replace(tzinfo=UTC)
    assert projects[PROJECT]["last_run"] == newest.isoformat()
    assert projects["empty_project"] == {
        "project": "empty_project",
        "runs": 0,
        "finished": 0,
        "last_run": None,
    }


def test_list_entities_discover_and_table(wandb_env, capsys):
    assert list_entities.main(["--discover"]) == 0
    out = capsys.readouterr().out
    assert "graph_denoise_team" in out and "vision-lab" in out and "team" in out
    assert list_entities.main(["--entity", "vision-lab"]) == 0
    assert "segmentation" in capsys.readouterr().out
