#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["duckdb>=1.1"]
# ///
"""Peer for bench_topk_peers.py: the top-k query a competent user writes in DuckDB SQL over an archive.

`read_parquet` over the project folder's part files (neptune-exporter's layout): keep the wanted
attribute paths and finite values, aggregate each (run, path) series in step order, one column per
metric (a FILTERed aggregate), apply the constraints (SQL), rank. Prints the k best as JSON:
[[run_id, value], ...]. DuckDB is a dependency of this script only, not of the tools.
"""

import argparse
import json

import duckdb

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("folder")
parser.add_argument("--metric", required=True)
parser.add_argument(
    "--aggregation", default="last", choices=["last", "min", "max", "mean_all", "mean_last_n"]
)
parser.add_argument("--n-steps", type=int, default=10)
parser.add_argument("-k", type=int, default=10)
parser.add_argument("--where", action="append", default=[], help="SQL over metric names, e.g. '\"a/b\" < 5'")
parser.add_argument(
    "--key", action="append", default=[], help="a metric a --where names (DuckDB cannot list them)"
)
parser.add_argument("--maximize", action="store_true")
args = parser.parse_args()

keys = list(dict.fromkeys([args.metric, *args.key]))
aggregate = {
    "last": "arg_max(v, step)",
    "min": "min(v)",
    "max": "max(v)",
    "mean_all": "avg(v)",
    "mean_last_n": f"list_avg(list(v ORDER BY step DESC)[1:{args.n_steps}])",
}[args.aggregation]
quoted = ", ".join("'" + key.replace("'", "''") + "'" for key in keys)
columns = ", ".join(f"any_value(value) FILTER (WHERE key = '{key}') AS \"{key}\"" for key in keys)
present = " AND ".join(f'"{key}" IS NOT NULL' for key in keys)
where = " AND ".join([present, *(f"({text})" for text in args.where)])
sql = f"""
WITH series AS (
    SELECT run_id, attribute_path AS key, {aggregate} AS value
    FROM (
        SELECT run_id, attribute_path, CAST(step AS DOUBLE) AS step, float_value AS v
        FROM read_parquet('{args.folder}/*.parquet')
        WHERE attribute_path IN ({quoted}) AND isfinite(float_value)
    )
    GROUP BY run_id, attribute_path
), wide AS (
    SELECT run_id, {columns} FROM series GROUP BY run_id
)
SELECT run_id, "{args.metric}" FROM wide WHERE {where}
ORDER BY "{args.metric}" {"DESC" if args.maximize else "ASC"}, run_id LIMIT {args.k}
"""
print(json.dumps([list(row) for row in duckdb.sql(sql).fetchall()]))
