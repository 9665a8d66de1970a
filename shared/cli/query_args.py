"""The flags both query_topk.py scripts share, light (no polars, no client): --help answers at once."""

from __future__ import annotations

import argparse

from shared.base.errors import BadInput
from shared.base.storage import check_output_file
from shared.cli.args import add_format_argument, int_argument, path_argument, state_argument, text_argument
from shared.table.vocabulary import AGGREGATIONS, STATES, check_output_suffix

QUERY_NOTES = """\
--where takes a SQL test over metric keys in double quotes, parsed by polars (never eval), applied to
each metric aggregated like the target. Runs lacking the target or a constrained metric, or left with
no finite value, are left out and counted on stderr. Ties break by run id.

--pareto METRIC gives the runs no other run beats on both --metric and METRIC (each aggregated like
the target, after the --where tests), in order along the front (by --metric ascending); --top (-k)
does not apply. --maximize sets the direction of --metric, --pareto-maximize that of METRIC.

--state takes the run states of both trackers (running, finished, failed, crashed, …; Neptune's active
is running, inactive finished); another word is exit 2.

Metrics are named as logged (test/mse) or as their export column (metric_test_mse, test_mse).

--plot FILE (.png, .svg or .pdf) draws the returned runs' curves of --metric over steps with the
aggregation window shaded (--log-y: on a log y axis; by default when positive values span two decades),
or with --pareto every run as a point and the front as a line.

--format: table (default), csv, json ([{run_id, name, config, metrics}], as --json) or markdown.
-o FILE also writes the answer by extension: .json the JSON, .csv .parquet .md the table.
"""


def add_query_arguments(parser: argparse.ArgumentParser, *, workers_help: str) -> None:
    """The flags every top-k verb takes (the source is the script's own)."""
    parser.add_argument(
        "--metric",
        required=True,
        type=text_argument,
        metavar="KEY",
        help="metric to rank by, as logged (train/loss) or as its column (metric_train_loss)",
    )
    parser.add_argument(
        "--top",
        "-k",
        dest="k",
        type=int_argument,
        default=5,
        metavar="N",
        help="how many runs to return (default: 5)",
    )
    parser.add_argument(
        "--maximize",
        "--descending",
        action="store_true",
        help="higher is better (default: lower is better)",
    )
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
        "--n-steps",
        type=int_argument,
        default=10,
        metavar="N",
        help="points averaged by mean_last_n (default: 10)",
    )
    parser.add_argument("--state", type=state_argument, help=f"only runs in this state: {', '.join(STATES)}")
    parser.add_argument("--details", metavar="KEY,KEY", help="more metrics to show for each returned run")
    parser.add_argument(
        "--pareto",
        type=text_argument,
        metavar="METRIC",
        help="the Pareto front of --metric against METRIC instead of the top k, e.g. --pareto metrics/L0",
    )
    parser.add_argument(
        "--pareto-maximize", action="store_true", help="with --pareto: higher METRIC is better"
    )
    parser.add_argument(
        "--plot", type=path_argument, metavar="FILE", help="also draw the answer to FILE (.png, .svg, .pdf)"
    )
    parser.add_argument(
        "--log-y", action="store_true", help="with --plot of a top-k answer: the curves on a log y axis"
    )
    add_format_argument(parser, note=" (JSON: [{run_id, name, config, metrics}])")
    parser.add_argument(
        "-o",
        "--output",
        type=path_argument,
        metavar="FILE",
        help="also write the answer to FILE by extension: .json (the JSON), .csv .parquet .md (the table)",
    )
    parser.add_argument("--workers", type=int_argument, default=8, metavar="N", help=workers_help)


def check_query_arguments(args: argparse.Namespace) -> None:
    """Check the shared flags before any work: counts, the Pareto pair, the plot and output paths."""
    if args.k < 1 or args.n_steps < 1 or args.workers < 1:
        raise BadInput("--top (-k), --n-steps and --workers must be at least 1")
    if args.pareto_maximize and not args.pareto:
        raise BadInput("--pareto-maximize needs --pareto METRIC")
    if args.log_y and (args.plot is None or args.pareto):
        raise BadInput(
            "--log-y needs --plot FILE of a top-k answer (the curves; a front scales its own axes)"
        )
    if args.pareto is not None and args.pareto == args.metric:
        raise BadInput("--pareto must name another metric than --metric")
    args.details = [key.strip() for key in (args.details or "").split(",") if key.strip()]
    if args.plot is not None:
        from shared.analysis.plots import check_plot_path

        args.plot = check_plot_path(args.plot)
    if args.output is not None:
        check_output_file(args.output, "-o")  # first: a folder is named as one, whatever its name
        check_output_suffix(args.output)


def add_lineage_arguments(parser: argparse.ArgumentParser) -> None:
    """Neptune 3's forks and experiments (docs/topk.md): lineages followed by default, as Neptune did."""
    parser.add_argument(
        "--no-lineage",
        action="store_true",
        help="a forked run over its own points only (default: also those it inherits, as Neptune showed it)",
    )
    parser.add_argument(
        "--experiments",
        action="store_true",
        help="one row per experiment: its head run, over the head's lineage (Neptune 3)",
    )
