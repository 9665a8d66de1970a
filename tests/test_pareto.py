"""Pareto fronts: shared.table.pareto against a brute-force reference, and analyze_runs.py --pareto end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.base.errors import BadInput
from shared.table.pareto import ParetoError, pareto_front
from tests.current_data import Expected, expected, has_value, load_script, make_runs, write_export

analyze_runs = load_script("analyze_runs")
DIRECTIONS = [(True, True), (True, False), (False, True), (False, False)]


def reference(xs: list, ys: list, minimize_x: bool, minimize_y: bool) -> list[int]:
    """Indices of the non-dominated finite points by comparing every pair, ordered by x then index."""

    def finite(value) -> bool:
        return value is not None and math.isfinite(value)

    sign_x, sign_y = (1 if minimize_x else -1), (1 if minimize_y else -1)
    points = [
        (i, sign_x * x, sign_y * y)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))
        if finite(x) and finite(y)
    ]
    front = [
        i for i, x, y in points if not any(x2 <= x and y2 <= y and (x2 < x or y2 < y) for _, x2, y2 in points)
    ]
    return sorted(front, key=lambda i: (xs[i], i))


values = st.one_of(
    st.integers(-3, 3).map(float),  # few distinct values: ties and duplicates
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([None, float("nan"), float("inf"), float("-inf"), -0.0, 0.0]),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(values, values), max_size=40),
    st.sampled_from(DIRECTIONS),
)
def test_front_matches_brute_force_on_floats_with_gaps(pairs, directions):
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    df = pl.DataFrame(
        {"row": list(range(len(pairs))), "x": xs, "y": ys},
        schema={"row": pl.Int64, "x": pl.Float64, "y": pl.Float64},
    )
    front = pareto_front(df, "x", "y", minimize_x=directions[0], minimize_y=directions[1])
    assert front["row"].to_list() == reference(xs, ys, *directions)
    assert front.columns == ["row", "x", "y"]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-(2**62), 2**62), st.integers(0, 5)), max_size=30),
    st.sampled_from(DIRECTIONS),
)
def test_integer_columns_compare_exactly(pairs, directions):
    # 2**62 + 1 and 2**62 are the same float64: a cast would merge them.
    pairs = [*pairs, (2**62 + 1, 0), (2**62, 0)]
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    df = pl.DataFrame(
        {"row": range(len(pairs)), "x": xs, "y": ys}, schema={"row": pl.Int64, "x": pl.Int64, "y": pl.UInt8}
    )
    front = pareto_front(df, "x", "y", minimize_x=directions[0], minimize_y=directions[1])
    assert front["row"].to_list() == reference(xs, ys, *directions)


def test_each_direction_picks_its_own_corner():
    df = pl.DataFrame(
        {"name": list("abcde"), "loss": [1.0, 2.0, 3.0, 2.0, 0.5], "l0": [30.0, 20.0, 10.0, 25.0, 40.0]}
    )

    def names(**directions) -> list[str]:
        return pareto_front(df, "loss", "l0", **directions)["name"].to_list()

    assert names() == ["e", "a", "b", "c"]  # d is beaten by b on both
    assert names(minimize_x=False, minimize_y=False) == ["e", "a", "d", "c"]  # d now beats b
    assert names(minimize_x=True, minimize_y=False) == ["e"]
    assert names(minimize_x=False, minimize_y=True) == ["c"]


def test_identical_points_are_all_kept_in_input_order_and_gaps_dropped():
    df = pl.DataFrame(
        {
            "name": ["late", "early", "nan", "null", "inf", "worse"],
            "x": [1.0, 1.0, float("nan"), None, 0.0, 2.0],
            "y": [1.0, 1.0, 0.0, 0.0, float("-inf"), 2.0],
        }
    )
    assert pareto_front(df, "x", "y")["name"].to_list() == ["late", "early"]
    assert pareto_front(df.filter(pl.col("x").is_null()), "x", "y").height == 0


def test_missing_and_non_numeric_columns_are_one_line_errors():
    df = pl.DataFrame({"name": ["a"], "state": ["finished"], "metric_loss": [1.0], "k": [8]})
    with pytest.raises(
        ParetoError, match=r"^unknown Pareto column 'nope' \(numeric columns: metric_loss, k\)$"
    ):
        pareto_front(df, "metric_loss", "nope")
    with pytest.raises(
        ParetoError, match=r"^Pareto column state holds String, not numbers \(numeric columns"
    ):
        pareto_front(df, "state", "k")
    assert issubclass(ParetoError, ValueError)


# analyze_runs.py --pareto on an export shaped like the team's runs


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, list[Expected]]:
    records = make_runs((0,))
    return write_export(tmp_path_factory.mktemp("export"), records), [expected(r) for r in records]


def analyze_json(capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert analyze_runs.main([*args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("descending", [False, True])
def test_analyze_pareto_lists_the_front_in_order_with_configs(capsys, export, descending):
    path, runs = export
    metric = ["--metric", "test_accuracy", "--descending"] if descending else ["--metric", "test_mse"]
    rows = analyze_json(
        capsys, str(path), *metric, "--pareto", "k", "--pareto-maximize", "--filter", "stage2"
    )
    chosen = [r for r in runs if "stage2" in r.name and has_value(r.mse if not descending else r.accuracy)]
    values = [r.accuracy if descending else r.mse for r in chosen]
    order = reference(values, [r.k for r in chosen], not descending, False)
    assert [row["id"] for row in rows] == [chosen[i].id for i in order]
    assert len(rows) > 1
    assert [row["#"] for row in rows] == list(range(1, len(rows) + 1))
    first = rows[0]
    assert list(first)[:5] == [
        "#",
        "id",
        "name",
        "metric_test_accuracy" if descending else "metric_test_mse",
        "k",
    ]
    assert (first["architecture"], first["dataset"]) == (chosen[order[0]].model, chosen[order[0]].graph)


def test_analyze_pareto_writes_table_and_plot(capsys, export, tmp_path):
    path, _ = export
    table, plot = tmp_path / "front.csv", tmp_path / "front.svg"
    analyze_json(
        capsys, str(path), "--pareto", "k", "--pareto-maximize", "-o", str(table), "--plot", str(plot)
    )
    written = pl.read_csv(table)
    assert written.columns[:5] == ["#", "id", "name", "metric_test_mse", "k"]
    assert written.height > 1
    assert plot.read_bytes().lstrip().startswith(b"<?xml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pareto", "state"], r"--pareto: Pareto column state holds String, not numbers"),
        (
            ["--pareto", "nope"],
            r"--pareto: unknown Pareto column 'nope' \(numeric columns: .*metric_test_mse",
        ),
        (["--pareto", "test_mse"], r"--pareto test_mse is the --metric itself"),
        (["--pareto", "k", "--plot", "{tmp}/missing/front.png"], r"folder .*missing does not exist"),
        (
            ["--pareto", "k", "--plot", "{tmp}/front.jpg"],
            r"unknown extension \.jpg \(use \.png, \.svg, \.pdf\)",
        ),
    ],
)
def test_analyze_pareto_bad_input_writes_nothing(export, tmp_path, args, message):
    path, _ = export
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(BadInput, match=message):
        analyze_runs.main([str(path), "--metric", "test_mse", *args, "-o", str(tmp_path / "out.csv")])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["--plot", "x.png"],
        ["--pareto-maximize"],
        ["--pareto", "k", "--top", "3"],
        ["--pareto", "k", "--pivot"],
    ],
)
def test_analyze_pareto_flag_conflicts_exit_2(export, args):
    with pytest.raises(SystemExit) as stop:
        analyze_runs.main([str(export[0]), *args])
    assert stop.value.code == 2
