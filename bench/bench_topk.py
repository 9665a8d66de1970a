#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "numpy>=2",
#     "polars>=2.1",
#     "pyarrow>=26",
#     "python-dotenv>=1.2",
#     "rich>=15",
# ]
# ///
"""Benchmark: top-k over a neptune-exporter archive, vectorized engine vs the seed's per-run Python loop."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "neptune-tools"))

from query_topk import NeptuneQuery  # noqa: E402

from shared.neptune_archive import sanitized_names  # noqa: E402

PROJECT = "bench-ws/sae-sweep"
METRICS = ["train/loss", "metrics/L0", "metrics/L1", "eval/accuracy"]
TARGET, N_STEPS, K = "train/loss", 10, 10
WHERE = ['"metrics/L0" < 50', '"metrics/L1" > 0.1']
CHECKS: dict[str, Callable[[float], bool]] = {"metrics/L0": lambda x: x < 50, "metrics/L1": lambda x: x > 0.1}
EXAMPLES = """\
examples:
  bench_topk.py                                   # 10k runs x 1k steps x 4 metrics (40M points), 3 repeats
  bench_topk.py --runs 200 --steps 50 --json      # a quick look
  bench_topk.py --check                           # exit 1 unless >= 50x faster and under 5 s
"""
# neptune-exporter's model.SCHEMA (src/neptune_exporter/model.py), the layout of every part file.
SCHEMA = pa.schema(
    [
        ("project_id", pa.string()),
        ("run_id", pa.string()),
        ("attribute_path", pa.string()),
        ("attribute_type", pa.string()),
        ("step", pa.decimal128(18, 6)),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("int_value", pa.int64()),
        ("float_value", pa.float64()),
        ("string_value", pa.string()),
        ("bool_value", pa.bool_()),
        ("datetime_value", pa.timestamp("ms", tz="UTC")),
        ("string_set_value", pa.list_(pa.string())),
        ("file_value", pa.struct([("path", pa.string())])),
        (
            "histogram_value",
            pa.struct(
                [("type", pa.string()), ("edges", pa.list_(pa.float64())), ("values", pa.list_(pa.float64()))]
            ),
        ),
    ]
)


def _table(columns: dict[str, Any], rows: int) -> pa.Table:
    return pa.table({f.name: columns.get(f.name, pa.nulls(rows, f.type)) for f in SCHEMA}, schema=SCHEMA)


def _series(rng: np.random.Generator, steps: int) -> dict[str, np.ndarray]:
    t = np.arange(steps) / max(steps - 1, 1)
    scale = rng.uniform(0.5, 2.0)
    return {
        "train/loss": scale * np.exp(-3 * t) + rng.normal(0, 0.02, steps) + rng.uniform(0, 0.3),
        "metrics/L0": rng.uniform(10, 90) + rng.normal(0, 2, steps),
        "metrics/L1": rng.uniform(0, 0.5) + rng.normal(0, 0.01, steps),
        "eval/accuracy": 1 - 0.5 * np.exp(-2 * t) + rng.normal(0, 0.01, steps),
    }


def write_run(folder: Path, index: int, steps: int, rng: np.random.Generator) -> None:
    """One run as neptune-exporter writes it: a parameters row group, then a metrics row group."""
    run_id = f"SAE-{index + 1}"
    params = {"sys/id": run_id, "sys/name": f"sweep-{index % 97}", "parameters/lr": 10 ** rng.uniform(-5, -2)}
    params |= {"parameters/width": int(2 ** rng.integers(10, 15)), "parameters/seed": index}
    kinds = {str: "string", float: "float", int: "int"}
    n = len(params)
    meta = _table(
        {
            "project_id": pa.array([PROJECT] * n),
            "run_id": pa.array([run_id] * n),
            "attribute_path": pa.array(list(params)),
            "attribute_type": pa.array([kinds[type(v)] for v in params.values()]),
            "string_value": pa.array([v if isinstance(v, str) else None for v in params.values()]),
            "float_value": pa.array(
                [v if isinstance(v, float) else None for v in params.values()], pa.float64()
            ),
            "int_value": pa.array([v if isinstance(v, int) else None for v in params.values()], pa.int64()),
        },
        n,
    )
    series = _series(rng, steps)
    if index % 100 == 7:  # a diverged run: its loss ends in NaN/inf
        series["train/loss"][-(N_STEPS // 2) :] = [np.nan, np.inf] * (N_STEPS // 4) + [np.nan] * (
            N_STEPS // 2 % 2
        )
    if index % 50 == 3:  # a run that never logged L1
        del series["metrics/L1"]
    m = steps * len(series)
    stamps = (1_700_000_000_000 + np.arange(steps) * 1000).astype("datetime64[ms]")
    points = _table(
        {
            "project_id": pa.array([PROJECT] * m),
            "run_id": pa.array([run_id] * m),
            "attribute_path": pa.array(np.repeat(list(series), steps)),
            "attribute_type": pa.array(["float_series"] * m),
            "step": pa.array(np.tile(np.arange(steps, dtype=np.int32), len(series))).cast(
                pa.decimal128(18, 6)
            ),
            "timestamp": pa.array(np.tile(stamps, len(series))).cast(pa.timestamp("ms", tz="UTC")),
            "float_value": pa.array(np.concatenate(list(series.values()))),
        },
        m,
    )
    name = f"{sanitized_names(run_id)[0]}_part_0.parquet"  # the exporter's naming: sanitized id + digest
    with pq.ParquetWriter(folder / name, SCHEMA, compression="snappy") as writer:
        writer.write_table(meta)
        writer.write_table(points)


def make_archive(data: Path, runs: int, steps: int) -> Path:
    """`data/<project folder>/` with one part file per run; reused when it already matches."""
    folder = data / sanitized_names(PROJECT)[0]
    manifest = data / "bench-manifest.json"
    wanted = {"runs": runs, "steps": steps, "metrics": METRICS, "version": 2}
    if manifest.is_file() and json.loads(manifest.read_text()) == wanted:
        return folder
    shutil.rmtree(data, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(20260305)
    for index in range(runs):
        write_run(folder, index, steps, rng)
    manifest.write_text(json.dumps(wanted))
    return folder


def fetch_values(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The stand-in for `run[key].fetch_values()`: one read of one series of one run."""
    table = pq.read_table(path, columns=["step", "float_value"], filters=[("attribute_path", "=", key)])
    return table["step"].cast(pa.float64()).to_numpy(), table["float_value"].to_numpy(zero_copy_only=False)


def seed_loop(folder: Path) -> list[tuple[str, float]]:
    """The seed's approach: for each run, fetch each constrained metric then the target, aggregate in Python."""
    valid = []
    for path in sorted(folder.glob("*.parquet")):
        run_id = pq.read_table(path, columns=["run_id"], filters=[("attribute_path", "=", "sys/id")])[0][
            0
        ].as_py()
        metrics: dict[str, float] = {}
        for key in [*CHECKS, TARGET]:
            steps, values = fetch_values(path, key)
            values = values[np.argsort(steps, kind="stable")]
            values = values[np.isfinite(values)]
            if len(values) == 0:
                break
            metrics[key] = float(np.mean(values[-N_STEPS:]))
            if key in CHECKS and not CHECKS[key](metrics[key]):
                break
        else:
            valid.append((run_id, metrics[TARGET]))
    valid.sort(key=lambda item: (item[1], item[0]))
    return valid[:K]


def engine_query(data: Path) -> list[tuple[str, float]]:
    """Ours, end to end and cold: open the archive, read the runs table and the needed series, rank."""
    query = NeptuneQuery(PROJECT, source=data)
    try:
        found = query.query_topk(TARGET, k=K, aggregation="mean_last_n", n_steps=N_STEPS, where=WHERE)
    finally:
        query.cleanup()
    return [(r.run_id, r.metrics[TARGET]) for r in found]


def timed(function: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def cli_command(data: Path) -> list[str]:
    command = ["uv", "run", str(ROOT / "neptune-tools" / "query_topk.py"), str(data), "--project", PROJECT]
    command += ["--metric", TARGET, "-k", str(K), "--aggregation", "mean_last_n", "--n-steps", str(N_STEPS)]
    return [*command, *(arg for w in WHERE for arg in ("--where", w)), "--json"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats of each side (median; default 3)"
    )
    default_data = Path(tempfile.gettempdir()) / "run-tools-bench"
    parser.add_argument(
        "--data", type=Path, help=f"archive folder, reused when it matches (default: {default_data}/…)"
    )
    parser.add_argument("--no-cli", action="store_true", help="skip timing the whole `uv run` command")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 unless >= 50x faster and under 5 s")
    args = parser.parse_args()
    data = args.data or default_data / f"topk-{args.runs}x{args.steps}"
    start = time.perf_counter()
    folder = make_archive(data, args.runs, args.steps)
    generated = time.perf_counter() - start
    points = args.runs * args.steps * len(METRICS)
    ours, ours_times, ours_answer = timed(lambda: engine_query(data), args.repeats)
    base, base_times, base_answer = timed(lambda: seed_loop(folder), args.repeats)
    same = [r for r, _ in ours_answer] == [r for r, _ in base_answer] and np.allclose(
        [v for _, v in ours_answer], [v for _, v in base_answer]
    )
    figures: dict[str, Any] = {
        "runs": args.runs, "steps": args.steps, "metrics": len(METRICS), "points": points,
        "cpus": os.cpu_count(), "archive_s": round(generated, 2),
        "baseline_s": round(base, 3), "baseline_runs_s": [round(t, 3) for t in base_times],
        "ours_s": round(ours, 3), "ours_runs_s": [round(t, 3) for t in ours_times],
        "speedup": round(base / ours, 1), "same_answer": bool(same),
    }  # fmt: skip
    if not args.no_cli:
        command = cli_command(data)
        subprocess.run(command, check=True, capture_output=True)  # warm-up: uv env, page cache
        cli, cli_times, _ = timed(
            lambda: subprocess.run(command, check=True, capture_output=True), args.repeats
        )
        figures |= {"uv_run_s": round(cli, 3), "uv_run_runs_s": [round(t, 3) for t in cli_times]}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, value in figures.items():
            print(f"{name:>16}: {value}")
    if not same:
        print("error: the engine and the per-run loop disagree", file=sys.stderr)
        return 1
    if args.check and (figures["speedup"] < 50 or ours >= 5):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
