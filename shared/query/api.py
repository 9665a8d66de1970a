"""The query object both trackers share: top-k and Pareto fronts of runs over a run source, with RunInfo."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import polars as pl

from shared.base.errors import BadInput
from shared.base.events import Events
from shared.query.constraints import (
    check_callables,
    check_where_size,
    parse_where,
    unknown_metrics_error,
    where_metrics,
)
from shared.query.topk import TopK, top_k
from shared.table.lineage import Fork, ancestry, with_lineage
from shared.table.series import RUN, aggregate, check_aggregation
from shared.table.source import Asked, QuerySource, SummarySource
from shared.table.vocabulary import Aggregation

Constraints = dict[str, Callable[[float], bool]] | None
Where = str | Sequence[str] | None
Curve = tuple[list[float], list[float]]  # steps, values


@dataclass
class RunInfo:
    """One run in a query answer: id, name, config (parameters), aggregated metrics, the run object."""

    run_id: str
    name: str
    config: dict[str, Any]
    metrics: dict[str, float | None]
    raw_run: Any = field(default=None, repr=False, compare=False)
    # A fork answered over its lineage: the run it inherits from and the last step it inherits, `a-2@7.5`.
    forked_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready fields (everything but raw_run; `forked_from` only for a fork)."""
        found = {"run_id": self.run_id, "name": self.name, "config": self.config, "metrics": self.metrics}
        return found | ({"forked_from": self.forked_from} if self.forked_from else {})


class TopkQuery:
    """Top-k and Pareto queries with metric constraints over one source (shared.table.source.QuerySource),
    opened on first use. Subclasses say how to open their source (`_open_source`) and what a run state is
    (`_parse_state`). What happened along the way (runs left out, fetches retried) is in `events`."""

    def __init__(
        self, events: Events | None = None, *, lineage: bool = True, experiments: bool = False
    ) -> None:
        """`lineage`: a forked run is answered over its lineage, its ancestors' points up to its fork step
        and then its own (as Neptune answered); else over its own points. `experiments`: one run per
        experiment, its head (docs/topk.md)."""
        self.events = events or Events()
        self.lineage, self.experiments = lineage, experiments
        self._ancestry: pl.DataFrame | None = None
        self._source: QuerySource | None = None
        self._runs_cache: list[RunInfo] | None = None
        self.last_excluded: dict[str, int] = {}
        self.last_stats: dict[str, int] = {}
        self.last_candidates: pl.DataFrame | None = None  # query_pareto: every run that could be placed

    # ---------------------------------------------------------------- what a tracker provides

    def _open_source(self) -> QuerySource:
        raise NotImplementedError

    def _parse_state(self, state: str | None) -> str | None:
        """The state as the source's runs table spells it; BadInput for an unknown one."""
        raise NotImplementedError

    def _run_lineage(self) -> dict[str, dict[str, Any]]:
        """Each run's experiment and fork, by run id (shared.neptune.runs.lineage_fields); none by default."""
        return {}

    def _run_forks(self) -> dict[str, dict[str, Any]]:
        """`_run_lineage` of the forked runs alone (a source may find those for less than every lineage)."""
        return {run: fields for run, fields in self._run_lineage().items() if fields["parent_run_id"]}

    def _forks(self) -> pl.DataFrame | None:
        """The ancestry of every forked run (shared.table.lineage) when the query follows lineages and some
        run forked, else None."""
        if not self.lineage:
            return None
        if self._ancestry is None:
            forks = {
                run_id: Fork(fields["parent_run_id"], fields["fork_step"])
                for run_id, fields in self._run_forks().items()
                if fields["fork_step"] is not None
            }
            known = set(self.source.run_ids()) if forks else set()
            self._ancestry = ancestry(forks, known, self.events)
        return self._ancestry if self._ancestry.height else None

    def _lineage_points(self, keys: Sequence[str], run_ids: Sequence[str] | None) -> pl.DataFrame | None:
        """These runs' points over their lineages (`fork_steps` says up to where each is inherited), or
        None when no run of the source forked (or lineages are not followed)."""
        forks = self._forks()
        if forks is None:
            return None
        wanted = None
        if run_ids is not None:
            ancestors = forks.filter(pl.col(RUN).is_in(list(run_ids)))["ancestor"].to_list()
            wanted = list(dict.fromkeys([*run_ids, *ancestors]))
        points = with_lineage(self.source.points(Asked(list(keys), wanted, series=True)), forks)
        return points.filter(pl.col(RUN).is_in(list(run_ids))) if run_ids is not None else points

    def _read_points(
        self, keys: Sequence[str], run_ids: Sequence[str], *, series: bool = True
    ) -> pl.DataFrame:
        """These runs' points: over their lineages when a run forked, else as the source has them."""
        run_ids = list(run_ids)
        points = self._lineage_points(keys, run_ids)
        if points is None:
            points = self.source.points(Asked(list(keys), run_ids, series=series))
        return points

    def _parents(self) -> dict[str, tuple[str, float]]:
        """Each forked run → its parent and the last step it inherits, when the query follows lineages."""
        forks = self._forks()
        if forks is None:
            return {}
        parents = forks.filter(pl.col("distance") == 1).select(RUN, "ancestor", "until")
        return {run: (parent, until) for run, parent, until in parents.iter_rows()}

    def _heads(self) -> dict[str, str]:
        """Each experiment's head run → the experiment's name (sys/experiment/is_head)."""
        return {
            run_id: fields["experiment"]
            for run_id, fields in self._run_lineage().items()
            if fields["is_head"] and fields["experiment"]
        }

    def _points(self, keys: list[str], run_ids: list[str] | None, aggregation: str, n_steps: int) -> Any:
        """The points a query aggregates: from stored summaries when the source keeps them, else read; a
        forked run's over its lineage. The summaries come first: a source may find the forks in their pass."""
        summarised = None
        if isinstance(self.source, SummarySource):
            summarised = self.source.summary_points(keys, run_ids, aggregation, n_steps)
        forks = self._forks()
        if forks is None:
            if summarised is not None:
                return summarised
            return self.source.points(Asked(keys, run_ids, series=aggregation != "last", required=keys))
        if summarised is None:
            return self._lineage_points(keys, run_ids)
        forked = forks[RUN].unique().to_list()  # over their lineages; the other runs from the summaries
        if run_ids is not None:
            forked = list(set(forked) & set(run_ids))
        own = summarised.filter(~pl.col(RUN).cast(pl.String).is_in(forked))
        if not forked:
            return own
        inherited = self._lineage_points(keys, forked)
        assert inherited is not None
        columns = {RUN: pl.String, "key": pl.String, "step": pl.Float64, "value": pl.Float64}
        return pl.concat([own.collect().cast(columns), inherited.cast(columns)])

    def _unknown_metrics(self, unknown: list[str], known: list[str], where: list[str]) -> BadInput:
        return unknown_metrics_error(unknown, known, where)

    # ---------------------------------------------------------------- the API

    @property
    def source(self) -> QuerySource:
        """The run source, opened on first use."""
        if self._source is None:
            self._source = self._open_source()
        return self._source

    def fetch_runs(self, force_refresh: bool = False) -> list[RunInfo]:
        """Every run with its config (metrics empty); cached until `force_refresh`."""
        if self._runs_cache is None or force_refresh:
            runs = self.source.runs(refresh=force_refresh)
            described = self.source.describe(runs[RUN].to_list())
            self._runs_cache = [
                RunInfo(run_id, name, described[run_id][1], {}, self.source.raw_run(run_id))
                for run_id, name in runs.select(RUN, "name").iter_rows()
            ]
        return self._runs_cache

    def query_topk(
        self,
        metric_key: str,
        k: int = 5,
        minimize: bool = True,
        constraints: Constraints = None,
        aggregation: Aggregation = "last",
        n_steps: int = 10,
        state: str | None = None,
        *,
        where: Where = None,
    ) -> list[RunInfo]:
        """The k best runs by `metric_key` (aggregated), best first, among runs passing every constraint.

        `constraints` maps a metric to a predicate on its aggregated value; `where` adds SQL tests such as
        '"metrics/L0" BETWEEN 30 AND 60'. Runs left out for lacking data are counted in `last_excluded`.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BadInput(f"k must be a positive integer (got {k!r})")
        result, keys = self._rank(
            "query_topk", metric_key, k, minimize, constraints, aggregation, n_steps, state, where
        )
        return self._run_infos(result.ranked, keys)

    def query_pareto(
        self,
        metric_key: str,
        pareto_key: str,
        minimize: bool = True,
        pareto_minimize: bool = True,
        constraints: Constraints = None,
        aggregation: Aggregation = "last",
        n_steps: int = 10,
        state: str | None = None,
        *,
        where: Where = None,
    ) -> list[RunInfo]:
        """The runs no other run beats on both metrics (aggregated alike, after the constraints), in
        order along the front (by `metric_key` ascending). Every run that could be placed is kept in
        `last_candidates` (run_id and one column per metric)."""
        from shared.table.pareto import pareto_front

        if pareto_key == metric_key:
            raise BadInput(f"the Pareto metric must differ from the ranked one (both are {metric_key!r})")
        result, keys = self._rank(
            "query_pareto", metric_key, None, minimize, constraints, aggregation, n_steps, state, where,
            also=[pareto_key],
        )  # fmt: skip
        front = pareto_front(
            result.ranked, metric_key, pareto_key, minimize_x=minimize, minimize_y=pareto_minimize
        )
        self.last_candidates = result.ranked
        self.last_stats["returned"] = front.height
        return self._run_infos(front, keys)

    def _rank(
        self,
        label: str,
        metric_key: str,
        k: int | None,
        minimize: bool,
        constraints: Constraints,
        aggregation: str,
        n_steps: int,
        state: str | None,
        where: Where,
        also: Sequence[str] = (),
    ) -> tuple[TopK, list[str]]:
        """Aggregate, constrain and rank (every candidate when `k` is None); the metrics each run carries."""
        check_aggregation(aggregation, n_steps)
        checks = check_callables(constraints)
        texts = [where] if isinstance(where, str) else list(where or [])
        check_where_size(texts)  # all of them together, before polars parses any
        exprs = [parse_where(text) for text in texts]
        wanted_state = self._parse_state(state)
        required = list(dict.fromkeys([metric_key, *also, *checks, *where_metrics(exprs)]))
        if wanted_state is None and not self.experiments:
            points = self._points(required, None, aggregation, n_steps)
            run_ids = self.source.run_ids()
        else:
            runs = self.source.runs()
            if wanted_state is not None:
                runs = runs.filter(pl.col("state") == wanted_state)
            if self.experiments:
                if not (heads := self._heads()):
                    raise BadInput(
                        "--experiments: no run of this source heads an experiment (sys/experiment/is_head:"
                        " Neptune 3 runs only)"
                    )
                runs = runs.filter(pl.col(RUN).is_in(list(heads)))
            run_ids = runs[RUN].to_list()
            points = self._points(required, run_ids, aggregation, n_steps)
        result = top_k(
            points, metric_key, k=k or sys.maxsize, minimize=minimize, where=exprs, checks=checks,
            constrained=also, runs=run_ids, aggregation=aggregation, n_steps=n_steps,
        )  # fmt: skip
        if result.unseen and result.considered:  # no runs at all: nothing to know metrics from
            # with a state filter, a metric may live only in runs of the other state
            known = self.source.numeric_keys()
            unknown = [key for key in result.unseen if not wanted_state or key not in known]
            if unknown:
                raise self._unknown_metrics(unknown, known, texts)
        self.last_excluded = dict(result.excluded)
        self.last_stats = {
            "considered": result.considered,
            "excluded": sum(result.excluded.values()),
            "failed_constraints": result.failed_constraints,
            "returned": result.ranked.height,
        }
        if result.excluded:
            reasons = ", ".join(f"{count} {reason}" for reason, count in result.excluded.items())
            self.events.note(
                f"{label}: {self.last_stats['excluded']} of {result.considered} runs left out ({reasons})"
            )
        if result.failed_constraints:
            self.events.note(f"{label}: {result.failed_constraints} run(s) did not meet the constraints")
        return result, required

    def _run_infos(self, ranked: pl.DataFrame, keys: list[str]) -> list[RunInfo]:
        described = self.source.describe(ranked[RUN].to_list())
        experiments = self._heads() if self.experiments else {}
        parents = {run: f"{parent}@{until:g}" for run, (parent, until) in self._parents().items()}
        return [
            RunInfo(
                run_id=row[RUN],
                name=experiments.get(row[RUN]) or described[row[RUN]][0],
                config=described[row[RUN]][1],
                metrics={key: row[key] for key in keys},
                raw_run=self.source.raw_run(row[RUN]),
                forked_from=parents.get(row[RUN]),
            )
            for row in ranked.iter_rows(named=True)
        ]

    def metrics_for(
        self,
        run_ids: Sequence[str],
        metric_keys: Sequence[str],
        aggregation: Aggregation = "last",
        n_steps: int = 10,
    ) -> dict[str, dict[str, float | None]]:
        """Aggregated metrics of several runs in one read (None where a run has no finite value)."""
        check_aggregation(aggregation, n_steps)
        keys = list(dict.fromkeys(metric_keys))
        points = self._read_points(keys, run_ids, series=aggregation != "last")
        found = {run_id: dict.fromkeys(keys) for run_id in run_ids}
        for run_id, key, value in aggregate(points, keys, aggregation, n_steps).iter_rows():
            if run_id in found:
                found[run_id][key] = value
        return found

    def get_run_details(
        self,
        run_info: RunInfo,
        metric_keys: list[str] | None = None,
        aggregation: Aggregation = "last",
        n_steps: int = 10,
    ) -> dict[str, Any]:
        """`run_id`, `name`, `config`, `metrics`: the query's metrics plus `metric_keys` aggregated as asked."""
        metrics = dict(run_info.metrics)
        if metric_keys:
            metrics |= self.metrics_for([run_info.run_id], metric_keys, aggregation, n_steps)[run_info.run_id]
        return {
            "run_id": run_info.run_id,
            "name": run_info.name,
            "config": dict(run_info.config),
            "metrics": metrics,
        }

    def curves(self, run_ids: Sequence[str], metric_key: str) -> dict[str, Curve]:
        """Each run's points of `metric_key` in step order, NaN/inf kept (for plots). A point without a
        step (a single number) is placed at its position. A forked run's curve starts with the points it
        inherits (up to its `fork_steps` step) unless the query follows no lineage."""
        points = self._read_points([metric_key], run_ids)
        frame = (
            points.lazy()
            .filter(pl.col("key").cast(pl.String) == metric_key)
            .select(pl.col(RUN).cast(pl.String), "step", "value")
            .with_columns(pl.col("step").fill_null(pl.int_range(pl.len()).over(RUN).cast(pl.Float64)))
            .sort([RUN, "step"], maintain_order=True)
            .group_by(RUN, maintain_order=True)
            .agg("step", "value")
            .collect()
        )
        found: dict[str, Curve] = {run_id: ([], []) for run_id in run_ids}
        for run_id, steps, values in frame.iter_rows():
            if run_id in found:
                found[run_id] = (steps, values)
        return found

    def fork_steps(self, run_ids: Sequence[str]) -> dict[str, float]:
        """The step up to which each of these runs' curves is inherited: the forked runs whose parent the
        source has, when the query follows lineages."""
        wanted = set(run_ids)
        return {run: until for run, (_, until) in self._parents().items() if run in wanted}

    def cleanup(self) -> None:
        """Close every connection the source opened and drop the caches."""
        if self._source is not None:
            self._source.close()
        self._source, self._runs_cache, self._ancestry = None, None, None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.cleanup()
