"""A query source over runs listed with their config and summary, history read on demand: the base of the W&B sources and of export folders."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from shared.base.events import Events
from shared.table.schema import POINTS_SCHEMA, RUNS_SCHEMA, is_internal_key
from shared.table.series import RUN
from shared.table.source import Asked

SUMMARY_SCHEMA = {RUN: pl.String, "key": pl.String, "value": pl.Float64}


def summary_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float | None]:
    """The metric keys of a run summary: numbers as floats (NaN/inf kept), nested dicts as `a.b` keys
    (as W&B names them in history) and the dict itself as None (its values live in the history: a
    define_metric summary). Text, booleans, lists, media and W&B's own `_` keys are left out."""
    found: dict[str, float | None] = {}
    for name, value in summary.items():
        key = f"{prefix}{name}"
        if is_internal_key(key):
            continue
        if isinstance(value, Mapping):
            if "_type" not in value:  # a histogram or other media is not a metric
                found[key] = None
                found |= summary_metrics(value, f"{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[key] = float(value)
    return found


def text_keys(summary: Mapping[str, Any]) -> set[str]:
    """Summary keys holding text, booleans or lists: present, but no metric."""
    return {key for key, value in summary.items() if isinstance(value, str | bool | list)}


@dataclass(frozen=True)
class ListedRun:
    """A run as a source lists it: what the runs table, RunInfo and the summary values need."""

    run_id: str
    name: str
    state: str
    config: dict[str, Any]
    summary: dict[str, Any]
    raw: Any


def points_frame(columns: dict[str, list[Any]]) -> pl.DataFrame:
    """Points (POINTS_SCHEMA) from columns of values."""
    return pl.DataFrame(columns, schema=POINTS_SCHEMA)


class RecordSource:
    """A query source whose runs are listed with config and summary (`_list`): the runs table, summary
    values as single points, history (`_history`) where a series is wanted. `last_from="history"` answers
    `last` from the history's last finite point rather than the summary."""

    def __init__(self, *, last_from: str = "summary", events: Events | None = None) -> None:
        self.last_from = last_from
        self.events = events or Events()
        self._runs: pl.DataFrame | None = None
        self._listed: dict[str, ListedRun] = {}
        self._summary = pl.DataFrame(schema=SUMMARY_SCHEMA)

    def _list(self) -> Iterator[ListedRun]:
        raise NotImplementedError

    def _history(self, pairs: pl.DataFrame, *, needed: bool) -> pl.DataFrame:
        """Points (POINTS_SCHEMA) of these (run_id, key) pairs; `needed`: the query cannot do without."""
        raise NotImplementedError

    def _forget_history(self) -> None:
        """Drop cached history (the runs are listed again)."""

    def runs(self, *, refresh: bool = False) -> pl.DataFrame:
        if self._runs is None or refresh:
            self._forget_history()
            self._listed = {run.run_id: run for run in self._list()}
            listed = list(self._listed.values())
            self._runs = pl.DataFrame(
                {
                    RUN: list(self._listed),
                    "name": [r.name for r in listed],
                    "state": [r.state for r in listed],
                },
                schema=RUNS_SCHEMA,
            )
            values = [
                (r.run_id, key, value) for r in listed for key, value in summary_metrics(r.summary).items()
            ]
            self._summary = pl.DataFrame(values, schema=SUMMARY_SCHEMA, orient="row")
        return self._runs

    def run_ids(self) -> list[str]:
        return self.runs()[RUN].to_list()

    def points(self, asked: Asked) -> pl.LazyFrame:
        """Summary values as single points, or history where a series is wanted; only runs whose
        summary names every `required` key have their history read (the others cannot rank)."""
        keys, run_ids, series, required = asked
        self.runs()
        summary = self._summary.filter(pl.col("key").is_in(list(keys)))
        if run_ids is not None:
            summary = summary.filter(pl.col(RUN).is_in(list(run_ids)))
        wanted = summary
        needed = list(dict.fromkeys(required))
        if needed:
            counts = summary.filter(pl.col("key").is_in(needed)).group_by(RUN).len()
            wanted = wanted.join(counts.filter(pl.col("len") == len(needed)), on=RUN, how="semi")
        from_history = series or self.last_from == "history"
        if not from_history:  # last: the summary value, unless it is NaN/inf or a dict
            wanted = wanted.filter(~pl.col("value").is_finite().fill_null(False))
        history = self._history(wanted.select(RUN, "key"), needed=from_history)
        single = summary.join(history.select(RUN, "key").unique(), on=[RUN, "key"], how="anti")
        single = single.filter(pl.col("value").is_not_null()).select(
            RUN, "key", pl.lit(None, pl.Float64).alias("step"), "value"
        )
        return pl.concat([history, single]).lazy()

    def describe(self, run_ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Name and config of each run."""
        self.runs()
        return {run_id: (self._listed[run_id].name, self._listed[run_id].config) for run_id in run_ids}

    def numeric_keys(self) -> list[str]:
        self.runs()
        return sorted(self._summary.filter(pl.col("value").is_not_null())["key"].unique().to_list())

    def text_keys(self) -> set[str]:
        """Summary keys that hold text, booleans or lists in some run."""
        self.runs()
        return {key for run in self._listed.values() for key in text_keys(run.summary)}

    def raw_run(self, run_id: str) -> Any:
        self.runs()
        return self._listed[run_id].raw

    def close(self) -> None:
        self._runs, self._listed = None, {}
        self._summary = pl.DataFrame(schema=SUMMARY_SCHEMA)
        self._forget_history()
