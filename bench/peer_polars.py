#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["polars>=2.1"]
# ///
"""Peer for bench_topk_peers.py: the top-k query a competent user writes with polars over an archive.

One lazy scan of the project folder's part files (neptune-exporter's layout): keep the wanted attribute
paths and finite values, aggregate each (run, path) series in step order, one column per metric, apply
the constraints (SQL), rank. Prints the k best as JSON: [[run_id, value], ...]. With --read-only it only reads the rows the query
needs (run, path, step, value) and prints their count: the read floor.
"""

import argparse
import json

import polars as pl

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("folder")
parser.add_argument("--metric", required=True)
parser.add_argument(
    "--aggregation", default="last", choices=["last", "min", "max", "mean_all", "mean_last_n"]
)
parser.add_argument("--n-steps", type=int, default=10)
parser.add_argument("-k", type=int, default=10)
parser.add_argument("--where", action="append", default=[], help="SQL over metric names, e.g. '\"a/b\" < 5'")
parser.add_argument("--maximize", action="store_true")
parser.add_argument("--read-only", action="store_true", help="only read the needed rows; print how many")
args = parser.parse_args()

constraints = [pl.sql_expr(text) for text in args.where]
keys = list(dict.fromkeys([args.metric, *(name for c in constraints for name in c.meta.root_names())]))
value = pl.col("float_value").sort_by("step")
aggregate = {
    "last": value.last(),
    "min": value.min(),
    "max": value.max(),
    "mean_all": value.mean(),
    "mean_last_n": value.tail(args.n_steps).mean(),
}[args.aggregation]
points = pl.scan_parquet(f"{args.folder}/*.parquet").filter(pl.col("attribute_path").is_in(keys))
if args.read_only:  # the read floor: these rows' run, path, step and value, nothing computed
    print(points.select("run_id", "attribute_path", "step", "float_value").collect().height)
    raise SystemExit(0)
series = (
    pl.scan_parquet(f"{args.folder}/*.parquet")
    .filter(pl.col("attribute_path").is_in(keys) & pl.col("float_value").is_finite())
    .group_by("run_id", "attribute_path")
    .agg(aggregate.alias("value"))
    .collect()
)
wide = series.pivot(on="attribute_path", index="run_id", values="value")
wide = wide.filter(pl.col(key).is_not_null() for key in keys if key in wide.columns)
if constraints:
    wide = wide.filter(*constraints)
best = wide.sort([args.metric, "run_id"], descending=[args.maximize, False]).head(args.k)
print(json.dumps(best.select("run_id", args.metric).rows()))
