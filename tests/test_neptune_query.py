"""NeptuneQuery and query_topk.py on real offline runs, neptune-exporter archives and a stand-in server."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from shared.base.errors import BadInput, Incomplete
from shared.neptune import archive_batches
from shared.table.series import SUMMARY_TAIL
from tests.neptune_fixtures import (
    BAD_PARTS,
    BY_NAME,
    EXPORTER_SCHEMA,
    NAN,
    PROJECT,
    SPECS,
    Calls,
    Spec,
    StandInClient,
    bad_part_error,
    exporter_name,
    exporter_rows,
    numbered,
    steps,
    write_archive,
    write_as_the_exporter,
    write_bad_part,
    write_offline_project,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "neptune-tools"))

import query_topk  # noqa: E402
from query_topk import NeptuneQuery, RunInfo  # noqa: E402

# ------------------------------------------------------------------ independent reference


def reference_metric(spec: Spec, key: str, aggregation: str, n: int) -> float | None:
    if key in spec.numbers:
        values = [spec.numbers[key]]
    elif key in spec.series:
        values = [v for _, v in sorted(numbered(spec.series[key]), key=lambda p: p[0]) if math.isfinite(v)]
    else:
        return None
    if not values:
        return None
    return {
        "last": lambda: values[-1],
        "mean_last_n": lambda: sum(values[-n:]) / len(values[-n:]),
        "min": lambda: min(values),
        "max": lambda: max(values),
        "mean_all": lambda: sum(values) / len(values),
    }[aggregation]()


ARCHIVE_IDS = {spec.name: f"TEST-{index + 1}" for index, spec in enumerate(SPECS)}


def reference(
    target, *, k=5, minimize=True, constraints=None, aggregation="last", n=10, ids=None
) -> list[tuple[str, float]]:
    """Top-k by plain Python over SPECS; ties by run id (`ids`: name → id, the archive's by default)."""
    constraints, ids = constraints or {}, ids or ARCHIVE_IDS
    ranked = []
    for spec in SPECS:
        values = {key: reference_metric(spec, key, aggregation, n) for key in [target, *constraints]}
        if any(v is None for v in values.values()):
            continue
        if all(test(values[key]) for key, test in constraints.items()):
            ranked.append((spec.name, values[target]))
    ranked.sort(key=lambda r: (r[1] if minimize else -r[1], ids[r[0]]))
    return ranked[:k]


def answer(results: list[RunInfo], target: str) -> list[tuple[str, float]]:
    return [(r.name, pytest.approx(r.metrics[target])) for r in results]


# ------------------------------------------------------------------ sources made for the tests


@pytest.fixture(autouse=True)
def summary_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test starts with its own empty series-summary cache (never the user's ~/.cache)."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder / "run-tools" / "series-summaries"


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exports") / "data"
    write_archive(root)
    write_archive(root, "team/other", specs=SPECS[:2])
    return root


@pytest.fixture(scope="session")
def offline(tmp_path_factory) -> Path:
    """A project folder whose .neptune/offline holds one real offline run per spec."""
    return write_offline_project(tmp_path_factory.mktemp("offline-project"))


@pytest.fixture(params=["archive", "offline"])
def query(request, archive, offline):
    nq = NeptuneQuery(PROJECT, source=archive if request.param == "archive" else offline / ".neptune")
    yield nq
    nq.cleanup()


def ids(nq: NeptuneQuery) -> dict[str, str]:
    """name → run id of a source (offline runs have random ids: they decide ties)."""
    return {r.name: r.run_id for r in nq.fetch_runs()}


# ------------------------------------------------------------------ the seed's seven examples


def test_example_1_simple_topk(query):
    results = query.query_topk(metric_key="train/loss", k=5, minimize=True)
    assert answer(results, "train/loss") == reference("train/loss", ids=ids(query), k=5)
    assert [r.name for r in results][:3] == ["beta", "gamma", "delta"]
    lines = [f"{i}. {r.name}: loss={r.metrics['train/loss']:.4f}" for i, r in enumerate(results, 1)]
    assert lines[0] == "1. beta: loss=0.1000"


def test_example_2_constrained_query(query):
    results = query.query_topk("train/loss", k=5, minimize=True, constraints={"metrics/L0": lambda x: x < 50})
    assert answer(results, "train/loss") == reference(
        "train/loss", ids=ids(query), constraints={"metrics/L0": lambda x: x < 50}
    )
    for r in results:
        assert r.metrics["metrics/L0"] < 50 and f"{r.metrics['metrics/L0']:.2f}"


def test_example_3_multiple_constraints(query):
    constraints = {"metrics/L0": lambda x: x < 50, "metrics/L1": lambda x: x > 0.1}
    results = query.query_topk("train/loss", k=5, minimize=True, constraints=constraints)
    assert answer(results, "train/loss") == reference("train/loss", ids=ids(query), constraints=constraints)
    assert [r.name for r in results] == ["delta", "alpha", "eta"]
    assert query.last_excluded["missing metrics/L1"] == 1  # gamma


def test_example_4_other_aggregations(query):
    results = query.query_topk("train/loss", k=5, minimize=True, aggregation="mean_last_n", n_steps=10)
    assert answer(results, "train/loss") == reference(
        "train/loss", ids=ids(query), aggregation="mean_last_n", n=10
    )
    results = query.query_topk("train/loss", k=5, minimize=True, aggregation="mean_last_n", n_steps=2)
    assert answer(results, "train/loss") == reference(
        "train/loss", ids=ids(query), aggregation="mean_last_n", n=2
    )
    results = query.query_topk("train/loss", k=5, minimize=True, aggregation="min")
    assert answer(results, "train/loss") == reference("train/loss", ids=ids(query), aggregation="min")


def test_example_5_maximize(query):
    results = query.query_topk("eval/accuracy", k=10, minimize=False, aggregation="max")
    assert answer(results, "eval/accuracy") == reference(
        "eval/accuracy", ids=ids(query), k=10, minimize=False, aggregation="max"
    )
    assert results[0].name == "beta" and len(results) == len(SPECS)


def test_example_6_run_details(query):
    best = query.query_topk("train/loss", k=3, minimize=True)[0]
    keys = ["eval/accuracy", "metrics/L0", "metrics/L1", "train/loss"]
    details = query.get_run_details(best, metric_keys=keys, aggregation="last")
    assert set(details) == {"run_id", "name", "config", "metrics"}
    assert details["name"] == "beta" and details["run_id"] == best.run_id
    assert details["config"] == {
        "parameters/lr": 0.03,
        "parameters/width": 2048,
        "parameters/optimizer": "adam",
    }
    assert details["metrics"] == pytest.approx(
        {key: reference_metric(BY_NAME["beta"], key, "last", 10) for key in keys}
    )
    assert query.get_run_details(best, ["nowhere"])["metrics"]["nowhere"] is None


def test_example_7_complex_constraints(query):
    def l0_constraint(x):
        return 30 < x < 60

    def loss_threshold(x):
        return x < 0.5

    constraints = {"metrics/L0": l0_constraint, "train/loss": loss_threshold}
    results = query.query_topk(
        "eval/accuracy", k=5, minimize=False, constraints=constraints, aggregation="mean_last_n", n_steps=20
    )
    expected = reference(
        "eval/accuracy",
        ids=ids(query),
        k=5,
        minimize=False,
        constraints=constraints,
        aggregation="mean_last_n",
        n=20,
    )
    assert answer(results, "eval/accuracy") == expected and expected
    same = query.query_topk(
        "eval/accuracy", k=5, minimize=False, aggregation="mean_last_n", n_steps=20,
        where=['"metrics/L0" > 30 AND "metrics/L0" < 60', '"train/loss" < 0.5'],
    )  # fmt: skip
    assert [r.run_id for r in same] == [r.run_id for r in results]


# ------------------------------------------------------------------ sources in detail


def test_where_between_matches_callables_and_results_carry_config_and_raw_run(query):
    by_sql = query.query_topk("train/loss", where='"metrics/L0" BETWEEN 30 AND 60')
    by_callable = query.query_topk("train/loss", constraints={"metrics/L0": lambda x: 30 <= x <= 60})
    assert [(r.run_id, r.metrics) for r in by_sql] == [(r.run_id, r.metrics) for r in by_callable]
    assert by_sql[0].config["parameters/optimizer"] in {"adam", "sgd", "adamw"}
    assert by_sql[0].raw_run is not None


def test_exclusions_are_counted_and_logged(archive, offline, capsys):
    nq = NeptuneQuery(PROJECT, source=archive)
    nq.query_topk("train/loss", constraints={"metrics/L1": lambda x: x > 0})
    assert nq.last_excluded == {"missing metrics/L1": 1, "no finite value for train/loss": 1}
    assert nq.last_stats == {"considered": 7, "excluded": 2, "failed_constraints": 0, "returned": 5}
    assert "2 of 7 runs left out" in "\n".join(nq.events.notes)
    assert capsys.readouterr().err == ""  # the Python API reports as data, it prints nothing
    # The neptune client never writes NaN/inf, so offline the diverged run has no loss at all.
    nq = NeptuneQuery(PROJECT, source=offline)
    nq.query_topk("train/loss", constraints={"metrics/L1": lambda x: x > 0})
    assert nq.last_excluded == {"missing metrics/L1": 1, "missing train/loss": 1}


def test_offline_replay_reads_what_the_client_logged(offline):
    nq = NeptuneQuery(None, source=offline)
    runs = {r.name: r for r in nq.fetch_runs()}
    assert set(runs) == set(BY_NAME)
    alpha = runs["alpha"].raw_run
    assert alpha.series["eval/accuracy"] == ([0.0, 1.0, 2.0], [0.5, 0.7, 0.81])  # unnumbered points
    assert alpha.series["train/loss"][0] == [0.0, 10.0, 20.0, 30.0]
    assert alpha.attributes()["sys/tags"] == ["baseline"]
    assert runs["delta"].raw_run.series["train/loss"] == ([0.0, 20.0], [0.7, 0.32])  # NaN, inf dropped
    assert runs["alpha"].config == {
        "parameters/lr": 0.01,
        "parameters/optimizer": "adam",
        "parameters/width": 1024,
    }
    assert nq.source.runs()["state"].unique().to_list() == ["inactive"]


def test_offline_log_with_non_finite_and_broken_lines(offline, tmp_path, capsys):
    """A log written by another client (NaN kept) and cut off mid-line, as a killed process leaves it."""
    folders = (offline / ".neptune" / "offline").iterdir()
    source = next(f for f in folders if '"value": "beta"' in next(f.glob("data-*.log")).read_text())
    copy = tmp_path / ".neptune" / "offline" / source.name
    shutil.copytree(source, copy)
    log = next(copy.glob("data-*.log"))
    op = {"type": "LogFloats", "path": ["train", "loss"], "values": [{"value": NAN, "step": 1000, "ts": 1.0}]}
    with log.open("a") as out:
        out.write(json.dumps({"obj": op, "version": 10_000, "at": 1.0}) + "\n")
        out.write('{"obj": {"type": "LogFloats", "path": ["train", "lo')
    killed = time.time() - 3600  # the log was last written an hour ago: its cut line is a loss
    os.utime(log, (killed, killed))
    nq = NeptuneQuery(None, source=tmp_path)
    [run] = nq.query_topk("train/loss")
    assert run.name == "beta" and run.metrics["train/loss"] == 0.1  # the NaN at step 1000 is ignored
    assert nq.source.raw_run(run.run_id).series["train/loss"][0][-1] == 1000.0
    assert "skipped 1 unreadable operation" in "\n".join(nq.events.warnings)
    log.touch()  # written just now: the client is writing that line, nothing is lost yet
    nq = NeptuneQuery(None, source=tmp_path)
    assert [run.name for run in nq.query_topk("train/loss")] == ["beta"] and not nq.events.warnings


def test_archive_layouts_and_project_selection(archive, tmp_path):
    project_folder = archive / exporter_name(PROJECT)
    for source in (archive, project_folder):
        assert [r.name for r in NeptuneQuery(PROJECT, source=source).query_topk("train/loss", k=2)] == [
            "beta",
            "gamma",
        ]
    other = NeptuneQuery("team/other", source=archive).query_topk("train/loss")
    assert [r.name for r in other] == ["beta", "alpha"]
    with pytest.raises(BadInput, match=r"several projects.*team/other.*team/sae-sweep"):
        NeptuneQuery(None, source=archive).query_topk("train/loss")
    with pytest.raises(BadInput, match="'team/nope' is not in"):
        NeptuneQuery("team/nope", source=archive).query_topk("train/loss")
    old = write_archive(tmp_path / "old", one_file=True)
    assert answer(NeptuneQuery(None, source=old).query_topk("train/loss"), "train/loss") == reference(
        "train/loss"
    )


def test_archive_details_read_only_the_runs_files(archive, monkeypatch):
    nq = NeptuneQuery(PROJECT, source=archive)
    best = nq.query_topk("train/loss", k=1)[0]
    scanned: list[int] = []
    original = nq.source._scan
    monkeypatch.setattr(
        nq.source, "_scan", lambda files=None: scanned.append(len(files or [])) or original(files)
    )
    assert nq.get_run_details(best, ["eval/accuracy"])["metrics"]["eval/accuracy"] == pytest.approx(0.88)
    assert scanned == [1]


def test_neither_archive_nor_offline_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadInput, match=r"neither a neptune-exporter data folder .* nor a \.neptune folder"):
        NeptuneQuery(None, source=tmp_path).fetch_runs()
    with pytest.raises(BadInput, match="does not exist"):
        NeptuneQuery(None, source=tmp_path / "missing").fetch_runs()


def test_an_empty_path_is_no_folder(tmp_path, monkeypatch):
    write_archive(tmp_path)  # `""` as a Path is the current folder: it must not be read as this archive
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match="an empty path names nothing"):
        NeptuneQuery(None, source="").fetch_runs()
    with pytest.raises(BadInput, match="an empty path names nothing"):
        query_topk.main(["", "--metric", "train/loss"])


@pytest.mark.parametrize("when", ["opening", "refreshing"])
@pytest.mark.parametrize("kind", BAD_PARTS)
def test_files_that_are_not_exporter_parts_are_named(tmp_path, kind, when):
    """A folder's first part is checked on opening; an unreadable part found by a later read is named
    too, and so is another tool's parquet file among the parts (it lacks the exporter's columns)."""
    folder = write_archive(tmp_path / "data", specs=SPECS[:2]) / exporter_name(PROJECT)
    bad = folder / "zz_part_0.parquet"
    nq = NeptuneQuery(None, source=folder, cache=False)
    if when == "opening":
        for part in folder.glob("*.parquet"):
            part.unlink()
    else:
        nq.fetch_runs()
    write_bad_part(bad, kind)
    with pytest.raises(BadInput, match=bad_part_error(bad, kind)):
        nq.fetch_runs(force_refresh=True)


def test_bad_queries_are_usage_errors(archive):
    nq = NeptuneQuery(PROJECT, source=archive)
    with pytest.raises(BadInput, match=r"unknown metric 'train/los' \(did you mean 'train/loss'"):
        nq.query_topk("train/los")
    with pytest.raises(BadInput, match="quote metric paths"):
        nq.query_topk("train/loss", where="metrics/L0 < 50")
    with pytest.raises(BadInput, match="not a valid expression"):
        nq.query_topk("train/loss", where='"metrics/L0" <')
    with pytest.raises(BadInput, match="not callable"):
        nq.query_topk("train/loss", constraints={"metrics/L0": 50})
    with pytest.raises(BadInput, match="unknown run state 'finshed'"):
        nq.query_topk("train/loss", state="finshed")
    with pytest.raises(BadInput, match="tells only running"):  # an archive does not tell failed runs apart
        nq.query_topk("train/loss", state="failed")
    with pytest.raises(BadInput, match="k must be"):
        nq.query_topk("train/loss", k=0)
    with pytest.raises(ValueError, match="unknown aggregation"):
        nq.query_topk("train/loss", aggregation="median")


def test_fetch_runs_is_cached_until_forced(archive):
    nq = NeptuneQuery(PROJECT, source=archive)
    first = nq.fetch_runs()
    assert nq.fetch_runs() is first and nq.fetch_runs(force_refresh=True) is not first
    assert {r.name for r in first} == set(BY_NAME) and all(r.metrics == {} for r in first)
    assert all(r.config["parameters/width"] in (512, 1024, 2048, 4096) for r in first)
    assert nq.query_topk("train/loss", state="inactive")[0].name == "beta"  # archives have no running runs
    assert nq.query_topk("train/loss", state="active") == []


# ------------------------------------------------------------------ the series-summary cache of archives


def outcome(nq: NeptuneQuery, **query: Any) -> tuple[list[tuple], dict[str, int], dict[str, int]]:
    found = nq.query_topk(**query)
    return [(r.run_id, r.name, r.metrics, r.config) for r in found], nq.last_excluded, nq.last_stats


@pytest.mark.parametrize(
    ("aggregation", "n"),
    [("last", 10), ("min", 10), ("max", 10), ("mean_all", 10), ("mean_last_n", 1), ("mean_last_n", 3),
     ("mean_last_n", SUMMARY_TAIL), ("mean_last_n", SUMMARY_TAIL + 1)],
)  # fmt: skip
def test_cached_summaries_answer_exactly_like_the_archive(
    archive, summary_cache, monkeypatch, aggregation, n
):
    query = {
        "metric_key": "eval/accuracy", "k": 10, "minimize": False, "aggregation": aggregation, "n_steps": n,
        "constraints": {"train/loss": lambda x: x < 0.9}, "where": '"metrics/L0" < 80',
    }  # fmt: skip
    expected = outcome(NeptuneQuery(PROJECT, source=archive, cache=False), **query)
    assert expected[0] and expected[1]  # some runs rank, some are left out
    assert not summary_cache.exists()
    assert outcome(NeptuneQuery(PROJECT, source=archive), **query) == expected  # cold: reads, stores
    cached = n <= SUMMARY_TAIL  # a longer mean_last_n window is always read from the archive
    assert summary_cache.exists() == cached
    warm = NeptuneQuery(PROJECT, source=archive)
    scans: list[Any] = []
    original = warm.source._scan
    monkeypatch.setattr(warm.source, "_scan", lambda files=None: scans.append(files) or original(files))
    assert outcome(warm, **query) == expected
    assert (None not in scans) == cached  # warm: only the winners' own files (their attributes)
    inactive = {**query, "state": "inactive"}  # a run subset: answered from the cache as well
    assert outcome(warm, **inactive) == outcome(
        NeptuneQuery(PROJECT, source=archive, cache=False), **inactive
    )


def test_a_changed_archive_is_never_answered_from_old_summaries(tmp_path, summary_cache):
    root = write_archive(tmp_path / "data")
    folder = root / exporter_name(PROJECT)

    def best(**options: Any) -> list[tuple[str, float]]:
        found = NeptuneQuery(PROJECT, source=root, **options).query_topk("train/loss", k=3)
        return [(r.name, r.metrics["train/loss"]) for r in found]

    assert best() == best() == best(cache=False) == reference("train/loss", k=3)
    old_entries = sorted(summary_cache.rglob("*.parquet"))
    beta = BY_NAME["beta"]  # rewritten in place: its loss now ends at 0.8 (and the file is smaller)
    rewritten = Spec("beta", beta.params, beta.series | {"train/loss": steps(0.9, 0.8)}, beta.numbers)
    part = folder / f"{exporter_name('TEST-2')}_part_0.parquet"
    pq.write_table(
        pa.Table.from_pylist(exporter_rows(PROJECT, "TEST-2", rewritten), schema=EXPORTER_SCHEMA), part
    )
    assert best() == best(cache=False) and best()[0][0] == "gamma"
    assert old_entries and not any(entry.exists() for entry in old_entries)  # the old state's are deleted
    added = Spec("theta", {"lr": 0.1, "width": 8, "optimizer": "sgd"}, {"train/loss": steps(0.01)})
    part = folder / f"{exporter_name('TEST-8')}_part_0.parquet"
    pq.write_table(
        pa.Table.from_pylist(exporter_rows(PROJECT, "TEST-8", added), schema=EXPORTER_SCHEMA), part
    )
    assert best()[0] == ("theta", 0.01) and best() == best(cache=False)
    part.unlink()
    assert best()[0][0] == "gamma"


def test_the_summary_cache_can_be_off_and_never_fails_a_query(
    archive, summary_cache, monkeypatch, tmp_path, capsys
):
    warnings: list[str] = []

    def best_two(**options: Any) -> list[str]:
        query = NeptuneQuery(PROJECT, source=archive, **options)
        names = [r.name for r in query.query_topk("train/loss", k=2)]
        warnings.extend(query.events.warnings)
        return names

    assert best_two(cache=False) == ["beta", "gamma"] and not summary_cache.exists()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert best_two() == ["beta", "gamma"]
    assert "could not write the summary cache" in "\n".join(warnings)


# ------------------------------------------------------------------ the live server, through a stand-in client


@pytest.fixture
def live(monkeypatch):
    calls = Calls()
    states = {"TEST-2": "Active"}
    monkeypatch.setitem(sys.modules, "neptune", StandInClient(calls, states))
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "token-for-tests")
    nq = NeptuneQuery(PROJECT, workers=3)
    yield nq, calls
    nq.cleanup()


def test_live_last_uses_the_runs_table_only(live):
    nq, calls = live
    results = nq.query_topk("train/loss", constraints={"metrics/L0": lambda x: x < 50})
    assert answer(results, "train/loss") == reference(
        "train/loss", constraints={"metrics/L0": lambda x: x < 50}
    )
    assert (calls.tables, calls.opened, calls.fetched) == (1, [], [])
    assert nq.last_excluded == {"missing train/loss": 1}  # zeta never reached the server with a loss


def test_live_series_are_fetched_once_per_run_and_key_concurrently(live):
    nq, calls = live
    constraints = {"metrics/L0": lambda x: x < 60, "metrics/L1": lambda x: x > 0.1}
    results = nq.query_topk("train/loss", constraints=constraints, aggregation="mean_last_n", n_steps=2)
    expected = reference("train/loss", constraints=constraints, aggregation="mean_last_n", n=2)
    assert answer(results, "train/loss") == expected
    ranked_runs = {"TEST-1", "TEST-2", "TEST-4", "TEST-5", "TEST-7"}  # every required path in the table
    assert set(calls.fetched) == {(r, k) for r in ranked_runs for k in ("train/loss", "metrics/L0")}
    assert len(calls.fetched) == len(set(calls.fetched)) and sorted(calls.opened) == sorted(ranked_runs)
    nq.query_topk("train/loss", constraints=constraints, aggregation="min")  # the same series: all cached
    nq.query_topk("train/loss", aggregation="max", state="active")
    assert calls.tables == 1 and len(calls.fetched) == 10 and len(calls.opened) == 5
    assert [r.name for r in nq.query_topk("train/loss", state="active")] == ["beta"]
    details = nq.get_run_details(results[0], ["eval/accuracy"], aggregation="mean_all")
    assert details["metrics"]["eval/accuracy"] == pytest.approx(
        reference_metric(BY_NAME[results[0].name], "eval/accuracy", "mean_all", 10)
    )
    assert len(calls.opened) == 5  # the run was already open
    nq.fetch_runs(force_refresh=True)
    assert calls.tables == 2
    nq.cleanup()
    assert calls.stopped == 5 + 1  # every opened run and the project handle


def test_live_raw_run_opens_lazily_and_failed_fetches_fail_the_query(live):
    nq, calls = live
    best = nq.query_topk("train/loss")[0]
    assert calls.opened == []
    assert best.raw_run["train/loss"] is not None and calls.opened == [best.run_id]
    calls.fail_on = "TEST-5"
    with pytest.raises(
        Incomplete, match=r"could not fetch 1 series .*TEST-5/train/loss: ConnectionError: server went away"
    ):
        nq.query_topk("train/loss", aggregation="max")


def test_token_comes_from_argument_environment_or_dotenv(monkeypatch, tmp_path):
    from shared.neptune.auth import neptune_token

    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("shared.base.settings.TOOLS_ROOT", tmp_path / "no-tools-root")
    expected = (
        "no Neptune API token found: pass --api-token, set NEPTUNE_API_TOKEN, or put NEPTUNE_API_TOKEN=... "
        "in a .env file"
    )
    with pytest.raises(BadInput) as error:
        neptune_token()
    assert str(error.value) == expected
    (tmp_path / ".env").write_text("NEPTUNE_API_TOKEN=from-dotenv-1234\n")
    assert neptune_token() == "from-dotenv-1234"
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "from-env-1234")
    assert neptune_token() == "from-env-1234" and neptune_token("from-arg-1234") == "from-arg-1234"


# ------------------------------------------------------------------ as a module and as a command


def test_importing_the_module_does_no_work_and_never_imports_neptune(archive):
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / "neptune-tools")!r})
from query_topk import NeptuneQuery
nq = NeptuneQuery("team/sae-sweep")  # a live query object: nothing is opened before the first query
assert nq._source is None
found = NeptuneQuery("team/sae-sweep", source={str(archive)!r}).query_topk("train/loss", k=1)
assert found[0].name == "beta", found
assert "neptune" not in sys.modules, "neptune was imported"
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def uv_run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    command = ["uv", "run", str(ROOT / "neptune-tools" / "query_topk.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.mark.slow
def test_cli_help_json_table_and_errors(archive, offline, tmp_path, summary_cache):
    result = uv_run("--help")
    assert result.returncode == 0 and "examples:" in result.stdout and "--where EXPR" in result.stdout
    assert "--no-cache" in result.stdout

    query = [str(archive), "--project", PROJECT, "--metric", "train/loss", "--where", '"metrics/L0" < 50']
    expected = reference("train/loss", constraints={"metrics/L0": lambda x: x < 50})
    for options, cached in ((["--no-cache"], False), ([], True), ([], True)):  # no cache; cold; warm
        result = uv_run(*query, "--json", *options)
        assert result.returncode == 0, result.stderr
        found = json.loads(result.stdout)
        assert [(r["name"], pytest.approx(r["metrics"]["train/loss"])) for r in found] == expected
        assert summary_cache.exists() == cached
    assert set(found[0]) == {"run_id", "name", "config", "metrics"} and "metrics/L0" in found[0]["metrics"]

    out = tmp_path / "best.json"
    result = uv_run(
        str(offline),
        "--metric",
        "eval/accuracy",
        "--maximize",
        "-k",
        "2",
        "--details",
        "train/loss",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "eval/accuracy" in result.stdout and "beta" in result.stdout and "train/loss" in result.stdout
    assert [r["name"] for r in json.loads(out.read_text())] == ["beta", "eta"]

    for bad in (["--where", '"metrics/L0" <'], ["--where", "metrics/L0 < 50"], ["--metric", "nope"]):
        result = uv_run(str(archive), "--project", PROJECT, "--metric", "train/loss", *bad)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1

    result = uv_run("no/such/folder/here", "--metric", "train/loss")
    assert result.returncode == 2 and "neither an existing folder nor a workspace/project" in result.stderr


@pytest.mark.parametrize("cache", [True, False])
def test_a_run_without_any_queried_path_still_counts(archive, summary_cache, cache):
    """A pass reads only the row groups of the wanted paths; a run whose file has none of them is found
    by its sys/id row and counted as missing the metric, first query and repeated alike."""
    for _ in range(2):
        nq = NeptuneQuery(PROJECT, source=archive, cache=cache)
        assert [r.name for r in nq.query_topk("metrics/L1", k=10)]
        assert nq.last_excluded == {"missing metrics/L1": 1}
        assert nq.last_stats["considered"] == 7


def test_tails_read_a_batch_of_runs_at_a_time_answer_like_one_pass(tmp_path, summary_cache, monkeypatch):
    """A mean_last_n pass holds one batch of runs' points at a time: same answers with a batch per run
    file, and with a run's series spread over two batches (a part named after another run)."""
    root = write_as_the_exporter(tmp_path / "data", parts=2)
    query = {"metric_key": "train/loss", "k": 10, "aggregation": "mean_last_n", "n_steps": 3}
    expected = outcome(NeptuneQuery(PROJECT, source=root, cache=False), **query)
    assert expected[0]
    monkeypatch.setattr(archive_batches, "BATCH_FILES", 1)
    assert outcome(NeptuneQuery(PROJECT, source=root, cache=False), **query) == expected
    folder = root / exporter_name(PROJECT)
    part = sorted(folder.glob("*_part_1.parquet"))[-1]  # a run's series (part 0 holds its attributes)
    table = pq.read_table(part)
    loss = pc.equal(table["attribute_path"], "train/loss")
    start = pc.index(loss, True).as_py()
    first = pc.and_(loss, pa.array([row < start + 2 for row in range(table.num_rows)]))
    assert 0 < pc.sum(first).as_py() < pc.sum(loss).as_py()
    pq.write_table(table.filter(first), folder / "0-split_part_0.parquet")  # read in the first batch
    pq.write_table(table.filter(pc.invert(first)), part)
    assert outcome(NeptuneQuery(PROJECT, source=root, cache=False), **query) == expected


@pytest.mark.parametrize("aggregation", ["last", "max", "mean_last_n"])
def test_an_integer_attribute_ranks_and_constrains(archive, summary_cache, aggregation):
    """parameters/width is an int attribute: the streamed pass reads no int column and summarises the
    series without a finite float again with it. First query, repeated and without the cache."""
    query = {"metric_key": "parameters/width", "k": 10, "minimize": False, "aggregation": aggregation}
    query |= {"where": '"parameters/width" >= 1024 AND "metrics/L0" > 0'}
    with_l0 = [
        (f"TEST-{index + 1}", spec)
        for index, spec in enumerate(SPECS)
        if any(math.isfinite(value) for _, value in spec.series.get("metrics/L0", []))
    ]
    expected = sorted(
        (
            (run_id, spec.name, float(spec.params["width"]))
            for run_id, spec in with_l0
            if spec.params["width"] >= 1024
        ),
        key=lambda run: (-run[2], run[0]),
    )
    assert len(expected) >= 3

    def ranked(**options: Any) -> list[tuple[str, str, float]]:
        found = NeptuneQuery(PROJECT, source=archive, **options).query_topk(**query)
        return [(r.run_id, r.name, r.metrics["parameters/width"]) for r in found]

    assert ranked() == ranked() == ranked(cache=False) == expected
