"""Vectorized top-k over tidy metric points (run_id, key, step, value): aggregate, constrain, rank, take k."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from shared.table.series import RUN, aggregate, check_aggregation


@dataclass(frozen=True)
class TopK:
    """The k best runs (best first) and what happened to the others."""

    ranked: pl.DataFrame  # run_id, then one column per metric (required first), at most k rows
    considered: int  # runs in the universe
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> runs left out for lacking data
    failed_constraints: int = 0  # runs with every needed metric that failed a constraint
    unseen: tuple[str, ...] = ()  # needed metrics that no run has a single point of


def _exclusions(long: pl.DataFrame, universe: pl.DataFrame, required: list[str]) -> pl.DataFrame:
    """Per run of the universe: the first reason (in `required` order) it cannot be ranked, or null."""
    order = pl.DataFrame({"key": required, "order": list(range(len(required)))})
    status = (
        universe.join(order, how="cross")
        .join(long.with_columns(pl.lit(True).alias("present")), on=[RUN, "key"], how="left")
        .with_columns(
            pl.when(pl.col("present").is_null())
            .then(pl.lit("missing ") + pl.col("key"))
            .when(pl.col("value").is_null())
            .then(pl.lit("no finite value for ") + pl.col("key"))
            .alias("reason")
        )
    )
    return (
        status.filter(pl.col("reason").is_not_null())
        .sort([RUN, "order"])
        .group_by(RUN, maintain_order=True)
        .agg(pl.col("reason").first())
    )


def _apply_checks(frame: pl.DataFrame, checks: Mapping[str, Callable[[float], bool]]) -> pl.DataFrame:
    """Keep rows whose values pass every Python callable; callables only ever see these candidate rows."""
    keep = [True] * frame.height
    for key, check in checks.items():
        keep = [ok and bool(check(value)) for ok, value in zip(keep, frame[key].to_list(), strict=True)]
    return frame.filter(pl.Series(keep, dtype=pl.Boolean))


def top_k(
    points: pl.DataFrame | pl.LazyFrame,
    target: str,
    *,
    k: int = 5,
    minimize: bool = True,
    where: Iterable[pl.Expr] = (),
    checks: Mapping[str, Callable[[float], bool]] | None = None,
    constrained: Sequence[str] = (),
    extra: Sequence[str] = (),
    runs: Iterable[str] | None = None,
    aggregation: str = "last",
    n_steps: int = 10,
) -> TopK:
    """Aggregate each needed metric per run, drop runs lacking one, apply constraints, rank (ties by run id).

    `where` are polars expressions over metric columns (named by key); `checks` maps a key to a Python
    predicate; `constrained` names further metrics that must be present; `extra` metrics are reported
    but not required. `runs` lists runs that count even without a point (e.g. every run of a project);
    runs with points always count, so filter `points` to leave runs out.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1 (got {k})")
    check_aggregation(aggregation, n_steps)
    where = list(where)
    checks = dict(checks or {})
    referenced = [name for expr in where for name in expr.meta.root_names()]
    required = list(dict.fromkeys([target, *checks, *constrained, *referenced]))
    keys = list(dict.fromkeys([*required, *extra]))
    if RUN in keys:
        raise ValueError(f"a metric may not be called {RUN!r}")
    long = aggregate(points, keys, aggregation, n_steps)
    seen = set(long["key"].unique().to_list())
    listed = pl.DataFrame({RUN: list(runs or [])}, schema={RUN: pl.String})
    universe = pl.concat([listed, long.select(RUN)]).unique().sort(RUN)
    reasons = _exclusions(long, universe, required)
    wide = long.pivot(on="key", index=RUN, values="value") if long.height else universe.clear()
    wide = universe.join(wide, on=RUN, how="left").join(reasons, on=RUN, how="anti")
    wide = wide.with_columns(pl.lit(None, pl.Float64).alias(key) for key in keys if key not in wide.columns)
    wide = wide.select(RUN, *keys)
    candidates = wide.filter(pl.all_horizontal(where)) if where else wide
    candidates = _apply_checks(candidates, checks) if checks else candidates
    ranked = candidates.sort([target, RUN], descending=[not minimize, False], nulls_last=True).head(k)
    counts = reasons.group_by("reason").len().sort("reason").rows()
    return TopK(
        ranked=ranked,
        considered=universe.height,
        excluded=dict(counts),
        failed_constraints=wide.height - candidates.height,
        unseen=tuple(key for key in required if key not in seen),
    )
