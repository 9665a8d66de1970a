"""What both query_topk.py scripts run once their flags (shared.cli.query_args) are parsed: a top-k or
Pareto query, printed as table/JSON/CSV/markdown, written to -o, drawn to --plot."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

from shared.base.errors import BadInput, UnknownMetric
from shared.cli.main import log
from shared.cli.output import print_as
from shared.query.api import RunInfo, TopkQuery
from shared.table.metrics import close_metrics, resolve_metric
from shared.table.outputs import rows_frame, write_table


def run_query(query: TopkQuery, args: argparse.Namespace) -> int:
    """Run the query the flags describe, then print it as --format says (and write -o, draw --plot)."""
    try:
        with contextlib.redirect_stdout(sys.stderr):  # tracker clients log to stdout; stdout is for data
            try:
                results = ask(query, args)
            except UnknownMetric as error:  # perhaps a metric named by its column (metric_test_mse)
                known = query.source.numeric_keys()
                if not rename_metrics(args, known):
                    raise unknown_metric(error, args, known) from None
                results = ask(query, args)
            if args.details and results:
                known = query.source.numeric_keys()
                args.details = list(dict.fromkeys(resolve_metric(key, known) or key for key in args.details))
                extra = query.metrics_for(
                    [r.run_id for r in results], args.details, args.aggregation, args.n_steps
                )
                for r in results:
                    r.metrics |= {
                        key: value for key, value in extra[r.run_id].items() if key not in r.metrics
                    }
            if args.plot is not None:
                draw(query, results, args)
    except pl.exceptions.ComputeError as error:  # how polars reports a truncated or non-parquet file
        raise BadInput(f"cannot read the runs: {str(error).strip().splitlines()[0]}") from None
    finally:
        query.cleanup()
    answer = [r.to_dict() for r in results]
    first = "#" if args.pareto else "rank"
    if args.output or args.format != "table":
        rows = table_rows(results, args.details, first=first, exact=True)
        metrics = [args.metric, *([args.pareto] if args.pareto else []), *args.details]
        table = rows_frame(
            rows, list(rows[0]) if rows else [first, "run id", "name", *dict.fromkeys(metrics)]
        )
        if args.output:
            write_table(table, args.output, document=answer)
            log(f"wrote {len(answer)} runs to {args.output}")
        if args.format != "table":
            print_as(table, args.format, document=answer)
            return 0
    from shared.cli.tables import print_table

    rows = table_rows(results, args.details, first=first)
    metrics = [args.metric, *([args.pareto] if args.pareto else []), *args.details]
    print_table(rows, title=title(query, len(results), args), empty="no run matched", keep=metrics)
    return 0


def ask(query: TopkQuery, args: argparse.Namespace) -> list[RunInfo]:
    """The top k or the Pareto front the flags ask for."""
    options: dict[str, Any] = {
        "aggregation": args.aggregation,
        "n_steps": args.n_steps,
        "state": args.state,
        "where": args.where,
    }
    if args.pareto:
        return query.query_pareto(
            args.metric, args.pareto, not args.maximize, not args.pareto_maximize, **options
        )
    return query.query_topk(args.metric, args.k, not args.maximize, **options)


def rename_metrics(args: argparse.Namespace, known: list[str]) -> bool:
    """--metric and --pareto as the keys they name (`metric_test_mse` → `test/mse`); True if one changed."""
    changed = False
    for flag in ("metric", "pareto"):
        requested = getattr(args, flag)
        key = resolve_metric(requested, known) if requested else None
        if key is not None and key != requested:
            log(f"--{flag} {requested}: the metric {key}")
            setattr(args, flag, key)
            changed = True
    return changed


def unknown_metric(error: UnknownMetric, args: argparse.Namespace, known: list[str]) -> UnknownMetric:
    """The engine's unknown-metric error, plus the names closest to --metric or --pareto compared as
    columns, which it does not suggest (`metric_train_lozz` is far from `train/loss` as written)."""
    hints = []
    for name in (args.metric, args.pareto):
        close = [c for c in close_metrics(name, known) if repr(c) not in str(error)] if name else []
        if name and name not in known and close:
            hints.append(f"as a column {name!r} is closest to {', '.join(map(repr, close))}")
    return UnknownMetric("; ".join([str(error), *hints]), error.unknown, error.known) if hints else error


def title(query: TopkQuery, returned: int, args: argparse.Namespace) -> str:
    """`top 5 of 120 runs: min last(train/loss)` or the Pareto equivalent."""

    def axis(metric: str, maximize: bool) -> str:
        return f"{'max' if maximize else 'min'} {args.aggregation}({metric})"

    considered = query.last_stats.get("considered", 0)
    if args.pareto:
        versus = f"{axis(args.metric, args.maximize)} vs {axis(args.pareto, args.pareto_maximize)}"
        return f"Pareto front: {returned} of {considered} runs, {versus}"
    return f"top {returned} of {considered} runs: {axis(args.metric, args.maximize)}"


AXIS_AGGREGATION = {"mean_last_n": "mean of last {n}", "min": "min", "max": "max", "mean_all": "mean"}


def axis_label(metric: str, aggregation: str, n_steps: int) -> str:
    """A metric as a plot axis: its key, and (short, for column width) how it was aggregated unless last."""
    if aggregation == "last":
        return metric
    return f"{metric}, {AXIS_AGGREGATION[aggregation].format(n=n_steps)}"


def draw(query: TopkQuery, results: list[RunInfo], args: argparse.Namespace) -> None:
    """The plot of a top-k answer (the runs' curves) or of a Pareto front (every run, the front)."""
    from shared.analysis.plots import plot_curves, plot_pareto

    if not results:
        log(f"no run matched: {args.plot} not written")
        return
    if args.pareto:
        assert query.last_candidates is not None
        x, y = (axis_label(metric, args.aggregation, args.n_steps) for metric in (args.metric, args.pareto))
        points = query.last_candidates.select(pl.col(args.metric).alias(x), pl.col(args.pareto).alias(y))
        front = pl.DataFrame(
            {
                "name": [r.name for r in results],
                x: [r.metrics[args.metric] for r in results],
                y: [r.metrics[args.pareto] for r in results],
            }
        )
        plot_pareto(
            args.plot,
            points,
            front,
            x=x,
            y=y,
            minimize_x=not args.maximize,
            minimize_y=not args.pareto_maximize,
        )
    else:
        curves = query.curves([r.run_id for r in results], args.metric)
        forks = query.fork_steps([r.run_id for r in results])
        plot_curves(
            args.plot,
            [(r.name, *curves[r.run_id]) for r in results],
            inherited=[forks.get(r.run_id) for r in results],
            metric=args.metric,
            aggregation=args.aggregation,
            n_steps=args.n_steps,
            log_y=True if args.log_y else None,
            events=query.events,
        )
    log(f"wrote {args.plot}")


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as `a.b` keys (a flat one is returned as it is)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat |= flat_config(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _cell(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) else value


def table_rows(
    results: Sequence[RunInfo], details: Iterable[str], first: str = "rank", *, exact: bool = False
) -> list[dict[str, Any]]:
    """Rows of the table: rank, id, name, metrics, then the config values that differ between runs; floats
    to 6 significant digits for the terminal unless `exact` (files, csv)."""
    cell = (lambda value: value) if exact else _cell
    configs = [flat_config(r.config) for r in results]
    varying = sorted(
        {key for config in configs for key in config if len({repr(c.get(key)) for c in configs}) > 1}
    )[:5]
    keys = list(dict.fromkeys([*(results[0].metrics if results else {}), *details]))
    forked = any(r.forked_from for r in results)  # metrics over lineages: say whose points they include
    return [
        {first: rank, "run id": r.run_id, "name": r.name}
        | ({"forked from": r.forked_from} if forked else {})
        | {key: cell(r.metrics.get(key)) for key in keys}
        | {key: cell(config.get(key)) for key in varying}
        for rank, (r, config) in enumerate(zip(results, configs, strict=True), 1)
    ]
