"""Neptune 3 archives (neptune-exporter's neptune3 exporter): runs by custom run id, experiments, forks.

Each run's file holds its own points only; Neptune answered a fork over its lineage (its ancestors' points
up to its fork step, then its own). The answers are compared with a plain computation of each lineage."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from shared.base.errors import BadInput
from shared.base.events import Events
from shared.query.neptune import NeptuneQuery
from tests.current_data import load_script
from tests.neptune_fixtures import CREATED, ForkedRun, write_neptune3_archive

QUERY = Path(__file__).resolve().parent.parent / "neptune-tools" / "query_topk.py"
query_topk = load_script("query_topk", "neptune-tools")
export_runs = load_script("export_runs", "neptune-tools")


def curve(start: float, stop: float, values: list[float], every: float = 1.0) -> list[tuple[float, float]]:
    return [(start + i * every, v) for i, v in enumerate(values) if start + i * every <= stop]


# exp-a: a chain root → a-2 (at 4) → a-3 (at 7.5, fractional, forked from a-2 after a-2's own start);
# exp-b: a root with two branches at 2 and at 5; exp-c: a fork of a run missing from the archive; exp-d: alone.
RUNS = [
    ForkedRun("a-1", "exp-a", {"loss": curve(0, 9, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3])}),
    ForkedRun("a-2", "exp-a", {"loss": curve(5, 9, [0.2, 0.19, 0.18, 0.17, 0.16])}, "a-1", 4.0),
    ForkedRun("a-3", "exp-a", {"loss": [(7.75, 0.15), (8.0, 0.14), (9.0, 0.13)]}, "a-2", 7.5, is_head=True),
    ForkedRun("b-1", "exp-b", {"loss": curve(0, 6, [2.0, 1.5, 1.2, 1.0, 0.9, 0.85, 0.8])}, is_head=True),
    ForkedRun("b-2", "exp-b", {"loss": curve(3, 6, [0.5, 0.4, 0.3, 0.2])}, "b-1", 2.0),
    ForkedRun("b-3", "exp-b", {"loss": curve(6, 8, [0.6, 0.55, 0.5])}, "b-1", 5.0),
    ForkedRun("c-2", "exp-c", {"loss": curve(10, 12, [0.05, 0.04, 0.03])}, "c-1", 9.0, is_head=True),
    ForkedRun("d-1", "exp-d", {"loss": curve(0, 3, [0.5, 0.3, 0.25, 0.22])}, is_head=True),
]


def plain_lineage(runs: list[ForkedRun], run_id: str, key: str = "loss") -> list[tuple[float, float]]:
    """A run's points over its lineage, computed the plain way: walk up the parents, each ancestor giving
    its points up to the smallest fork step met so far, a step kept from the nearest run that has it."""
    by_id = {run.custom_id: run for run in runs}
    points: dict[float, float] = {}
    run, until = by_id[run_id], math.inf
    while True:
        for step, value in run.series.get(key, []):
            if step <= until and step not in points:
                points[step] = value
        if run.parent is None or run.parent not in by_id:
            break
        until = min(until, run.fork_step)
        run = by_id[run.parent]
    return sorted(points.items())


def expected(runs: list[ForkedRun], aggregation: str, lineage: bool = True) -> dict[str, float]:
    answers = {}
    for run in runs:
        values = [
            v for _, v in (plain_lineage(runs, run.custom_id) if lineage else sorted(run.series["loss"]))
        ]
        answers[run.custom_id] = {
            "last": values[-1],
            "min": min(values),
            "max": max(values),
            "mean_all": statistics.fmean(values),
            "mean_last_n": statistics.fmean(values[-4:]),  # n_steps=4: reaches into the inherited part
        }[aggregation]
    return answers


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return write_neptune3_archive(tmp_path / "data", RUNS)


@pytest.mark.parametrize("aggregation", ["last", "min", "max", "mean_all", "mean_last_n"])
@pytest.mark.parametrize("lineage", [True, False])
def test_every_aggregation_over_each_runs_lineage(archive: Path, aggregation: str, lineage: bool) -> None:
    events = Events()
    with NeptuneQuery(source=archive, events=events, lineage=lineage, cache=False) as query:
        answer = query.query_topk("loss", k=100, aggregation=aggregation, n_steps=4)
    got = {run.run_id: run.metrics["loss"] for run in answer}
    assert got == pytest.approx(expected(RUNS, aggregation, lineage))
    missing = [w for w in events.warnings if "c-1" in w]
    assert len(missing) == (1 if lineage else 0), events.warnings
    if lineage:
        assert "c-2 forked from c-1, which is not in the source" in missing[0]


def test_mean_all_of_a_fork_counts_its_inherited_start(archive: Path) -> None:
    """The issue's case: a fork ranked by its own points skips the (worse) start it inherited."""
    with NeptuneQuery(source=archive, cache=False) as query:
        a3 = query.metrics_for(["a-3"], ["loss"], "mean_all")["a-3"]["loss"]
    inherited = [1.0, 0.9, 0.8, 0.7, 0.6, 0.2, 0.19, 0.18, 0.15, 0.14, 0.13]  # a-1 to 4, a-2 to 7.5, own
    assert a3 == pytest.approx(statistics.fmean(inherited))


def test_experiments_rank_their_heads_over_the_head_lineage(archive: Path) -> None:
    with NeptuneQuery(source=archive, experiments=True, cache=False) as query:
        answer = query.query_topk("loss", k=10, aggregation="mean_all")
    want = expected(RUNS, "mean_all")
    heads = {run.custom_id: run.experiment for run in RUNS if run.is_head}
    assert [(r.run_id, r.name) for r in answer] == sorted(
        ((run_id, heads[run_id]) for run_id in heads), key=lambda item: want[item[0]]
    )
    assert {r.run_id: r.metrics["loss"] for r in answer} == pytest.approx({h: want[h] for h in heads})


def test_curves_carry_the_inherited_part_and_say_where_it_ends(archive: Path) -> None:
    with NeptuneQuery(source=archive, cache=False) as query:
        curves = query.curves(["a-3", "b-2", "d-1"], "loss")
        forks = query.fork_steps(["a-3", "b-2", "d-1"])
    for run_id in ("a-3", "b-2", "d-1"):
        steps, values = curves[run_id]
        want = plain_lineage(RUNS, run_id)
        assert steps == [step for step, _ in want]
        assert values == pytest.approx([value for _, value in want])
    assert forks == {"a-3": 7.5, "b-2": 2.0}
    with NeptuneQuery(source=archive, lineage=False, cache=False) as query:
        assert query.curves(["a-3"], "loss")["a-3"][0] == [7.75, 8.0, 9.0]
        assert query.fork_steps(["a-3"]) == {}


def test_a_cycle_in_the_forking_attributes_is_an_error_naming_its_runs(tmp_path: Path) -> None:
    runs = [
        ForkedRun("x-1", "exp-x", {"loss": curve(0, 2, [1.0, 0.9, 0.8])}, "x-3", 1.0),
        ForkedRun("x-2", "exp-x", {"loss": curve(2, 4, [0.7, 0.6, 0.5])}, "x-1", 1.0),
        ForkedRun("x-3", "exp-x", {"loss": curve(4, 6, [0.4, 0.3, 0.2])}, "x-2", 3.0),
    ]
    archive = write_neptune3_archive(tmp_path / "data", runs)
    with NeptuneQuery(source=archive, cache=False) as query, pytest.raises(BadInput, match="cycle") as error:
        query.query_topk("loss")
    assert all(run in str(error.value) for run in ("x-1", "x-2", "x-3"))
    result = subprocess.run(
        [sys.executable, str(QUERY), str(archive), "--metric", "loss"], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "cycle" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, str(QUERY), str(archive), "--metric", "loss", "--no-lineage"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_cli_lineage_by_default_no_lineage_and_experiments(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def ask(*flags: str) -> dict[str, float]:
        argv = [
            str(archive),
            "--metric",
            "loss",
            "-k",
            "20",
            "--aggregation",
            "mean_all",
            "--json",
            "--no-cache",
        ]
        assert query_topk.main([*argv, *flags]) == 0
        return {row["run_id"]: row["metrics"]["loss"] for row in json.loads(capsys.readouterr().out)}

    assert ask() == pytest.approx(expected(RUNS, "mean_all"))
    assert ask("--no-lineage") == pytest.approx(expected(RUNS, "mean_all", lineage=False))
    heads = {run.custom_id for run in RUNS if run.is_head}
    assert ask("--experiments") == pytest.approx(
        {h: v for h, v in expected(RUNS, "mean_all").items() if h in heads}
    )


def test_export_keeps_experiment_and_fork_columns_and_own_points(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert export_runs.main(["--source", str(archive), "-o", str(out), "--include-history"]) == 0
    (runs_file,) = out.rglob("*_runs.parquet")
    runs = pl.read_parquet(runs_file).sort("id")
    want = {run.custom_id: (run.experiment, run.is_head, run.parent, run.fork_step) for run in RUNS}
    got = {
        row["id"]: (row["experiment"], row["is_head"], row["parent_run_id"], row["fork_step"])
        for row in runs.iter_rows(named=True)
    }
    assert got == want
    depths = dict(runs.select("id", "fork_depth").iter_rows())
    assert depths == {"a-1": None, "a-2": 1, "a-3": 2, "b-1": None, "b-2": 1, "b-3": 1, "c-2": 1, "d-1": None}
    # the other sys/* values: creation and modification times (the archive has no sys/state: finished)
    order = {run.custom_id: index for index, run in enumerate(RUNS)}
    for row in runs.iter_rows(named=True):
        assert row["created_at"] == CREATED + timedelta(hours=order[row["id"]])
        assert row["heartbeat_at"] > row["created_at"] and row["state"] == "finished"
    (history_file,) = out.rglob("*_history.parquet")
    history = pl.read_parquet(history_file)
    for run in RUNS:  # each point once: a run's own
        assert history.filter(pl.col("run_id") == run.custom_id).height == len(run.series["loss"])


def test_wandb_offline_forks_fill_the_same_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B's `fork_from` is in an offline log's run record (its branch point): the same columns; a rewind
    (`resume_from`) names the run itself and is no fork; W&B has no experiments."""
    from shared.wandb.offline import read_run_log
    from tests.offline_client import offline_wandb

    with offline_wandb(monkeypatch, tmp_path / "client") as wandb:
        for run_id, fork_from, start in (("parent", None, 0), ("child", "parent?_step=2", 3)):
            run = wandb.init(project="p", entity="e", id=run_id, dir=tmp_path, fork_from=fork_from)
            for step in range(start, start + 3):
                run.log({"loss": 1.0 / (step + 1)}, step=step)
            run.finish()
    records = {
        (record := read_run_log(log).record).id: record
        for log in (tmp_path / "wandb").glob("offline-run-*/*.wandb")
    }
    assert (records["child"].parent_run_id, records["child"].fork_step) == ("parent", 2.0)
    assert (records["parent"].parent_run_id, records["parent"].fork_step) == (None, None)
    assert records["child"].experiment is None and records["child"].is_head is None


def test_plot_draws_a_forks_inherited_part(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--plot: a fork's inherited part dotted up to its first own point, its own points solid."""
    import matplotlib.axes

    drawn: list[tuple[list[float], str]] = []
    original = matplotlib.axes.Axes.plot

    def plot(self, x, *args, **kwargs):
        if kwargs.get("color") is not None and len(args) == 1:  # the curves, not the markers
            drawn.append(([float(v) for v in x], kwargs.get("linestyle", "-")))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    out = tmp_path / "curves.png"
    argv = [str(archive), "--metric", "loss", "-k", "8", "--aggregation", "mean_all", "--plot", str(out)]
    assert query_topk.main([*argv, "--no-cache"]) == 0
    assert out.stat().st_size > 0
    want = expected(RUNS, "mean_all")
    best = sorted(want, key=lambda run: (want[run], run))
    present = {run.custom_id for run in RUNS}
    forks = {run.custom_id: run.fork_step if run.parent in present else None for run in RUNS}
    for run_id in best:
        steps = [step for step, _ in plain_lineage(RUNS, run_id)]
        if forks[run_id] is None:
            assert (steps, "-") in drawn
        else:
            own = next(i for i, step in enumerate(steps) if step > forks[run_id])
            assert (steps[: own + 1], ":") in drawn and (steps[own:], "-") in drawn


def test_the_forked_sample_experiments(capsys: pytest.CaptureFixture[str]) -> None:
    """samples/neptune/forks (samples/make_samples.py): two experiments, a chain with a fractional fork."""
    sample = Path(__file__).resolve().parent.parent / "samples" / "neptune" / "forks"
    argv = [str(sample), "--metric", "train/loss", "--aggregation", "mean_all", "--json", "--no-cache"]
    assert query_topk.main([*argv, "--experiments"]) == 0
    heads = {row["run_id"]: row["name"] for row in json.loads(capsys.readouterr().out)}
    assert heads == {"lr-low-warm": "lr-sweep", "w-512": "width-sweep"}
    with NeptuneQuery(source=sample, cache=False) as query:
        assert query.fork_steps(["lr-low", "lr-low-warm", "w-512", "w-256"]) == {
            "lr-low": 30.0,
            "lr-low-warm": 45.5,
            "w-512": 20.0,
        }
        steps, _ = query.curves(["lr-low-warm"], "train/loss")["lr-low-warm"]
    assert steps == [float(step) for step in range(46)] + [45.75] + [float(step) for step in range(46, 60)]


def test_answers_say_whose_points_a_fork_inherits(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--details, the table and the JSON name a fork's parent and fork step (its metrics include them);
    not with --no-lineage, nor for a run whose parent is missing."""
    with NeptuneQuery(source=archive, cache=False) as query:
        answer = {r.run_id: r for r in query.query_topk("loss", k=20, aggregation="mean_all")}
    assert {run_id: r.forked_from for run_id, r in answer.items() if r.forked_from} == {
        "a-2": "a-1@4",
        "a-3": "a-2@7.5",
        "b-2": "b-1@2",
        "b-3": "b-1@5",
    }
    assert (
        "forked_from" not in answer["a-1"].to_dict() and answer["a-3"].to_dict()["forked_from"] == "a-2@7.5"
    )
    argv = [str(archive), "--metric", "loss", "-k", "20", "--no-cache", "--details", "loss"]
    assert query_topk.main(argv) == 0
    table = capsys.readouterr().out
    assert "forked from" in table and "a-2@7.5" in table
    assert query_topk.main([*argv, "--no-lineage"]) == 0
    assert "forked from" not in capsys.readouterr().out


def test_report_curves_rebuild_a_forks_lineage_from_the_export(archive: Path, tmp_path: Path) -> None:
    """analyze --report's curves: a fork's curve is its ancestors' history rows up to its fork step (from
    the export's parent_run_id and fork_step), then its own; the step up to which it is inherited is
    returned for the dotted part. History steps are whole numbers (7.75 is step 7)."""
    from shared.analysis.report import top_curves
    from shared.table.exports import open_runs_file

    out = tmp_path / "out"
    assert export_runs.main(["--source", str(archive), "-o", str(out), "--include-history"]) == 0
    (runs_file,) = out.rglob("*_runs.parquet")
    runs = pl.scan_parquet(runs_file)
    top = runs.select("entity", "project", "id", "name", "metric_loss").sort("id").collect()
    curves, inherited, note = top_curves(
        [open_runs_file(runs_file, with_history=True)], top, "metric_loss", runs
    )
    floored = [
        ForkedRun(
            run.custom_id,
            run.experiment,
            {
                "loss": list(
                    {
                        math.floor(step): (math.floor(step), value) for step, value in run.series["loss"]
                    }.values()
                )
            },
            run.parent,
            run.fork_step,
        )
        for run in RUNS
    ]
    present = {run.custom_id for run in RUNS}
    for (label, steps, values, _), fork, run in zip(
        curves, inherited, sorted(RUNS, key=lambda r: r.custom_id), strict=True
    ):
        want = plain_lineage(floored, run.custom_id)
        assert label == run.custom_id
        assert steps == [step for step, _ in want] and values == pytest.approx([value for _, value in want])
        assert fork == (run.fork_step if run.parent in present else None)
    assert "ancestors' points (dotted)" in note


def test_an_export_folder_is_queried_over_lineages_like_the_archive(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """query_topk --source on our own export of a Neptune 3 archive: the fork columns rebuild each lineage
    (history steps are whole numbers: the archive's 7.75 is step 7 there)."""
    out = tmp_path / "out"
    assert export_runs.main(["--source", str(archive), "-o", str(out), "--include-history"]) == 0
    capsys.readouterr()  # the export's summary
    floored = [
        ForkedRun(
            run.custom_id,
            run.experiment,
            {"loss": list({math.floor(s): (math.floor(s), v) for s, v in run.series["loss"]}.values())},
            run.parent,
            run.fork_step,
            run.is_head,
        )
        for run in RUNS
    ]
    for flags, want in (
        ([], expected(floored, "mean_all")),
        (["--no-lineage"], expected(floored, "mean_all", False)),
    ):
        argv = ["--source", str(out), "--metric", "loss", "-k", "20", "--aggregation", "mean_all", "--json"]
        assert query_topk.main([*argv, *flags]) == 0
        got = {row["run_id"]: row["metrics"]["loss"] for row in json.loads(capsys.readouterr().out)}
        assert got == pytest.approx(want)
    assert query_topk.main(["--source", str(out), "--metric", "loss", "--experiments", "--json"]) == 0
    heads = {row["run_id"] for row in json.loads(capsys.readouterr().out)}
    assert heads == {run.custom_id for run in RUNS if run.is_head}


def test_experiments_of_a_source_without_any_is_bad_input(tmp_path: Path) -> None:
    """A Neptune 2 archive has no experiments: --experiments is a usage error, not an empty answer."""
    from tests.neptune_fixtures import write_archive

    archive = write_archive(tmp_path / "data")
    with (
        NeptuneQuery(source=archive, experiments=True, cache=False) as query,
        pytest.raises(BadInput, match="no run of this source heads an experiment"),
    ):
        query.query_topk("train/loss")


def test_cached_queries_answer_over_lineages_too(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary cache (default on) changes nothing: a cold and a warm query give the plain answers, and
    so do the experiments' heads. The first query's pass finds the forked runs and keeps only those."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    want = expected(RUNS, "mean_all")
    heads = {run.custom_id for run in RUNS if run.is_head}
    for _ in ("cold", "warm"):
        with NeptuneQuery(source=archive) as query:
            got = {
                r.run_id: r.metrics["loss"] for r in query.query_topk("loss", k=100, aggregation="mean_all")
            }
            source = query.source
        assert got == pytest.approx(want)
        forks = source._stored_lineage("forks")  # type: ignore[union-attr]
        assert forks is not None
        assert {run: (f["parent_run_id"], f["fork_step"]) for run, f in forks.items()} == {
            run.custom_id: (run.parent, run.fork_step) for run in RUNS if run.parent
        }
        with NeptuneQuery(source=archive, experiments=True) as query:
            answer = query.query_topk("loss", k=100, aggregation="mean_all")
        assert {r.run_id: r.metrics["loss"] for r in answer} == pytest.approx({h: want[h] for h in heads})
