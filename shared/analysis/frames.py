"""Analysis views over a lazy runs frame: metric choice, top runs, group statistics, pivot, schema."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from shared.analysis.enrich import ColumnRule, enrich
from shared.base.errors import BadInput
from shared.base.text import name_list
from shared.table.exports import name_pattern
from shared.table.pareto import ParetoError, check_axes
from shared.table.schema import CONFIG_PREFIX, CORE, METRIC_PREFIX, is_internal

KEY_COLUMNS = (
    "state",
    "project",
    "stage",
    "architecture",
    "model_type",
    "dataset",
    "k",
    "lr_parsed",
    "wd_parsed",
    "seed_parsed",
)
NONE_LABEL = "(none)"
_LOWER_IS_BETTER = re.compile(r"loss|mse|error|mae|rmse")
_HIGHER_IS_BETTER = re.compile(r"acc|auc|f1|score|precision|recall|r2")


def prepare(frame: pl.LazyFrame, rules: Sequence[ColumnRule]) -> pl.LazyFrame:
    """Enrichment columns the frame lacks (a raw export) plus `architecture`, the analysis name of `arch`."""
    frame = enrich(frame, rules, only_missing=True)
    names = frame.collect_schema().names()
    if "architecture" not in names and "arch" in names:
        frame = frame.with_columns(pl.col("arch").alias("architecture"))
    return frame


def require_columns(schema: pl.Schema, columns: Sequence[str], what: str) -> None:
    """BadInput naming the first of `columns` that `schema` lacks, and the columns it has."""
    for column in columns:
        if column not in schema:
            raise BadInput(f"unknown column {column!r} in {what} (columns: {name_list(schema.names())})")


def numeric_metrics(schema: pl.Schema) -> list[str]:
    """`metric_*` columns holding numbers."""
    return [n for n, d in schema.items() if n.startswith(METRIC_PREFIX) and d.is_numeric()]


def pick_metric(schema: pl.Schema, requested: str | None) -> str | None:
    """The metric to rank by: `requested` (with or without `metric_`), else the best loss/mse/error column.

    None when nothing says loss/mse/error (the caller asks); BadInput for an unknown or non-numeric one.
    """
    metrics = numeric_metrics(schema)
    if requested:
        name = requested if requested in schema else f"{METRIC_PREFIX}{requested}"
        if name not in schema:
            raise BadInput(
                f"unknown metric {requested!r} in --metric (numeric metric columns: {name_list(metrics)})"
            )
        if not schema[name].is_numeric():
            raise BadInput(
                f"--metric {name} holds {schema[name]}, not numbers (numeric metric columns: {name_list(metrics)})"
            )
        return name
    losses = [m for m in metrics if _LOWER_IS_BETTER.search(m)]
    if not losses:
        return None

    def preference(name: str) -> tuple[int, int, int, str]:
        split = 0 if "test" in name else 1 if "val" in name else 3 if "train" in name else 2
        kind = next((i for i, word in enumerate(("mse", "loss", "error")) if word in name), 3)
        return split, kind, len(name), name  # the plainest name: metric_test_mse before metric_best_test_mse

    return min(losses, key=preference)


def pareto_axis(schema: pl.Schema, requested: str, metric: str) -> str:
    """The --pareto column: `requested` as named, else with `metric_` in front. BadInput when it is not
    a numeric column, or is `metric` (the other axis) itself."""
    prefixed = f"{METRIC_PREFIX}{requested}"
    name = prefixed if requested not in schema and prefixed in schema else requested
    try:
        check_axes(schema, metric, name)
    except ParetoError as error:
        raise BadInput(f"--pareto: {error}") from None
    if name == metric:
        raise BadInput(f"--pareto {requested} is the --metric itself: choose the other axis")
    return name


def looks_higher_is_better(metric: str) -> bool:
    """True for accuracy-like names (a hint for --descending)."""
    return bool(_HIGHER_IS_BETTER.search(metric)) and not _LOWER_IS_BETTER.search(metric)


def has_value(metric: str) -> pl.Expr:
    """The metric is present and not NaN."""
    column = pl.col(metric).cast(pl.Float64)
    return (column.is_not_null() & column.is_not_nan()).fill_null(False)


@dataclass
class Funnel:
    """How many runs survived each filter, and how many of those have a metric value."""

    steps: list[tuple[str, int]]  # ("all runs", n), ("--state finished", n), ...
    with_value: int

    @property
    def matched(self) -> int:
        return self.steps[-1][1]

    def footer(self, metric: str) -> str | None:
        """The line saying what was left out or why nothing matched; None when every run counted."""
        missing = self.matched - self.with_value
        if self.matched == 0:
            return f"nothing matched: {self.why_empty()}"
        if self.with_value == 0:
            return f"nothing to rank: none of the {self.matched} matching runs has a value for {metric}"
        if missing:
            return (
                f"{missing} of {self.matched} matching runs have no {metric} (null or NaN) and are left out"
            )
        return None

    def why_empty(self) -> str:
        """Which filter left nothing, and how many runs it had to choose from."""
        for index in range(1, len(self.steps)):
            (_, before), (label, after) = self.steps[index - 1], self.steps[index]
            if after == 0 and before > 0:
                passed = (
                    " that passed " + " and ".join(s for s, _ in self.steps[1:index]) if index > 1 else ""
                )
                return f"{label} matched none of the {before} runs{passed}"
        return "the input holds no runs"


@dataclass
class Selection:
    """Which runs to keep: states (empty = all), a name regex, a protocol (`all` = any)."""

    states: Sequence[str] = ()
    pattern: str | None = None
    protocol: str = "all"

    def steps(self) -> list[tuple[str, pl.Expr]]:
        """The filters in the order they are applied, each with the label the report uses."""
        steps = []
        if self.states:
            steps.append(
                (
                    f"--state {','.join(self.states)}",
                    pl.col("state").is_in(list(self.states)).fill_null(False),
                )
            )
        if self.pattern:
            steps.append((f"--filter {self.pattern}", name_pattern(self.pattern)))
        if self.protocol != "all":
            steps.append(
                (f"--protocol {self.protocol}", (pl.col("protocol") == self.protocol).fill_null(False))
            )
        return steps


def funnel_query(
    frame: pl.LazyFrame, steps: Sequence[tuple[str, pl.Expr]], metric: str | None
) -> pl.LazyFrame:
    """One row of counts: all runs, after each filter in turn, and with a metric value."""
    counts = [pl.len().alias("0")]
    mask = pl.lit(True)
    for index, (_, condition) in enumerate(steps, start=1):
        mask = mask & condition
        counts.append(mask.sum().alias(str(index)))
    if metric:
        counts.append((mask & has_value(metric)).sum().alias("valid"))
    return frame.select(counts)


def read_funnel(row: pl.DataFrame, steps: Sequence[tuple[str, pl.Expr]]) -> Funnel:
    """The Funnel from `funnel_query`'s collected row."""
    values = row.row(0, named=True)
    labelled = [("all runs", values["0"])] + [
        (label, values[str(i)]) for i, (label, _) in enumerate(steps, 1)
    ]
    return Funnel(labelled, values.get("valid", labelled[-1][1]))


def top_runs(
    frame: pl.LazyFrame, metric: str, n: int, *, descending: bool, extra: Sequence[str] = ()
) -> pl.LazyFrame:
    """The `n` best runs with a metric value: rank, id, name, metric, key columns present, `extra` columns."""
    return (
        frame.filter(has_value(metric))
        .sort([metric, "id"], descending=[descending, False], nulls_last=True)
        .head(n)
        .select(
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("rank"),
            *_with_keys(frame, ["id", "name", metric, *extra]),
        )
    )


def _with_keys(frame: pl.LazyFrame, columns: Sequence[str]) -> list[str]:
    """`columns` (each once), then the KEY_COLUMNS the frame has that are not among them."""
    names = frame.collect_schema().names()
    return list(dict.fromkeys([*columns, *(c for c in KEY_COLUMNS if c in names)]))


def pareto_candidates(frame: pl.LazyFrame, x: str, y: str, *, extra: Sequence[str] = ()) -> pl.LazyFrame:
    """Runs with a value of `x`: id, name, x, y, `extra` and the key columns present (a front's input)."""
    return frame.filter(has_value(x)).select(_with_keys(frame, ["id", "name", x, y, *extra]))


def drop_empty(table: pl.DataFrame, keep: Sequence[str]) -> pl.DataFrame:
    """`table` without its all-null columns, except those in `keep`."""
    return table.select(c for c in table.columns if c in keep or table[c].null_count() < table.height)


def group_stats(frame: pl.LazyFrame, metric: str, by: Sequence[str], *, descending: bool) -> pl.LazyFrame:
    """Per group of `by`: n (runs with a value), mean, std, min, max of the metric; best mean first."""
    value = pl.col(metric).cast(pl.Float64)
    return (
        frame.filter(has_value(metric))
        .group_by(by)
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            value.mean().alias("mean"),
            value.std().alias("std"),
            value.min().alias("min"),
            value.max().alias("max"),
        )
        .sort(["mean", *by], descending=[descending] + [False] * len(by), nulls_last=True)
    )


@dataclass
class Pivot:
    """A pivot: `cells` long (row, col, best, mean, n, rank within the column) and `table` wide, rows in order."""

    rows: str
    cols: str
    cells: pl.DataFrame
    table: pl.DataFrame
    labels: list[str]  # the column values, in the table's order (`column_labels`)
    states: dict[str, int]  # runs in the cells per state, most first; empty when the runs have no state


_STATES = "__pivot_states"


def pivot_query(frame: pl.LazyFrame, metric: str, rows: str, cols: str, *, descending: bool) -> pl.LazyFrame:
    """Long pivot cells: best and mean of the metric and n per (rows, cols), ranked within each column,
    and the states of the cell's runs (when the runs have a state)."""
    value = pl.col(metric).cast(pl.Float64)
    schema = frame.collect_schema()
    label = {c: _label(c, schema[c]) for c in (rows, cols)}
    states = (
        [pl.col("state").cast(pl.String).fill_null(NONE_LABEL).alias(_STATES)] if "state" in schema else []
    )
    return (
        frame.filter(has_value(metric))
        .group_by(label[rows].alias(rows), label[cols].alias(cols))
        .agg(
            (value.max() if descending else value.min()).alias("best"),
            value.mean().alias("mean"),
            pl.len().cast(pl.Int64).alias("n"),
            *states,
        )
        .with_columns(
            pl.col("best").rank("min", descending=descending).over(cols).cast(pl.Int64).alias("rank")
        )
    )


def _label(column: str, dtype: pl.DataType) -> pl.Expr:
    """A pivot row/column value as text; a list (tags) as its elements joined, as the tables show it,
    and an empty list as none."""
    value = pl.col(column)
    if isinstance(dtype, pl.List):
        joined = value.list.eval(pl.element().cast(pl.String)).list.join(", ")
        return pl.when(value.list.len() > 0).then(joined).otherwise(pl.lit(NONE_LABEL))
    return value.cast(pl.String).fill_null(NONE_LABEL)


def pivot_table(cells: pl.DataFrame, rows: str, cols: str) -> Pivot:
    """Wide pivot from the long cells: `<col>_best`, `<col>_mean`, `<col>_n` per column value, then the
    row's mean rank across columns; rows in numeric order when every row value is a number (k = 8, 16,
    32), else by mean rank (best first); `(none)` last among numbers."""
    states: dict[str, int] = {}
    if _STATES in cells.columns:
        counts = (
            cells[_STATES].explode().value_counts(name="n").sort(["n", _STATES], descending=[True, False])
        )
        states = dict(counts.iter_rows())
    if cells.height == 0:
        empty = pl.DataFrame(schema={rows: pl.String, "mean_rank": pl.Float64})
        return Pivot(rows, cols, cells, empty, [], states)
    order = cells.group_by(rows).agg(pl.col("rank").mean().alias("mean_rank"))
    numbered = _numeric_order(order[rows])
    if numbered is None:
        order = order.sort(["mean_rank", rows])
    else:
        order = pl.DataFrame({rows: numbered}).join(order, on=rows, how="left", maintain_order="left")
    wide = cells.pivot(on=cols, index=rows, values=["best", "mean", "n"])
    labels = column_labels(cells, cols)
    table = order.join(wide, on=rows, how="left", maintain_order="left").select(
        rows,
        *(
            pl.col(f"{stat}_{label}").alias(f"{label}_{stat}")
            for label in labels
            for stat in ("best", "mean", "n")
        ),
        "mean_rank",
    )
    return Pivot(rows, cols, cells, table, labels, states)


def column_labels(cells: pl.DataFrame, cols: str) -> list[str]:
    """The pivot's column values in order: as numbers when they all are (k = 8, 16, 32, not 16, 32, 8),
    else as text; `(none)` last."""
    labels = cells[cols].unique()
    return _numeric_order(labels) or sorted(set(labels) - {NONE_LABEL}) + (
        [NONE_LABEL] if NONE_LABEL in labels else []
    )


def _numeric_order(labels: pl.Series) -> list[str] | None:
    """The distinct `labels` in numeric order with `(none)` last when every other one is a number, else None."""
    distinct = labels.unique()
    values = distinct.filter(distinct != NONE_LABEL)
    numbers = values.cast(pl.Float64, strict=False)
    if values.is_empty() or numbers.null_count():
        return None
    ordered = pl.DataFrame({"label": values, "number": numbers}).sort(["number", "label"])["label"].to_list()
    return ordered + ([NONE_LABEL] if NONE_LABEL in distinct else [])


def pivot_grids(pivot: Pivot) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The pivot's best values and run counts as grids: the row column, then one column per column value."""

    def grid(stat: str) -> pl.DataFrame:
        return pivot.table.select(
            pivot.rows, *(pl.col(f"{label}_{stat}").alias(label) for label in pivot.labels)
        )

    return grid("best"), grid("n")


SCHEMA_GROUPS = ("core", "config", "metric", "derived", "internal")


def schema_query(frame: pl.LazyFrame) -> tuple[pl.DataFrame, pl.LazyFrame]:
    """Every column with its prefix group and dtype, and a query for the non-null count of each."""
    schema = frame.collect_schema()

    def group(name: str) -> str:
        if name in CORE:
            return "core"
        if name.startswith(CONFIG_PREFIX):
            return "config"
        if name.startswith(METRIC_PREFIX):
            return "metric"
        return "internal" if is_internal(name) else "derived"

    described = pl.DataFrame(
        {
            "group": [group(n) for n in schema],
            "column": schema.names(),
            "dtype": [str(d) for d in schema.dtypes()],
        }
    )
    return described, frame.select(pl.all().count())


def schema_table(described: pl.DataFrame, counts: pl.DataFrame) -> pl.DataFrame:
    """Columns by group (core, config, metric, derived, internal) with dtype and non-null count."""
    non_null = pl.Series("non_null", [counts[c][0] for c in described["column"]], dtype=pl.Int64)
    order = pl.col("group").replace_strict(SCHEMA_GROUPS, range(len(SCHEMA_GROUPS)))
    return described.with_columns(non_null).with_row_index("__i").sort(order, "__i").drop("__i")
