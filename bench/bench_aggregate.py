#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "numpy>=2",
#     "polars>=2.1",
#     "pyarrow>=26",
# ]
# ///
"""Benchmark: peak memory and time of aggregate_runs.py over many exports whose schemas differ."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.table.schema import CORE_COLUMNS  # noqa: E402

# Runs a command and reports its wall time and the peak RSS of its largest descendant (the python that
# `uv run` starts), measured from outside: getrusage(RUSAGE_CHILDREN) of this otherwise idle wrapper.
WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
elapsed = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"returncode": code.returncode, "seconds": elapsed, "peak_mb": peak_kb / 1024, "stderr": code.stderr[-2000:]}))
"""
EXAMPLES = """\
examples:
  bench_aggregate.py                               # 20 files x 5000 runs x ~300 columns, 3 repeats
  bench_aggregate.py --files 3 --runs 200 --columns 40 --repeats 1 --json
  bench_aggregate.py --check                       # exit 1 unless the peak RSS stays under 2 GB
"""
MODELS = ["filter_bank", "self_attention", "linear_pe", "digress_default", "gnn_all", "gnn_qk"]
GRAPHS = ["ring_of_cliques", "pyg_enzymes", "sbm", "tree", "regular"]


def make_file(path: Path, index: int, runs: int, columns: int, rng: np.random.Generator) -> None:
    """One export; files differ: a column int here float there, a string-vs-number column, own columns."""
    model, graph, k = (
        rng.integers(0, len(MODELS), runs),
        rng.integers(0, len(GRAPHS), runs),
        rng.choice([8, 16, 32, 50], runs),
    )
    ids = [f"f{index:02d}r{i:06d}" for i in range(runs)]
    if index:  # every later file re-exports the last 10% of the previous file's runs
        ids[: runs // 10] = [f"f{index - 1:02d}r{runs - 1 - i:06d}" for i in range(runs // 10)]
    created = np.datetime64("2026-01-01", "us") + rng.integers(0, 10**13, runs).astype("timedelta64[us]")
    data: dict[str, pa.Array] = {
        "id": pa.array(ids),
        "name": pa.array(
            [
                f"stage2c_{MODELS[m]}_{GRAPHS[g]}_k{kk}_s{index}"
                for m, g, kk in zip(model, graph, k, strict=True)
            ]
        ),
        "entity": pa.array(["team"] * runs),
        "project": pa.array(["proj"] * runs),
        "state": pa.array(np.where(rng.random(runs) < 0.9, "finished", "crashed")),
        "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
        "heartbeat_at": pa.array(created + np.timedelta64(index, "h"), pa.timestamp("us", tz="UTC")),
        "runtime_s": pa.array(rng.uniform(1, 1e4, runs)),
        "tags": pa.array([["bench"]] * runs, pa.list_(pa.string())),
        **{  # the other core columns, empty
            name: pa.nulls(runs, dtype)
            for name, dtype in list(CORE_COLUMNS.items())[list(CORE_COLUMNS).index("group") :]
        },
        "config_model_type": pa.array(np.array(MODELS)[model]),
        "config_data_graph_type": pa.array(np.array(GRAPHS)[graph]),
        "config_model_k": pa.array(k if index % 2 else k.astype(float)),  # int in odd files, float in even
        "config_seed": pa.array([str(index)] * runs)
        if index == 3
        else pa.array(np.full(runs, index)),  # string once
    }
    shared_count = (columns - len(data) - 4) * 3 // 4
    for i in range(shared_count):
        data[f"config_p{i:03d}"] = pa.array(rng.normal(size=runs))
    for i in range(columns - len(data) - 4):
        data[f"metric_f{index:02d}_{i:03d}"] = pa.array(rng.normal(size=runs))  # only in this file
    data["metric_test_mse"] = pa.array(rng.uniform(0.1, 5, runs))
    data["metric_test_accuracy"] = pa.array(rng.uniform(0, 1, runs))
    data["_config_json"] = pa.array(
        [f'{{"model": {{"type": "{MODELS[m]}", "k": {kk}}}}}' for m, kk in zip(model, k, strict=True)]
    )
    data["_summary_json"] = pa.array(['{"test/mse": 1.0}'] * runs)
    assert list(data)[: len(CORE_COLUMNS)] == list(CORE_COLUMNS)
    pq.write_table(pa.table(data), path, compression="zstd")


def measure(command: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=True
    )
    figures = json.loads(result.stdout)
    if figures["returncode"] != 0:
        raise SystemExit(f"aggregate failed: {figures['stderr']}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=20, help="export files (default 20)")
    parser.add_argument("--runs", type=int, default=5_000, help="runs per file (default 5000)")
    parser.add_argument("--columns", type=int, default=300, help="columns per file (default 300)")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs after a warm-up (default 3)")
    parser.add_argument("--data", type=Path, help="folder for the synthetic exports (default: a temp folder)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the peak RSS is under 2 GB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.data or Path(scratch)
        exports = folder / "exports"
        exports.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for index in range(args.files):
            make_file(exports / f"team_proj{index:02d}_runs.parquet", index, args.runs, args.columns, rng)
        out = folder / "unified.parquet"
        command = [
            "uv",
            "run",
            str(ROOT / "wandb-tools" / "aggregate_runs.py"),
            str(exports),
            "-o",
            str(out),
            "--protocol",
            "all",
        ]
        measure(command)  # warm-up: the script's environment, the page cache
        runs = [measure(command) for _ in range(args.repeats)]
        written = pq.ParquetFile(out).metadata
        figures = {
            "files": args.files,
            "runs_per_file": args.runs,
            "columns_per_file": args.columns,
            "input_mb": round(sum(p.stat().st_size for p in exports.iterdir()) / 1e6, 1),
            "output_runs": written.num_rows,
            "output_columns": written.num_columns,
            "expected_runs": args.files * args.runs - (args.files - 1) * (args.runs // 10),
            "seconds": round(statistics.median(r["seconds"] for r in runs), 2),
            "peak_rss_mb": round(max(r["peak_mb"] for r in runs)),
            "peak_rss_runs_mb": [round(r["peak_mb"]) for r in runs],
        }
    figures["under_2gb"] = figures["peak_rss_mb"] < 2048
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"{figures['files']} files x {figures['runs_per_file']} runs x {figures['columns_per_file']} columns "
            f"({figures['input_mb']} MB) → {figures['output_runs']} runs x {figures['output_columns']} columns: "
            f"{figures['seconds']} s, peak RSS {figures['peak_rss_mb']} MB (median/max of {args.repeats})"
        )
    ok = figures["under_2gb"] and figures["output_runs"] == figures["expected_runs"]
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
