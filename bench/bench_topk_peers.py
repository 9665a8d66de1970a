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
"""Benchmark: the top-k query as whole commands, ours against what a user would write with polars or DuckDB.

The archive is written as neptune-exporter writes one (bench_topk.make_archive: a snappy part file per
run, the exporter's 14 columns, the simple attributes and then one row group per series, NaN as null),
10k runs x 1k steps x 4 metrics by default. For each of the five aggregations, without and with the
constraint ("metrics/L0" < 50 and "metrics/L1" > 0.1), every side runs as its own `uv run` process:

- ours, first: `neptune-tools/query_topk.py ... --json` with an empty summary cache;
- ours, repeated: the same command again, the summaries cached by the first;
- polars: bench/peer_polars.py, a lazy scan of the folder, filter, group_by, pivot, constrain, rank;
- DuckDB: bench/peer_duckdb.py, the same in SQL over read_parquet (DuckDB is that script's dependency only);
- read floor: bench/peer_polars.py --read-only, reading the needed rows (run, path, step, value) and
  nothing else: the least a first query over these files can take with this reader.

Rounds are interleaved (each round runs every side of every query once, so a load change on the
machine hits them all) and every figure is a median. The answers (ids and values of the k best) of
ours and both peers must agree, or the bench exits 1. Every command gets an untimed warm-up run first,
which readies its script environment. The archive stays in the OS page cache: all sides read memory.
"""

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
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from bench_topk import N_STEPS, PROJECT, TARGET, WHERE, K, make_archive  # noqa: E402

X = "\N{MULTIPLICATION SIGN}"
AGGREGATIONS = ("last", "mean_last_n", "min", "max", "mean_all")
CONSTRAINED = ("metrics/L0", "metrics/L1")
SIDES = ("ours_first", "ours_repeated", "polars", "duckdb", "read_floor")
EXAMPLES = """\
examples:
  bench_topk_peers.py --json                       # 10k runs x 1k steps x 4 metrics, 3 rounds
  bench_topk_peers.py --runs 300 --steps 50        # a quick look
  bench_topk_peers.py --only last --markdown       # one aggregation, rows for BENCHMARKS.md
"""


def commands(folder: Path, aggregation: str, constrained: bool) -> dict[str, list[str]]:
    """Each side's command line for one query."""
    where = [arg for text in WHERE for arg in ("--where", text)] if constrained else []
    query = ["--metric", TARGET, "-k", str(K), "--aggregation", aggregation, "--n-steps", str(N_STEPS)]
    ours = ["uv", "run", str(ROOT / "neptune-tools" / "query_topk.py"), str(folder), *query, *where, "--json"]
    polars = ["uv", "run", str(BENCH / "peer_polars.py"), str(folder), *query, *where]
    keys = [arg for key in CONSTRAINED for arg in ("--key", key)] if constrained else []
    return {
        "ours_first": ours,
        "ours_repeated": ours,
        "polars": polars,
        "duckdb": ["uv", "run", str(BENCH / "peer_duckdb.py"), str(folder), *query, *where, *keys],
        "read_floor": [*polars, "--read-only"],
    }


def answer(side: str, stdout: str) -> list[tuple[str, float]] | None:
    """The k best (id, value) a side printed; None for the read floor (it prints a row count)."""
    if side == "read_floor":
        return None
    if side.startswith("ours"):
        return [(run["run_id"], run["metrics"][TARGET]) for run in json.loads(stdout)]
    return [(run_id, value) for run_id, value in json.loads(stdout)]


def agree(first: list[tuple[str, float]], second: list[tuple[str, float]]) -> bool:
    return [r for r, _ in first] == [r for r, _ in second] and bool(
        np.allclose([v for _, v in first], [v for _, v in second], rtol=1e-9, atol=0)
    )


def run(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout


def markdown(figures: dict[str, Any]) -> str:
    """Rows for BENCHMARKS.md: per query, every side's median and ours against the faster peer."""
    lines = [
        "| query | ours, first | ours, repeated | polars | DuckDB | read floor "
        "| first vs faster peer | first vs floor | repeated vs faster peer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, q in figures["queries"].items():
        m = q["median_s"]
        peer = min(m["polars"], m["duckdb"])
        lines.append(
            f"| {name} | {m['ours_first']:.2f} s | {m['ours_repeated']:.2f} s | {m['polars']:.2f} s "
            f"| {m['duckdb']:.2f} s | {m['read_floor']:.2f} s | {m['ours_first'] / peer:.2f}{X} "
            f"| {m['ours_first'] / m['read_floor']:.2f}{X} | {peer / m['ours_repeated']:.1f}{X} faster |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median; default 3)")
    parser.add_argument("--only", help=f"comma-separated aggregations (default: {','.join(AGGREGATIONS)})")
    default_data = Path(tempfile.gettempdir()) / "run-tools-bench"
    parser.add_argument(
        "--data", type=Path, help=f"archive folder, reused when it matches (default under {default_data})"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--markdown", action="store_true", help="print rows for BENCHMARKS.md")
    args = parser.parse_args()
    aggregations = args.only.split(",") if args.only else list(AGGREGATIONS)
    data = args.data or default_data / f"topk-exporter-{args.runs}x{args.steps}"
    folder = make_archive(data, args.runs, args.steps)
    cache_home = Path(tempfile.mkdtemp(prefix="bench-topk-peers-"))
    # Our summary cache goes to a temporary folder; uv keeps its own (XDG_CACHE_HOME would move it too).
    env = os.environ | {"XDG_CACHE_HOME": str(cache_home), "UV_CACHE_DIR": uv_cache_dir()}
    queries = {
        f"{aggregation}{' + constraint' if constrained else ''}": commands(folder, aggregation, constrained)
        for aggregation in aggregations
        for constrained in (False, True)
    }
    times: dict[str, dict[str, list[float]]] = {name: {side: [] for side in SIDES} for name in queries}
    answers: dict[str, dict[str, Any]] = {name: {} for name in queries}
    try:
        for sides in queries.values():  # untimed: every script's environment, the archive in the page cache
            for command in {tuple(c) for c in sides.values()}:
                run(list(command), env)
        for _ in range(args.repeats):
            for name, sides in queries.items():
                for side in SIDES:
                    if side == "ours_first":
                        shutil.rmtree(cache_home / "run-tools", ignore_errors=True)
                    seconds, stdout = run(sides[side], env)
                    times[name][side].append(seconds)
                    answers[name][side] = answer(side, stdout)
    finally:
        shutil.rmtree(cache_home, ignore_errors=True)
    same = all(
        agree(found, answers[name]["ours_first"])
        for name in queries
        for found in answers[name].values()
        if found is not None
    )
    figures: dict[str, Any] = {
        "runs": args.runs, "steps": args.steps, "metrics": 4, "k": K, "n_steps": N_STEPS,
        "project": PROJECT, "cpus": os.cpu_count(), "repeats": args.repeats, "same_answer": same,
        "queries": {
            name: {
                "median_s": {side: round(statistics.median(t), 3) for side, t in sides.items()},
                "runs_s": {side: [round(x, 3) for x in t] for side, t in sides.items()},
            }
            for name, sides in times.items()
        },
    }  # fmt: skip
    if args.json:
        print(json.dumps(figures, indent=2))
    if args.markdown or not args.json:
        print(markdown(figures))
    if not same:
        print("error: ours and the peers disagree on the k best", file=sys.stderr)
        return 1
    return 0


def uv_cache_dir() -> str:
    return subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
