"""analyze_runs.py: numeric pivot columns in numeric order; bad columns stop it before it logs anything."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from shared.cli.main import run_main
from tests.current_data import KS, load_script, make_runs, write_export

analyze_runs = load_script("analyze_runs")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return write_export(tmp_path_factory.mktemp("export") / "wandb_export", make_runs())


def run(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert analyze_runs.main(list(argv)) == 0
    return capsys.readouterr().out


def test_pivot_on_a_numeric_config_column_orders_its_columns_as_numbers(capsys, export, tmp_path):
    want = [str(k) for k in sorted(KS)]
    assert sorted(want) != want  # as text, 16 would come before 8
    pivot = ["--pivot-rows", "architecture", "--pivot-cols", "config_model_k"]
    stats = [f"{k}_{stat}" for k in want for stat in ("best", "mean", "n")]

    rows = json.loads(run(capsys, str(export), *pivot, "--format", "json"))
    assert list(rows[0]) == ["architecture", *stats, "mean_rank"]
    csv = tmp_path / "pivot.csv"
    run(capsys, str(export), *pivot, "--format", "plain", "-o", str(csv))
    assert pl.read_csv(csv).columns == ["architecture", *stats, "mean_rank"]
    header = run(capsys, str(export), *pivot, "--format", "markdown").splitlines()[0]
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["architecture", *want, "mean rank"]


def test_pivot_rows_on_a_numeric_column_are_in_numeric_order(capsys, export):
    pivot = ["--pivot-rows", "k", "--pivot-cols", "stage"]
    rows = json.loads(run(capsys, str(export), *pivot, "--format", "json"))
    assert [row["k"] for row in rows] == [str(k) for k in sorted(KS)]
    plain = run(capsys, str(export), *pivot, "--format", "plain").splitlines()
    assert [line.split()[0] for line in plain[1 : 1 + len(KS)]] == [str(k) for k in sorted(KS)]


def test_numeric_pivot_columns_put_runs_without_a_value_last(capsys, tmp_path):
    path = tmp_path / "t_runs.parquet"
    width = [64, 8, None, 8, 512]
    pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(len(width))],
            "name": ["n"] * len(width),
            "entity": ["e"] * len(width),
            "project": ["p"] * len(width),
            "config_width": width,
            "metric_loss": [0.5, 0.4, 0.3, 0.2, 0.1],
        }
    ).write_parquet(path)
    rows = json.loads(
        run(capsys, str(path), "--pivot-rows", "project", "--pivot-cols", "config_width", "--format", "json")
    )
    assert [c.removesuffix("_best") for c in rows[0] if c.endswith("_best")] == ["8", "64", "512", "(none)"]


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--group-by", "architecture,nope"], "unknown column 'nope' in --group-by"),
        (["--pivot-cols", "nope"], "unknown column 'nope' in --pivot-rows/--pivot-cols"),
        (["--columns", "nope"], "unknown column 'nope' in --columns"),
        (["--pareto", "nope"], "--pareto: "),
        (["--metric", "nope", "--group-by", "stage"], "unknown metric 'nope' in --metric"),
    ],
)
@pytest.mark.parametrize("default_input", [False, True])
def test_a_bad_column_is_the_only_line_on_stderr(capsys, monkeypatch, export, argv, error, default_input):
    if default_input:  # the newest export under wandb_export/: otherwise named on stderr
        monkeypatch.chdir(export.parent.parent)
    inputs = [] if default_input else [str(export)]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: analyze_runs.main([*inputs, *argv]))
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2
    assert len(lines) == 1 and lines[0].startswith(f"error: {error}"), lines


def test_a_row_column_named_like_a_statistic_is_not_taken_for_a_pivot_column():
    from shared.analysis.frames import pivot_grids, pivot_query, pivot_table

    frame = pl.LazyFrame({"arch_best": ["a", "a", "b"], "k": ["8", "16", "8"], "loss": [0.3, 0.2, 0.1]})
    pivot = pivot_table(
        pivot_query(frame, "loss", "arch_best", "k", descending=False).collect(), "arch_best", "k"
    )
    best, counts = pivot_grids(pivot)
    assert best.columns == counts.columns == ["arch_best", "8", "16"]
    assert best.rows() == [("b", 0.1, None), ("a", 0.3, 0.2)]


def test_pivot_labels_a_list_by_its_elements_and_an_empty_or_null_list_as_none():
    from shared.analysis.frames import NONE_LABEL, pivot_query

    frame = pl.LazyFrame(
        {"tags": [["a", "b"], [], None, ["a", "b"]], "k": [8, 8, 16, 16], "loss": [0.4, 0.3, 0.2, 0.1]}
    )
    cells = pivot_query(frame, "loss", "tags", "k", descending=False).collect()
    assert sorted(cells.select("tags", "k", "n").rows()) == [
        (NONE_LABEL, "16", 1),
        (NONE_LABEL, "8", 1),
        ("a, b", "16", 1),
        ("a, b", "8", 1),
    ]
