#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "neptune>=1.14",
#     "polars>=2.1",
#     "pyarrow>=26",
#     "python-dotenv>=1.2",
#     "rich>=15",
# ]
# ///
"""Top-k Neptune runs by a metric under constraints: a live server, a neptune-exporter archive or .neptune offline runs."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl

from shared.cli import UsageError, log, run_main
from shared.constraints import check_callables, parse_where, unknown_metrics_error, where_metrics
from shared.neptune_sources import STATES, RunSource, SummarySource, config_of, open_source, parse_state
from shared.topk import AGGREGATIONS, Aggregation, aggregate, check_aggregation, top_k

__all__ = ["NeptuneQuery", "RunInfo"]

EXAMPLES = """\
examples:
  query_topk.py exports/data --project team/sae --metric train/loss -k 5
  query_topk.py exports/data/team_sae-1a2b3c4d5e6f7a8b --metric eval/accuracy --maximize --aggregation max
  query_topk.py .neptune --metric train/loss --where '"metrics/L0" < 50' --where '"metrics/L1" > 0.1'
  query_topk.py .neptune --metric train/loss --where '"metrics/L0" BETWEEN 30 AND 60' --json
  query_topk.py team/sae --metric train/loss --aggregation mean_last_n --n-steps 20 --state inactive
  query_topk.py team/sae --metric train/loss --details eval/accuracy,metrics/L0 -o best.json

sources (PROJECT_OR_PATH): an existing folder is read from disk: a neptune-exporter data folder
(<data>/<project>/*.parquet; --project picks one of several) or a .neptune folder of offline runs.
Anything else is a workspace/project on the Neptune server the token points at (read-only; token from
--api-token, NEPTUNE_API_TOKEN or a .env file).

An archive's first query reads the needed series of every run and keeps small per-series summaries in
$XDG_CACHE_HOME/run-tools (~/.cache/run-tools); later queries on the unchanged archive (same files,
sizes and modification times) answer from those. --no-cache neither reads nor writes them.

--where takes a SQL test over metric paths in double quotes, parsed by polars (never eval), applied to
each metric aggregated like the target. Runs lacking the target or a constrained metric, or left with
no finite value, are left out and counted on stderr. Ties break by run id.
exit codes: 0 done (also when no run matched), 1 a server fetch failed, 2 bad input or no token.
"""


@dataclass
class RunInfo:
    """One run in a query answer: id, name, config (parameters), aggregated metrics, the run object."""

    run_id: str
    name: str
    config: dict[str, Any]
    metrics: dict[str, float | None]
    raw_run: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready fields (everything but raw_run)."""
        return {"run_id": self.run_id, "name": self.name, "config": self.config, "metrics": self.metrics}


class NeptuneQuery:
    """Query Neptune runs with metric constraints and top-k selection (read-only, cached per instance)."""

    def __init__(
        self,
        project: str | None = None,
        api_token: str | None = None,
        *,
        source: str | Path | None = None,
        workers: int = 8,
        cache: bool = True,
    ) -> None:
        """`project` as workspace/project; `source` a neptune-exporter data folder or a .neptune folder.

        With `cache`, an archive keeps per-series summaries in the user's cache folder
        ($XDG_CACHE_HOME/run-tools, ~/.cache/run-tools): later queries on the unchanged archive answer
        from those, exactly as from the points (a mean_last_n window over 100 points reads the archive).
        """
        self.project, self.api_token, self.source_path, self.workers = project, api_token, source, workers
        self.cache = cache
        self._source: RunSource | None = None
        self._runs_cache: list[RunInfo] | None = None
        self.last_excluded: dict[str, int] = {}
        self.last_stats: dict[str, int] = {}

    @property
    def source(self) -> RunSource:
        """The run source, opened on first use."""
        if self._source is None:
            self._source = open_source(
                self.project,
                source=self.source_path,
                api_token=self.api_token,
                workers=self.workers,
                cache=self.cache,
            )
        return self._source

    def fetch_runs(self, force_refresh: bool = False) -> list[RunInfo]:
        """Every run with its config (metrics empty); cached until `force_refresh`."""
        if self._runs_cache is None or force_refresh:
            runs = self.source.runs(refresh=force_refresh)
            attributes = self.source.attributes(runs["run_id"].to_list())
            self._runs_cache = [
                RunInfo(run_id, name, config_of(attributes[run_id]), {}, self.source.raw_run(run_id))
                for run_id, name in runs.select("run_id", "name").iter_rows()
            ]
        return self._runs_cache

    def query_topk(
        self,
        metric_key: str,
        k: int = 5,
        minimize: bool = True,
        constraints: dict[str, Callable[[float], bool]] | None = None,
        aggregation: Aggregation = "last",
        n_steps: int = 10,
        state: str | None = None,
        *,
        where: str | Sequence[str] | None = None,
    ) -> list[RunInfo]:
        """The k best runs by `metric_key` (aggregated), best first, among runs passing every constraint.

        `constraints` maps a metric to a predicate on its aggregated value; `where` adds SQL tests such as
        '"metrics/L0" BETWEEN 30 AND 60'. Runs left out for lacking data are counted in `last_excluded`.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UsageError(f"k must be a positive integer (got {k!r})")
        check_aggregation(aggregation, n_steps)
        checks = check_callables(constraints)
        texts = [where] if isinstance(where, str) else list(where or [])
        exprs = [parse_where(text) for text in texts]
        wanted_state = parse_state(state)
        required = list(dict.fromkeys([metric_key, *checks, *where_metrics(exprs)]))
        if wanted_state is None:
            points = self._points(required, None, aggregation, n_steps)
            run_ids = self.source.run_ids()
        else:
            runs = self.source.runs()
            run_ids = runs.filter(pl.col("state") == wanted_state)["run_id"].to_list()
            points = self._points(required, run_ids, aggregation, n_steps)
        result = top_k(
            points, metric_key, k=k, minimize=minimize, where=exprs, checks=checks, runs=run_ids,
            aggregation=aggregation, n_steps=n_steps,
        )  # fmt: skip
        if result.unseen:  # with a state filter, a metric may live only in runs of the other state
            known = self.source.numeric_keys()
            unknown = [key for key in result.unseen if not wanted_state or key not in known]
            if unknown:
                raise unknown_metrics_error(unknown, known, texts)
        self.last_excluded = dict(result.excluded)
        self.last_stats = {
            "considered": result.considered,
            "excluded": sum(result.excluded.values()),
            "failed_constraints": result.failed_constraints,
            "returned": result.ranked.height,
        }
        if result.excluded:
            reasons = ", ".join(f"{count} {reason}" for reason, count in result.excluded.items())
            log(f"query_topk: {self.last_stats['excluded']} of {result.considered} runs left out ({reasons})")
        return self._run_infos(result.ranked, required)

    def _points(
        self, keys: list[str], run_ids: list[str] | None, aggregation: str, n_steps: int
    ) -> pl.LazyFrame:
        """The points a query aggregates: from stored summaries when the source has them, else read."""
        if isinstance(self.source, SummarySource):
            points = self.source.summary_points(keys, run_ids, aggregation, n_steps)
            if points is not None:
                return points
        return self.source.points(keys, run_ids, series=aggregation != "last", required=keys)

    def _run_infos(self, ranked: pl.DataFrame, keys: list[str]) -> list[RunInfo]:
        attributes = self.source.attributes(ranked["run_id"].to_list())
        return [
            RunInfo(
                run_id=row["run_id"],
                name=str(attributes[row["run_id"]].get("sys/name") or row["run_id"]),
                config=config_of(attributes[row["run_id"]]),
                metrics={key: row[key] for key in keys},
                raw_run=self.source.raw_run(row["run_id"]),
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
        points = self.source.points(keys, list(run_ids), series=aggregation != "last")
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

    def cleanup(self) -> None:
        """Close every connection the source opened and drop the caches."""
        if self._source is not None:
            self._source.close()
        self._source, self._runs_cache = None, None

    def __enter__(self) -> NeptuneQuery:
        return self

    def __exit__(self, *_: object) -> None:
        self.cleanup()


# ---------------------------------------------------------------- command line

_PROJECT_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="query_topk.py",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "target", metavar="PROJECT_OR_PATH", help="workspace/project on the server, or a folder"
    )
    parser.add_argument(
        "--metric", required=True, metavar="KEY", help="metric path to rank by, e.g. train/loss"
    )
    parser.add_argument("-k", type=int, default=5, metavar="N", help="how many runs to return (default: 5)")
    parser.add_argument("--maximize", action="store_true", help="higher is better (default: lower is better)")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="EXPR",
        help="constraint, repeatable: '\"metrics/L0\" < 50'",
    )
    parser.add_argument(
        "--aggregation", choices=AGGREGATIONS, default="last", help="per-run value (default: last)"
    )
    parser.add_argument(
        "--n-steps", type=int, default=10, metavar="N", help="points averaged by mean_last_n (default: 10)"
    )
    parser.add_argument("--state", choices=STATES, help="only runs in this state")
    parser.add_argument("--details", metavar="KEY,KEY", help="more metrics to show for each returned run")
    parser.add_argument(
        "--project", metavar="NAME", help="the project inside an archive holding several (workspace/project)"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help="JSON on stdout: [{run_id, name, config, metrics}]"
    )
    output.add_argument("-o", "--output", type=Path, metavar="FILE", help="also write that JSON to FILE")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="archives: neither read nor write the series summaries kept in ~/.cache/run-tools",
    )
    parser.add_argument(
        "--api-token",
        metavar="TOKEN",
        help="Neptune API token (prefer NEPTUNE_API_TOKEN or .env: flags show in ps)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=8,
        metavar="N",
        help="concurrent series fetches from a server (default: 8)",
    )
    args = parser.parse_args(argv)
    if args.k < 1 or args.n_steps < 1 or args.workers < 1:
        parser.error("-k, --n-steps and --workers must be at least 1")
    args.details = [key.strip() for key in (args.details or "").split(",") if key.strip()]
    return args


def open_query(args: argparse.Namespace) -> NeptuneQuery:
    """A NeptuneQuery on the folder or project the command line names."""
    path = Path(args.target).expanduser()
    if path.exists():
        return NeptuneQuery(args.project, source=path, cache=not args.no_cache)
    if args.project or not _PROJECT_NAME.match(args.target):
        raise UsageError(f"{args.target} is neither an existing folder nor a workspace/project name")
    return NeptuneQuery(args.target, args.api_token, workers=args.workers)


def _cell(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) else value


def table_rows(results: Sequence[RunInfo], details: Iterable[str]) -> list[dict[str, Any]]:
    """Rows for the terminal: rank, id, name, metrics, then the config values that differ between runs."""
    varying = sorted(
        {key for r in results for key in r.config if len({repr(o.config.get(key)) for o in results}) > 1}
    )[:5]
    keys = list(dict.fromkeys([*(results[0].metrics if results else {}), *details]))
    return [
        {"rank": rank, "run id": r.run_id, "name": r.name}
        | {key: _cell(r.metrics.get(key)) for key in keys}
        | {key: _cell(r.config.get(key)) for key in varying}
        for rank, r in enumerate(results, 1)
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    query = open_query(args)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the neptune client logs to stdout; stdout is for data
            results = query.query_topk(
                args.metric, k=args.k, minimize=not args.maximize, aggregation=args.aggregation,
                n_steps=args.n_steps, state=args.state, where=args.where,
            )  # fmt: skip
            if args.details and results:
                extra = query.metrics_for(
                    [r.run_id for r in results], args.details, args.aggregation, args.n_steps
                )
                for r in results:
                    r.metrics |= {
                        key: value for key, value in extra[r.run_id].items() if key not in r.metrics
                    }
    finally:
        query.cleanup()
    answer = [r.to_dict() for r in results]
    if args.json:
        print(json.dumps(answer, indent=2, default=str))
        return 0
    if args.output:
        from shared.storage import write_json

        write_json(answer, args.output)
        log(f"wrote {len(answer)} runs to {args.output}")
    from shared.tables import print_table

    order = "max" if args.maximize else "min"
    stats = query.last_stats
    title = f"top {len(results)} of {stats['considered']} runs: {order} {args.aggregation}({args.metric})"
    print_table(table_rows(results, args.details), title=title, empty="no run matched")
    return 0


if __name__ == "__main__":
    run_main(main)
