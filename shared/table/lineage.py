"""Forked runs (Neptune 3): each run's lineage, and its points over it as Neptune showed them.

A fork inherits every point of its parent up to and including its fork step, and with it what the parent
inherited: C forked from B at step 7, B from A at step 4, sees A's points to step 4, B's to step 7, then
its own. An archive holds each run's own points only (neptune-exporter fetches lineage_to_the_root=False),
so the inherited part is rebuilt here from the forking attributes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from shared.base.errors import BadInput
from shared.base.events import Events
from shared.table.series import RUN

# One row per (forked run, ancestor): the ancestor's points up to `until` are the run's too; `distance`
# 1 is the parent (a nearer run's point wins where two have one at a step).
ANCESTRY_SCHEMA = {RUN: pl.String, "ancestor": pl.String, "until": pl.Float64, "distance": pl.Int32}


@dataclass(frozen=True)
class Fork:
    """Where a run forked: its parent's run id and the last step it inherits (may be fractional)."""

    parent: str
    step: float


def ancestry(forks: Mapping[str, Fork], known: set[str], events: Events) -> pl.DataFrame:
    """The ancestors of every forked run (ANCESTRY_SCHEMA). A parent not among the `known` runs ends the
    lineage there, with a warning naming it (the run is answered over the part it has); a cycle in the
    forking attributes is a usage error naming its runs."""
    rows: list[tuple[str, str, float, int]] = []
    missing: dict[str, list[str]] = {}
    for run in sorted(forks):
        path, until, child = [run], math.inf, run
        while child in forks:
            fork = forks[child]
            if fork.parent in path:
                cycle = [*path[path.index(fork.parent) :], fork.parent]
                raise BadInput(
                    f"the forking attributes form a cycle: {' → '.join(cycle)} (sys/forking/parent)"
                )
            if fork.parent not in known:
                missing.setdefault(fork.parent, []).append(child)
                break
            until = min(until, fork.step)
            path.append(fork.parent)
            rows.append((run, fork.parent, until, len(path) - 1))
            child = fork.parent
    for parent, children in sorted(missing.items()):
        children = sorted(set(children))
        events.warn(
            f"run {', '.join(children)} forked from {parent}, which is not in the source: answered over"
            f" the part of its history that is (a partial export?)"
        )
    return pl.DataFrame(rows, schema=ANCESTRY_SCHEMA, orient="row")


def with_lineage(points: pl.DataFrame | pl.LazyFrame, ancestors: pl.DataFrame) -> pl.DataFrame:
    """`points` (run_id, key, step, value) plus every point each forked run inherits (`ancestors`: the
    ANCESTRY_SCHEMA rows of `ancestry`); of two points of a run at one (key, step), the nearer run's is kept
    (its own first)."""
    own = (
        points.lazy()
        .select(
            pl.col(RUN).cast(pl.String),
            pl.col("key").cast(pl.String),
            pl.col("step").cast(pl.Float64),
            pl.col("value").cast(pl.Float64),
        )
        .collect()
    )
    inherited = (
        ancestors.join(own.rename({RUN: "ancestor"}), on="ancestor")
        .filter(pl.col("step") <= pl.col("until"))
        .select(RUN, "key", "step", "value", "distance")
    )
    return (
        pl.concat([own.with_columns(pl.lit(0, pl.Int32).alias("distance")), inherited])
        .sort([RUN, "key", "step", "distance"], nulls_last=False)
        .unique([RUN, "key", "step"], keep="first", maintain_order=True)
        .select(RUN, "key", "step", "value")
    )
