"""The analysis views, one per mode, shared by analyze_runs.py and the HTML report (shared.analysis.report):
each says what to compute (a lazy query, collected together with the others), how its table is finished,
what its title says and, for the pivot and the front, how it is drawn."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import polars as pl

from shared.analysis import frames as an
from shared.analysis.plots import plot_pareto, plot_pivot
from shared.table.pareto import has_finite, pareto_front
from shared.table.vocabulary import PIVOT_COLS, PIVOT_ROWS, TOP


@dataclass(frozen=True)
class ViewOptions:
    """What the views are asked: the metric and its direction, and each mode's own settings."""

    metric: str
    maximize: bool = False
    top: int | None = None  # rows of the ranking (TOP by default); the best groups of --group-by
    group_by: Sequence[str] = ()
    pivot_rows: str = PIVOT_ROWS
    pivot_cols: str = PIVOT_COLS
    pareto: str | None = None
    pareto_maximize: bool = False
    columns: Sequence[str] = ()  # extra columns of the ranking and the front

    @property
    def direction(self) -> str:
        return "highest" if self.maximize else "lowest"


@dataclass
class Shown:
    """A finished view: its table, title and notes (a pivot also keeps its cells; a front its candidates)."""

    table: pl.DataFrame
    title: str
    notes: list[str] = field(default_factory=list)
    pivot: an.Pivot | None = None
    candidates: pl.DataFrame | None = None  # every run the front was chosen from
    usable: int = 0  # of those, runs with a finite value on both axes


PlotTarget = str | Path | IO[bytes]


class View(Protocol):
    """One analysis mode."""

    options: ViewOptions

    def query(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """What to compute from the matched runs."""
        ...

    def finish(self, collected: pl.DataFrame) -> Shown:
        """The table shown, from what `query` collected."""
        ...


@dataclass
class TopView:
    """The best runs by the metric, with the key columns present and `extra` ones."""

    options: ViewOptions
    extra: Sequence[str] = ()  # more columns to carry (the report's configs and tags)

    def query(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        top = self.options.top or TOP
        extra = [*self.options.columns, *self.extra]
        return an.top_runs(frame, self.options.metric, top, descending=self.options.maximize, extra=extra)

    def finish(self, collected: pl.DataFrame) -> Shown:
        options = self.options
        table = an.drop_empty(collected, ["rank", "id", "name", options.metric, *options.columns])
        return Shown(table, f"Top {options.top or TOP} runs by {options.direction} {options.metric}")


@dataclass
class GroupView:
    """n, mean, std, min and max of the metric per group, best mean first (the best `top` groups)."""

    options: ViewOptions
    group_by: Sequence[str]

    def query(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        query = an.group_stats(frame, self.options.metric, self.group_by, descending=self.options.maximize)
        return query.head(self.options.top) if self.options.top else query

    def finish(self, collected: pl.DataFrame) -> Shown:
        options = self.options
        title = (
            f"{options.metric} by {', '.join(self.group_by)} (best mean first, {options.direction} is best)"
        )
        return Shown(collected, title)


@dataclass
class PivotView:
    """The metric's best, mean and run count per (rows, cols) cell, ranked within each column."""

    options: ViewOptions

    def query(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        options = self.options
        return an.pivot_query(
            frame, options.metric, options.pivot_rows, options.pivot_cols, descending=options.maximize
        )

    def finish(self, collected: pl.DataFrame) -> Shown:
        options = self.options
        pivot = an.pivot_table(collected, options.pivot_rows, options.pivot_cols)
        title = (
            f"{options.metric} by {options.pivot_rows} x {options.pivot_cols}"
            f" (best · mean (n); ★ best {options.direction} in column)"
        )
        return Shown(pivot.table, title, pivot=pivot)

    def draw(self, target: PlotTarget, shown: Shown) -> None:
        assert shown.pivot is not None
        best, counts = an.pivot_grids(shown.pivot)
        options = self.options
        plot_pivot(
            target,
            best,
            counts,
            rows=options.pivot_rows,
            cols=options.pivot_cols,
            metric=options.metric,
            minimize=not options.maximize,
        )


@dataclass
class ParetoView:
    """The runs no other run beats on both the metric and the `pareto` column, numbered along the front."""

    options: ViewOptions

    def query(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        assert self.options.pareto is not None
        return an.pareto_candidates(
            frame, self.options.metric, self.options.pareto, extra=self.options.columns
        )

    def finish(self, collected: pl.DataFrame) -> Shown:
        options = self.options
        metric, axis = options.metric, options.pareto
        assert axis is not None
        usable = collected.filter(has_finite(metric) & has_finite(axis)).height
        notes = []
        if usable == 0 and collected.height:
            notes.append(
                f"nothing on the front: none of the {collected.height} runs with {metric} has a finite {axis}"
            )
        elif usable < collected.height:
            notes.append(
                f"{collected.height - usable} more runs have no finite {axis} (or {metric}) and are left out"
            )
        front = pareto_front(
            collected, metric, axis, minimize_x=not options.maximize, minimize_y=not options.pareto_maximize
        )
        front = front.select(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("#"), pl.all())
        better = {False: "lower is better", True: "higher is better"}
        title = (
            f"Pareto front: {front.height} of {usable} runs, {metric} ({better[options.maximize]}) vs "
            f"{axis} ({better[options.pareto_maximize]}), in order of {metric}"
        )
        table = an.drop_empty(front, ["#", "id", "name", metric, axis, *options.columns])
        return Shown(table, title, notes, candidates=collected, usable=usable)

    def draw(self, target: PlotTarget, shown: Shown) -> None:
        assert shown.candidates is not None and self.options.pareto is not None
        options = self.options
        plot_pareto(
            target,
            shown.candidates.filter(has_finite(options.metric) & has_finite(options.pareto)),
            shown.table,
            x=options.metric,
            y=options.pareto,
            minimize_x=not options.maximize,
            minimize_y=not options.pareto_maximize,
        )


def chosen_view(options: ViewOptions, *, pivot: bool) -> View:
    """The view the options ask for: the pivot, the Pareto front, group statistics, else the ranking."""
    if pivot:
        return PivotView(options)
    if options.pareto:
        return ParetoView(options)
    if options.group_by:
        return GroupView(options, options.group_by)
    return TopView(options)
