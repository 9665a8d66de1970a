#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["duckdb>=1.1"]
# ///
"""Peer for bench_many_exports.py: many export folders as one table, as a competent user writes it in DuckDB.

`read_parquet` over every folder's runs file with `union_by_name`, the newest copy of each run by
`QUALIFY row_number()` (heartbeat_at, then the later folder: folder names are dates). `-o` writes the
table (with `_source_file`, the file of each copy); `--metric M --top K` prints the K smallest as JSON
[[id, value], ...]. DuckDB is a dependency of this script only, not of the tools.
"""

import argparse
import json

import duckdb

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("folder")
parser.add_argument("-o", "--output")
parser.add_argument("--metric")
parser.add_argument("--top", type=int, default=5)
args = parser.parse_args()

pattern = f"{args.folder}/*/*_runs.parquet".replace("'", "''")
newest = f"""
    SELECT * EXCLUDE (filename), filename AS _source_file
    FROM read_parquet('{pattern}', union_by_name = true, filename = true)
    QUALIFY row_number() OVER (
        PARTITION BY entity, project, id ORDER BY heartbeat_at DESC NULLS LAST, filename DESC
    ) = 1
"""
if args.output:
    output = args.output.replace("'", "''")
    duckdb.sql(f"COPY ({newest}) TO '{output}' (FORMAT parquet)")
else:
    metric = '"' + args.metric.replace('"', '""') + '"'
    query = (
        f"SELECT id, {metric} FROM ({newest}) WHERE {metric} IS NOT NULL ORDER BY {metric} LIMIT {args.top}"
    )
    print(json.dumps(duckdb.sql(query).fetchall()))
