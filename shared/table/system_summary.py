"""A few summaries of each run's system metrics for the runs table (schema.CORE's `cpu_mean`, …), made
from the system rows an export collects, with each tracker's keys as logged (W&B's, Neptune's)."""

from __future__ import annotations

from typing import NamedTuple

import polars as pl


class Summary(NamedTuple):
    pattern: str  # the keys summarised (a regex), W&B's | Neptune's
    mean: bool  # else the peak
    scale: float  # to the column's unit


GB, GIB = 1 / 1024, 1 / 2**30
SUMMARIES = {
    "cpu_mean": Summary(r"^(cpu|monitoring/[^/]+/cpu)$", True, 1.0),
    "memory_peak_gb": Summary(r"^(proc\.memory\.rssMB)$", False, GB),  # W&B: MB of the process
    "gpu_mean": Summary(r"^(gpu\.\d+\.gpu|monitoring/[^/]+/gpu(_\d+)?)$", True, 1.0),
    "gpu_memory_peak_gb": Summary(r"^(gpu\.\d+\.memoryAllocatedBytes)$", False, GIB),
}
# Neptune logs memory in GB already: its keys have their own entries, at scale 1.
NEPTUNE_GB = {
    "memory_peak_gb": r"^monitoring/[^/]+/memory$",
    "gpu_memory_peak_gb": r"^monitoring/[^/]+/gpu_memory(_\d+)?$",
}


# Each summarised key's column and scale, the first matching rule's: one pass over a frame of system rows.
_RULES = [(column, summary.pattern, summary.scale) for column, summary in SUMMARIES.items()]
_RULES += [(column, pattern, 1.0) for column, pattern in NEPTUNE_GB.items()]


def _by_rule(pick: int) -> pl.Expr:
    expression = pl.when(pl.lit(False)).then(None)
    for rule in _RULES:
        expression = expression.when(pl.col("key").str.contains(rule[1])).then(pl.lit(rule[pick]))
    return expression


def summary_samples(rows: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """The system rows (schema.SYSTEM) that a summary takes: run_id, timestamp, `column` (the summary's,
    `cpu_mean`, …) and `value` in its unit (percent, GB); NaN samples left out."""
    return (
        rows.lazy()
        .filter(pl.col("value").is_not_nan())
        .select("run_id", "timestamp", _by_rule(0).alias("column"), pl.col("value") * _by_rule(2))
        .drop_nulls("column")
    )


class SystemSummaries:
    """Partial sums, counts and peaks per run and column, added a frame of system rows at a time."""

    def __init__(self) -> None:
        self._parts: list[pl.DataFrame] = []

    def add(self, rows: pl.DataFrame) -> None:
        found = (
            summary_samples(rows)
            .group_by("run_id", "column")
            .agg(
                pl.col("value").sum().alias("total"),
                pl.col("value").count().alias("count"),
                pl.col("value").max().alias("peak"),
            )
            .collect()
        )
        if found.height:
            self._parts.append(found)

    def values(self) -> dict[str, dict[str, float]]:
        """Each run's summaries, by column."""
        if not self._parts:
            return {}
        combined = (
            pl.concat(self._parts)
            .group_by("run_id", "column")
            .agg(pl.col("total").sum(), pl.col("count").sum(), pl.col("peak").max())
        )
        found: dict[str, dict[str, float]] = {}
        for run_id, column, total, count, peak in combined.iter_rows():
            if count:
                found.setdefault(run_id, {})[column] = total / count if SUMMARIES[column].mean else peak
        return found
