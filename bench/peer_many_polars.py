#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["polars>=2.1"]
# ///
"""Peer for bench_many_exports.py: many export folders as one table, as a competent user writes it in polars.

A lazy scan per runs file, concatenated `diagonal_relaxed` (columns unioned, types widened), the newest
copy of each run (by heartbeat_at, then the later folder: folder names are dates). `-o` writes the
table (with `_source_file`, the file of each copy); `--metric M --top K` prints the K smallest as JSON
[[id, value], ...].
"""

import argparse
import glob
import json

import polars as pl

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("folder")
parser.add_argument("-o", "--output")
parser.add_argument("--metric")
parser.add_argument("--top", type=int, default=5)
args = parser.parse_args()

files = sorted(glob.glob(f"{args.folder}/*/*_runs.parquet"))
frame = pl.concat(
    [pl.scan_parquet(f).with_columns(pl.lit(f).alias("_source_file")) for f in files], how="diagonal_relaxed"
)
newest = frame.sort(["heartbeat_at", "_source_file"], descending=True, nulls_last=True).unique(
    subset=["entity", "project", "id"], keep="first"
)
if args.output:
    newest.sink_parquet(args.output)
else:
    best = newest.filter(pl.col(args.metric).is_not_null()).sort(args.metric).head(args.top)
    print(json.dumps(best.select("id", args.metric).collect().rows()))
