#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "numpy>=2",
#     "polars>=2.1",
#     "pyarrow>=26",
#     "rich>=15",
# ]
# ///
"""Benchmark: analyze_runs.py --top / --group-by / --pivot on a synthetic export, vs a pandas read+groupby."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.table.schema import CORE_COLUMNS  # noqa: E402

MODELS = ["filter_bank", "self_attention", "linear_pe", "spectral_linear", "gnn_all", "gnn_qk", "gnn_v",
          "digress_default", "digress_transformer", "digress_transformer_gnn_qk", "digress_transformer_gnn_v", "digress_spectral"]  # fmt: skip
GRAPHS = [
    "ring_of_cliques",
    "pyg_enzymes",
    "pyg_proteins",
    "sbm",
    "tree",
    "regular",
    "erdos_renyi",
    "planar",
    "grid",
    "ego",
]
OPS = {
    "top": ["--top", "20"],
    "group-by": ["--group-by", "architecture,dataset"],
    "pivot": ["--pivot"],
}
BASELINE = """
import json, statistics, sys, time
import pandas as pd
path, repeats = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(repeats + 1):
    start = time.perf_counter()
    df = pd.read_parquet(path)
    df = df[df["metric_test_mse"].notna()]
    out = df.groupby(["config_model_type", "config_data_graph_type"])["metric_test_mse"].agg(["count", "mean", "std", "min", "max"])
    times.append(time.perf_counter() - start)
print(json.dumps({"median_s": statistics.median(times[1:]), "groups": len(out), "pandas": pd.__version__}))
"""
EXAMPLES = """\
examples:
  bench_analyze.py                                # 100k runs x 300 columns, 3 repeats, pandas baseline
  bench_analyze.py --runs 2000 --columns 60 --repeats 1 --json
  bench_analyze.py --check                        # exit 1 unless every op is under 2 s (in-process and uv run)
"""


def make_export(path: Path, runs: int, columns: int, seed: int = 0) -> None:
    """A runs parquet in the exporter's layout: core, config_*, metric_*, raw JSON; `columns` in total."""
    rng = np.random.default_rng(seed)
    model = rng.integers(0, len(MODELS), runs)
    graph = rng.integers(0, len(GRAPHS), runs)
    k = rng.choice([8, 16, 32, 50], runs)
    stage = rng.integers(1, 4, runs)
    run_seed = rng.integers(0, 5, runs)
    lr = rng.choice([1e-3, 3e-4], runs)
    names = [
        f"stage{s}_{MODELS[m]}_{GRAPHS[g]}_k{kk}_lr{'1e-3' if x == 1e-3 else '3e-4'}_s{r}"
        for s, m, g, kk, x, r in zip(stage, model, graph, k, lr, run_seed, strict=True)
    ]
    mse = (0.1 + 0.3 * model) * (1 + 0.3 * graph) * rng.uniform(0.9, 1.1, runs)
    mse[rng.random(runs) < 0.02] = np.nan
    start = np.datetime64("2026-01-01T00:00:00", "us")
    created = start + rng.integers(0, 10**13, runs).astype("timedelta64[us]")
    data: dict[str, pa.Array] = {
        "id": pa.array([f"r{i:07d}" for i in range(runs)]),
        "name": pa.array(names),
        "entity": pa.array(["graph_denoise_team"] * runs),
        "project": pa.array(["spectral_denoising"] * runs),
        "state": pa.array(np.where(rng.random(runs) < 0.95, "finished", "failed")),
        "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
        "heartbeat_at": pa.array(created + np.timedelta64(3600, "s"), pa.timestamp("us", tz="UTC")),
        "runtime_s": pa.array(rng.uniform(10, 10_000, runs)),
        "tags": pa.array([[f"stage{s}"] for s in stage], pa.list_(pa.string())),
    }
    for name, dtype in CORE_COLUMNS.items():  # the other core columns: group and job_type set, the rest empty
        if name not in data:
            data[name] = pa.array(["x"] * runs) if name in ("group", "job_type") else pa.nulls(runs, dtype)
    data |= {
        "config_data_graph_type": pa.array(np.array(GRAPHS)[graph]),
        "config_model_k": pa.array(k),
        "config_model_type": pa.array(np.array(MODELS)[model]),
        "config_optimizer_lr": pa.array(lr),
        "config_seed": pa.array(run_seed),
    }
    filler = columns - len(data) - 4  # two metrics and two raw JSON columns follow
    for i in range(filler // 2):
        data[f"config_param_{i:03d}"] = (
            pa.array(rng.normal(size=runs)) if i % 3 else pa.array(rng.integers(0, 100, runs))
        )
    data["metric_test_accuracy"] = pa.array(np.clip(1 - mse / 8, 0, 1))
    data["metric_test_mse"] = pa.array(mse)
    for i in range(filler - filler // 2):
        data[f"metric_extra_{i:03d}"] = pa.array(rng.normal(size=runs))
    config_json = [
        f'{{"model": {{"type": "{MODELS[m]}", "k": {kk}}}, "seed": {r}}}'
        for m, kk, r in zip(model, k, run_seed, strict=True)
    ]
    data["_config_json"] = pa.array(config_json)
    data["_summary_json"] = pa.array([f'{{"test/mse": {v}}}' for v in mse])
    assert list(data)[: len(CORE_COLUMNS)] == list(CORE_COLUMNS)
    pq.write_table(pa.table(data), path, compression="zstd")


def timed(function: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """Median wall time of `repeats` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def load_analyze():
    spec = importlib.util.spec_from_file_location("analyze_runs", ROOT / "wandb-tools" / "analyze_runs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_process(module, path: Path, args: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        module.main([str(path), *args, "--format", "json"])


def pandas_baseline(path: Path, repeats: int) -> dict | None:
    """Median pandas read_parquet + groupby time, in its own `uv run --with pandas` process; None if unavailable."""
    command = ["uv", "run", "--no-project", "--with", "pandas", "--with", "pyarrow", "python", "-c", BASELINE]
    result = subprocess.run([*command, str(path), str(repeats)], capture_output=True, text=True, timeout=1800)
    return json.loads(result.stdout) if result.returncode == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=int, default=100_000, help="runs in the synthetic export (default 100000)"
    )
    parser.add_argument(
        "--columns", type=int, default=300, help="columns in the synthetic export (default 300)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats after a warm-up; the median counts (default 3)"
    )
    parser.add_argument("--data", type=Path, help="folder for the synthetic export (default: a temp folder)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the pandas baseline")
    parser.add_argument("--no-cli", action="store_true", help="skip timing whole `uv run` commands")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 unless every op is under 2 s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.data or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "bench_analyze_runs.parquet"
        start = time.perf_counter()
        make_export(path, args.runs, args.columns)
        figures: dict = {
            "runs": args.runs,
            "columns": pq.ParquetFile(path).schema_arrow.__len__(),
            "file_mb": round(path.stat().st_size / 1e6, 1),
            "generate_s": round(time.perf_counter() - start, 2),
            "repeats": args.repeats,
            "ops": {},
        }
        module = load_analyze()
        for op, op_args in OPS.items():
            median, times = timed(lambda a=op_args: in_process(module, path, a), args.repeats)
            figures["ops"][op] = {
                "in_process_s": round(median, 3),
                "in_process_runs_s": [round(t, 3) for t in times],
            }
            if not args.no_cli:
                command = [
                    "uv",
                    "run",
                    str(ROOT / "wandb-tools" / "analyze_runs.py"),
                    str(path),
                    *op_args,
                    "--format",
                    "json",
                ]
                median, times = timed(
                    lambda c=command: subprocess.run(c, check=True, capture_output=True), args.repeats
                )
                figures["ops"][op] |= {
                    "uv_run_s": round(median, 3),
                    "uv_run_runs_s": [round(t, 3) for t in times],
                }
        baseline = None if args.no_baseline else pandas_baseline(path, args.repeats)
        figures["baseline"] = baseline
        if baseline:
            ours = figures["ops"]["group-by"]["in_process_s"]
            figures["baseline_over_group_by"] = round(baseline["median_s"] / ours, 1)
    slowest = max(
        t for op in figures["ops"].values() for k, t in op.items() if k in ("in_process_s", "uv_run_s")
    )
    figures["slowest_s"] = slowest
    figures["under_2s"] = slowest < 2.0
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"{figures['runs']} runs x {figures['columns']} columns ({figures['file_mb']} MB), median of {args.repeats}"
        )
        for op, values in figures["ops"].items():
            cli = f", uv run {values['uv_run_s']:.3f} s" if "uv_run_s" in values else ""
            print(f"  {op:<9} in-process {values['in_process_s']:.3f} s{cli}")
        if baseline:
            print(
                f"  pandas {baseline['pandas']} read+groupby {baseline['median_s']:.3f} s "
                f"({figures['baseline_over_group_by']}x our in-process --group-by)"
            )
    return 1 if args.check and not figures["under_2s"] else 0


if __name__ == "__main__":
    sys.exit(main())
