"""analyze_runs.py: rankings, group statistics and pivots checked against plain-Python expectations."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest

from shared.base.errors import BadInput
from tests.current_data import Expected, expected, has_value, load_script, make_runs, write_export

ROOT = Path(__file__).resolve().parent.parent
analyze_runs = load_script("analyze_runs")
aggregate_runs = load_script("aggregate_runs")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, list[Expected]]:
    folder = tmp_path_factory.mktemp("export")
    records = make_runs((0, 1))
    return write_export(folder, records), [expected(r) for r in records]


@pytest.fixture(scope="module")
def unified(export, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("analysis") / "unified.parquet"
    aggregate_runs.main([str(export[0]), "-o", str(out), "--protocol", "all"])
    return out


def analyze(capsys, *args: str) -> tuple[str, str]:
    capsys.readouterr()
    assert analyze_runs.main([*args]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def as_json(capsys, *args: str) -> list[dict]:
    out, _ = analyze(capsys, *args, "--format", "json")
    return json.loads(out)


def test_top_ranks_the_lowest_mse_and_leaves_out_null_and_nan(capsys, export):
    path, runs = export
    rows = as_json(capsys, str(path), "--top", "15")
    valid = sorted((r for r in runs if has_value(r.mse)), key=lambda r: (r.mse, r.id))
    assert [r["id"] for r in rows] == [r.id for r in valid[:15]]
    assert [r["rank"] for r in rows] == list(range(1, 16))
    assert rows[0]["metric_test_mse"] == pytest.approx(valid[0].mse)
    assert list(rows[0])[:4] == ["rank", "id", "name", "metric_test_mse"]
    assert {"architecture", "dataset", "k", "stage", "state"} <= set(rows[0])
    assert (rows[0]["architecture"], rows[0]["dataset"], rows[0]["k"]) == (
        valid[0].model,
        valid[0].graph,
        valid[0].k,
    )
    _, err = analyze(capsys, str(path))
    missing = sum(1 for r in runs if not has_value(r.mse))
    assert (
        f"{missing} of {len(runs)} matching runs have no metric_test_mse (null or NaN) and are left out"
        in err
    )


def test_descending_accuracy_with_filter_and_state(capsys, export):
    path, runs = export
    rows = as_json(
        capsys,
        str(path),
        "--metric",
        "test_accuracy",
        "--descending",
        "--filter",
        "stage3",
        "--state",
        "finished",
    )
    chosen = sorted(
        (r for r in runs if "stage3" in r.name and r.state == "finished" and has_value(r.accuracy)),
        key=lambda r: (-r.accuracy, r.id),
    )
    assert [r["id"] for r in rows] == [r.id for r in chosen[:10]]


def expected_groups(runs: list[Expected], key, metric="mse") -> dict[tuple, list[float]]:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for run in runs:
        value = getattr(run, metric)
        if has_value(value):
            groups[key(run)].append(value)
    return groups


def test_group_by_counts_only_runs_with_a_value_best_mean_first(capsys, export):
    path, runs = export
    rows = as_json(capsys, str(path), "--group-by", "architecture,k")
    groups = expected_groups(runs, lambda r: (r.model, r.k))
    order = sorted(groups, key=lambda g: (statistics.mean(groups[g]), g))
    assert [(r["architecture"], r["k"]) for r in rows] == order
    for row in rows:
        values = groups[row["architecture"], row["k"]]
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(statistics.mean(values))
        assert row["std"] == pytest.approx(statistics.stdev(values))
        assert (row["min"], row["max"]) == (pytest.approx(min(values)), pytest.approx(max(values)))


def expected_pivot(runs: list[Expected], descending: bool = False, metric: str = "mse"):
    cells = expected_groups(runs, lambda r: (r.model, r.graph), metric)
    pick = max if descending else min
    best = {cell: pick(values) for cell, values in cells.items()}
    rank = {}
    for graph in {g for _, g in cells}:
        column = sorted((v for (m, g), v in best.items() if g == graph), reverse=descending)
        for (model, g), value in best.items():
            if g == graph:
                rank[model, g] = column.index(value) + 1
    models = {m for m, _ in cells}
    mean_rank = {m: statistics.mean(rank[c] for c in rank if c[0] == m) for m in models}
    return cells, best, rank, sorted(models, key=lambda m: (mean_rank[m], m))


@pytest.mark.parametrize("descending", [False, True])
def test_pivot_architecture_by_dataset(capsys, export, descending):
    path, runs = export
    metric = "metric_test_accuracy" if descending else "metric_test_mse"
    args = ["--descending"] if descending else []
    rows = as_json(capsys, str(path), "--pivot", "--metric", metric, *args)
    cells, best, _, order = expected_pivot(runs, descending, "accuracy" if descending else "mse")
    assert [r["architecture"] for r in rows] == order
    for row in rows:
        for graph in {g for _, g in cells}:
            values = cells[row["architecture"], graph]
            assert row[f"{graph}_best"] == pytest.approx(best[row["architecture"], graph])
            assert row[f"{graph}_mean"] == pytest.approx(statistics.mean(values))
            assert row[f"{graph}_n"] == len(values)


def test_plain_pivot_marks_the_best_cell_of_each_column(capsys, export):
    path, runs = export
    out, _ = analyze(capsys, str(path), "--pivot", "--format", "plain")
    _, _, rank, order = expected_pivot(runs)
    lines = out.splitlines()
    header, body, (gap, legend) = lines[0].split(), lines[1:-2], lines[-2:]
    assert header[0] == "architecture" and len(body) == len(order)
    assert gap == "" and legend.startswith("cell: best · mean (n=runs with a value); * = best in its column")
    marked = {
        (line.split()[0], cell) for line in body for cell in line.split("  ") if cell.strip().endswith("*")
    }
    assert len(marked) == len({g for _, g in rank})  # one best per dataset
    assert {m for m, _ in marked} == {m for (m, _), r in rank.items() if r == 1}


def test_pivot_rows_and_cols_can_be_other_columns(capsys, export):
    path, runs = export
    rows = as_json(capsys, str(path), "--pivot-rows", "k", "--pivot-cols", "stage")
    groups = expected_groups(runs, lambda r: (str(r.k), r.stage))
    for row in rows:
        for stage in ("stage1", "stage2", "stage3"):
            assert row[f"{stage}_n"] == len(groups[row["k"], stage])


def test_pivot_on_tags_labels_each_list_by_its_elements(capsys, export):
    path, runs = export
    rows = as_json(capsys, str(path), "--pivot-rows", "tags", "--pivot-cols", "dataset")
    groups = expected_groups(runs, lambda r: (f"{r.stage}, {r.model}", r.graph))  # tags = [stage, model]
    assert {row["tags"] for row in rows} == {tags for tags, _ in groups}
    for row in rows:
        for graph in {g for _, g in groups}:
            assert row[f"{graph}_n"] == (len(groups[row["tags"], graph]) or None)


def test_a_group_by_column_named_twice_groups_once(capsys, export):
    path, _ = export
    twice = as_json(capsys, str(path), "--group-by", "architecture,dataset,architecture")
    assert twice == as_json(capsys, str(path), "--group-by", "architecture,dataset")


@pytest.mark.parametrize("view", [["--pivot"], ["--pivot-rows", "k"], ["--schema"]])
def test_top_with_a_view_it_does_not_apply_to_exits_2(capsys, export, view):
    with pytest.raises(SystemExit) as exit_info:
        analyze_runs.main([str(export[0]), *view, "--top", "2"])
    assert exit_info.value.code == 2
    assert f"error: --top does not apply to {view[0].replace('-rows', '')}" in capsys.readouterr().err


def test_pareto_counts_runs_without_a_metric_before_those_without_the_other_value(capsys, tmp_path):
    path = tmp_path / "x_runs.parquet"
    pl.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "name": ["a", "b", "c", "d", "e"],
            "entity": ["e"] * 5,
            "project": ["p"] * 5,
            "metric_loss": [0.1, None, 0.3, 0.2, float("nan")],
            "metric_l0": [1.0, 2.0, float("nan"), 3.0, 4.0],
        }
    ).write_parquet(path)
    _, err = analyze(capsys, str(path), "--metric", "loss", "--pareto", "l0")
    assert err.splitlines() == [
        "2 of 5 matching runs have no metric_loss (null or NaN) and are left out",
        "1 more runs have no finite metric_l0 (or metric_loss) and are left out",
    ]


def test_raw_export_and_aggregated_file_give_the_same_pivot(capsys, export, unified):
    raw = as_json(capsys, str(export[0]), "--pivot")
    aggregated = as_json(capsys, str(unified), "--pivot")
    assert raw == aggregated


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_output_file_is_exactly_the_table_shown_with_id(capsys, export, tmp_path, suffix):
    path, _ = export
    out = tmp_path / f"top{suffix}"
    shown = as_json(capsys, str(path), "--top", "5", "-o", str(out))
    if suffix == ".csv":
        written = pl.read_csv(out).to_dicts()
    elif suffix == ".parquet":
        written = pl.read_parquet(out).to_dicts()
    else:
        written = json.loads(out.read_text())
    assert [r["id"] for r in written] == [r["id"] for r in shown] and list(written[0]) == list(shown[0])
    assert written[0]["metric_test_mse"] == pytest.approx(shown[0]["metric_test_mse"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_markdown_output_and_format(capsys, export, tmp_path):
    path, _ = export
    out = tmp_path / "pivot.md"
    printed, _ = analyze(capsys, str(path), "--pivot", "--format", "markdown", "-o", str(out))
    assert out.read_text() == printed
    assert printed.startswith("| architecture |") and "| --- |" in printed.splitlines()[1]


def test_no_color_is_respected(capsys, export, monkeypatch):
    path, _ = export
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured, _ = analyze(capsys, str(path), "--pivot", "--format", "rich")
    colour = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-7]|9[0-7]|38;[0-9;]+)m")
    assert colour.search(coloured) and "★" in coloured
    monkeypatch.setenv("NO_COLOR", "1")
    plain, _ = analyze(capsys, str(path), "--pivot", "--format", "rich")
    assert not colour.search(plain) and "★" in plain


def test_schema_lists_columns_by_prefix_with_non_null_counts(capsys, export):
    path, runs = export
    rows = as_json(capsys, str(path), "--schema")
    by_column = {r["column"]: r for r in rows}
    assert by_column["metric_test_mse"]["non_null"] == sum(1 for r in runs if r.mse is not None)
    assert (
        by_column["config_model_type"]["group"] == "config"
        and by_column["architecture"]["group"] == "derived"
    )
    assert by_column["id"]["dtype"] == "String" and by_column["_config_json"]["group"] == "internal"
    groups = [r["group"] for r in rows]
    assert groups == sorted(groups, key=["core", "config", "metric", "derived", "internal"].index)


def test_without_input_the_newest_export_is_used(capsys, export, tmp_path, monkeypatch):
    folder = tmp_path / "wandb_export"
    older = write_export(folder / "old", make_runs((0,), salt="old", project="old"))
    newer = export[0]
    os.utime(older, (1, 1))
    (folder / "new").mkdir()
    (folder / "new" / newer.name).write_bytes(newer.read_bytes())
    monkeypatch.chdir(tmp_path)
    _, err = analyze(capsys, "--top", "1")
    assert f"using wandb_export/new/{newer.name} (newest of 2)\n" in err


def test_several_inputs_are_unioned_and_deduplicated(capsys, export, tmp_path):
    copy = tmp_path / "copy_runs.parquet"
    copy.write_bytes(export[0].read_bytes())
    rows = as_json(capsys, str(export[0]), str(copy), "--group-by", "state")
    assert sum(r["n"] for r in rows) == sum(1 for r in export[1] if has_value(r.mse))


def test_nothing_matched_is_not_an_error_and_says_why(capsys, export, tmp_path):
    out = tmp_path / "empty.csv"
    printed, err = analyze(capsys, str(export[0]), "--state", "finished", "--filter", "zzz", "-o", str(out))
    assert printed == ""
    assert (
        "nothing matched: --filter zzz matched none of the" in err and "that passed --state finished" in err
    )
    assert out.read_text().startswith("rank,id,name,metric_test_mse")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--metric", "nope"],
            "unknown metric 'nope' in --metric (numeric metric columns: metric_test_accuracy, metric_test_mse)",
        ),
        (["--metric", "name"], "--metric name holds String, not numbers"),
        (["--group-by", "architecture,nope"], "unknown column 'nope' in --group-by (columns: id, name,"),
        (["--pivot-cols", "nope"], "unknown column 'nope' in --pivot-rows/--pivot-cols"),
        (["--pivot-rows", "dataset"], "--pivot-rows and --pivot-cols both name dataset: they must differ"),
        (["--pivot-rows", "k", "--pivot-cols", "k"], "--pivot-rows and --pivot-cols both name k"),
        (["--filter", "a[("], "bad regex in --filter: 'a[(' (error: unclosed character class)"),
        (["-o", "x.xlsx"], "unknown extension .xlsx"),
    ],
)
def test_bad_input_is_one_usage_error_naming_what_exists(export, args, message):
    with pytest.raises(BadInput) as error:
        analyze_runs.main([str(export[0]), *args])
    assert message in str(error.value)


def test_an_output_path_that_is_a_folder_is_refused_before_any_work(export, tmp_path, capsys):
    folder = tmp_path / "table.csv"
    folder.mkdir()
    with pytest.raises(BadInput, match="is a folder, not a file name"):
        analyze_runs.main([str(export[0]), "-o", str(folder)])
    assert capsys.readouterr().out == ""


def test_no_loss_like_metric_asks_for_one(tmp_path):
    path = tmp_path / "x_runs.parquet"
    pl.DataFrame(
        {"id": ["a"], "name": ["n"], "entity": ["e"], "project": ["p"], "metric_f1": [0.5]}
    ).write_parquet(path)
    with pytest.raises(
        BadInput,
        match=r"no metric says loss/mse/error: choose one with --metric \(numeric metric columns: metric_f1\)",
    ):
        analyze_runs.main([str(path)])


def test_the_metric_question_goes_to_the_terminal_not_to_stdout(tmp_path):
    """Asked on stderr (a terminal, as stdin is): with stdout sent to a file, the file holds only the table."""
    path = tmp_path / "x_runs.parquet"
    pl.DataFrame(
        {
            "id": ["a", "b"],
            "name": ["n", "m"],
            "entity": ["e"] * 2,
            "project": ["p"] * 2,
            "metric_f1": [0.5, 0.7],
        }
    ).write_parquet(path)
    terminal, side = pty.openpty()
    with (tmp_path / "out.txt").open("w") as out:
        script = subprocess.Popen(
            [sys.executable, "wandb-tools/analyze_runs.py", str(path)],
            cwd=ROOT,
            stdin=side,
            stderr=side,
            stdout=out,
        )
    os.close(side)
    seen, deadline = b"", time.monotonic() + 60
    while b"rank by" not in seen and time.monotonic() < deadline and script.poll() is None:
        if select.select([terminal], [], [], 0.5)[0]:
            seen += os.read(terminal, 4096)
    os.write(terminal, b"metric_f1\n")
    assert script.wait(timeout=60) == 0
    os.close(terminal)
    assert b"no metric says loss/mse/error; rank by" in seen
    table = (tmp_path / "out.txt").read_text()
    assert table.splitlines()[0].split()[:4] == ["rank", "id", "name", "metric_f1"] and "rank by" not in table


def test_missing_and_foreign_inputs(tmp_path):
    with pytest.raises(BadInput, match="no such file or folder"):
        analyze_runs.main([str(tmp_path / "nope.parquet")])
    other = tmp_path / "h.parquet"
    pl.DataFrame({"run_id": ["a"], "step": [1]}).write_parquet(other)
    with pytest.raises(BadInput, match=r"not a runs export.*\(it has: run_id, step\)"):
        analyze_runs.main([str(other)])


@pytest.mark.slow
def test_the_script_runs_under_uv(export, tmp_path):
    out = tmp_path / "top.csv"
    command = ["uv", "run", "wandb-tools/analyze_runs.py", str(export[0]), "--top", "3", "-o", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:4] == ["rank", "id", "name", "metric_test_mse"]
    assert pl.read_csv(out).height == 3
    bad = subprocess.run(
        [*command[:4], "--metric", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown metric 'nope'")
