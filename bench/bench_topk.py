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
"""Benchmark: top-k over a neptune-exporter archive, vectorized engine vs the seed's per-run Python loop.

The query: the 10 runs with the lowest mean_last_n(train/loss) over the last 10 points, among runs with
mean_last_n(metrics/L0) < 50 and mean_last_n(metrics/L1) > 0.1, over 10k runs x 1k steps x 4 metrics
(40M points) written as neptune-exporter writes them (one part file per run, its schema).

Baseline (`seed_loop`): the seed's NeptuneQuery.query_topk (nqgl/sae_components,
src/saeco/analysis/neptune_query.py at e443afc, the version shared/seeds/neptune-query-tool.md
documents) pointed at the archive. The seed loops over runs in Python; per run, `_check_constraints`
calls `run[key].fetch_values()` for each constrained metric in order and stops at the first one that
is missing or fails its test, then the target is fetched the same way, and each series is aggregated
with numpy (`_get_metric_value`). Against an archive a run is its part files, and one `fetch_values()`
is one read of those files keeping the rows of that attribute path: `fetch_values` below, the cheapest
such read we measured (pyarrow ParquetFile.read of three columns, then a filter: ~0.4-0.7 ms a call;
`pq.read_table(filters=...)` takes ~0.9-1.5 ms). So: one read per run per metric it gets to, nothing
shared between them, as the seed does. The run id comes with the target's read (the seed has it from
its runs table). Points are ordered by step and non-finite ones dropped, the engine's rules, so both
sides must give the same answer. Also as in the seed: its fetch_runs opens every run (`init_run`) and
fetches its config before the loop (here: one read of the run's files keeping its parameters/*), and
query_topk fetches the constrained series of every run that passes a second time, to report them.
Opening a run costs nothing here (no server): against a live project each fetch is a request.

Ours (`engine_query`): NeptuneQuery(...).query_topk in this process, end to end (open the archive,
read, aggregate, rank, read the winners' attributes), timed three ways:
- cold: the first query on the archive, with an empty series-summary cache (it reads the needed series
  of every run and writes their summaries);
- no cache: cache=False, every query reads the series of every run;
- warm: the same query once the summaries are cached.
Also timed, for reference: reading alone (`read_floor`, the four needed columns of every file and nothing
else), the least any first query can take. Then the whole command, `uv run neptune-tools/query_topk.py ... --json` (after an untimed run that
readies the script's environment), the same three ways: uv_run_cold, uv_run (warm), uv_run_no_cache.
The archive stays in the OS page cache throughout: both sides read from memory. The sides take turns
in each of --repeats rounds (a load change on the machine hits them all) and every figure is the median;
the summary cache lives in a temporary folder, deleted at the end.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "neptune-tools"))

from query_topk import NeptuneQuery  # noqa: E402

from shared.neptune.archive import sanitized_names  # noqa: E402

PROJECT = "bench-ws/sae-sweep"
METRICS = ["train/loss", "metrics/L0", "metrics/L1", "eval/accuracy"]
TARGET, N_STEPS, K = "train/loss", 10, 10
WHERE = ['"metrics/L0" < 50', '"metrics/L1" > 0.1']
CHECKS: dict[str, Callable[[float], bool]] = {"metrics/L0": lambda x: x < 50, "metrics/L1": lambda x: x > 0.1}
EXAMPLES = """\
examples:
  bench_topk.py                                   # 10k runs x 1k steps x 4 metrics (40M points), 3 repeats
  bench_topk.py --runs 200 --steps 50 --json      # a quick look
  bench_topk.py --check      # exit 1 unless warm >= 50x faster than the baseline and every query < 5 s
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
    """One run as neptune-exporter writes it: a snappy ParquetWriter, one `write_batch` (row group) per
    batch, the simple attributes first and then each series, NaN series values stored as null."""
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
    stamps = pa.array((1_700_000_000_000 + np.arange(steps) * 1000).astype("datetime64[ms]"))
    step = pa.array(np.arange(steps, dtype=np.int32)).cast(pa.decimal128(18, 6))
    name = f"{sanitized_names(run_id)[0]}_part_0.parquet"  # the exporter's naming: sanitized id + digest
    with pq.ParquetWriter(folder / name, SCHEMA, compression="snappy") as writer:
        writer.write_table(meta)
        for path, values in series.items():
            points = {
                "project_id": pa.array([PROJECT] * steps),
                "run_id": pa.array([run_id] * steps),
                "attribute_path": pa.array([path] * steps),
                "attribute_type": pa.array(["float_series"] * steps),
                "step": step,
                "timestamp": stamps.cast(pa.timestamp("ms", tz="UTC")),
                "float_value": pa.array(values, pa.float64(), mask=np.isnan(values)),  # NaN -> null
            }
            writer.write_table(_table(points, steps))


def make_archive(data: Path, runs: int, steps: int) -> Path:
    """`data/<project folder>/` with one part file per run; reused when it already matches."""
    folder = data / sanitized_names(PROJECT)[0]
    manifest = data / "bench-manifest.json"
    wanted = {"runs": runs, "steps": steps, "metrics": METRICS, "version": 3}
    if manifest.is_file() and json.loads(manifest.read_text()) == wanted:
        return folder
    shutil.rmtree(data, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(20260305)
    for index in range(runs):
        write_run(folder, index, steps, rng)
    manifest.write_text(json.dumps(wanted))
    return folder


FETCH_COLUMNS = ["attribute_path", "step", "float_value"]


def run_parts(folder: Path) -> list[list[Path]]:
    """Each run's part files, grouped by the exporter's names: `<sanitized run id>_part_<n>.parquet`."""
    parts: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*_part_*.parquet")):
        parts.setdefault(path.name.rsplit("_part_", 1)[0], []).append(path)
    return list(parts.values())


def fetch_values(parts: list[Path], key: str, columns: list[str] = FETCH_COLUMNS) -> pa.Table:
    """`run[key].fetch_values()` against an archive: read the run's part files, keep the rows of `key`."""
    tables = [pq.ParquetFile(path, pre_buffer=False).read(columns, use_threads=False) for path in parts]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return table.filter(pc.equal(table["attribute_path"], key))


def mean_last_n(series: pa.Table) -> float | None:
    """The seed's `_get_metric_value(run, key, "mean_last_n", n_steps)`, by step, finite points only."""
    steps = series["step"].cast(pa.float64()).to_numpy()
    values = series["float_value"].to_numpy()[np.argsort(steps, kind="stable")]
    values = values[np.isfinite(values)]
    return float(np.mean(values[-N_STEPS:])) if len(values) else None


CONFIG_COLUMNS = ["attribute_path", "string_value", "float_value", "int_value"]


def fetch_config(parts: list[Path]) -> dict[str, Any]:
    """fetch_runs opening a run and fetching its config: one read of its part files keeping parameters/*."""
    tables = [
        pq.ParquetFile(path, pre_buffer=False).read(CONFIG_COLUMNS, use_threads=False) for path in parts
    ]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    params = table.filter(pc.starts_with(table["attribute_path"], "parameters/"))
    values = pc.coalesce(
        params["string_value"], params["float_value"].cast(pa.string()), params["int_value"].cast(pa.string())
    )
    return dict(zip(params["attribute_path"].to_pylist(), values.to_pylist(), strict=True))


def seed_loop(folder: Path) -> list[tuple[str, float]]:
    """The seed's query_topk: fetch_runs (every run's config), then per run each constrained metric (stop at
    the first failure), the target, and for a run that passes its constrained series again, to report."""
    runs = run_parts(folder)
    configs = [fetch_config(parts) for parts in runs]
    valid = []
    for parts, _config in zip(runs, configs, strict=True):
        for key, test in CHECKS.items():
            value = mean_last_n(fetch_values(parts, key))
            if value is None or not test(value):
                break
        else:
            target = fetch_values(parts, TARGET, [*FETCH_COLUMNS, "run_id"])
            value = mean_last_n(target)
            if value is not None:
                reported = {key: mean_last_n(fetch_values(parts, key)) for key in CHECKS}
                assert all(v is not None for v in reported.values())
                valid.append((target["run_id"][0].as_py(), value))
    valid.sort(key=lambda item: (item[1], item[0]))
    return valid[:K]


def read_floor(folder: Path) -> int:
    """Reading alone: the four columns any query needs (run, path, step, value) of every part file, with
    nothing filtered, converted or ranked. No first query can take less; the baseline over this bounds
    what speed-up a first query can reach."""
    files = [str(path) for path in sorted(folder.glob("*.parquet"))]
    return pl.scan_parquet(files).select("run_id", "attribute_path", "step", "float_value").collect().height


def engine_query(data: Path, *, cache: bool = True) -> list[tuple[str, float]]:
    """Ours, end to end: open the archive, read the series (or their cached summaries), rank, describe."""
    query = NeptuneQuery(PROJECT, source=data, cache=cache)
    try:
        found = query.query_topk(TARGET, k=K, aggregation="mean_last_n", n_steps=N_STEPS, where=WHERE)
    finally:
        query.cleanup()
    return [(r.run_id, r.metrics[TARGET]) for r in found]


def cli_command(data: Path, *extra: str) -> list[str]:
    command = ["uv", "run", str(ROOT / "neptune-tools" / "query_topk.py"), str(data), "--project", PROJECT]
    command += ["--metric", TARGET, "-k", str(K), "--aggregation", "mean_last_n", "--n-steps", str(N_STEPS)]
    return [*command, *(arg for w in WHERE for arg in ("--where", w)), "--json", *extra]


def cli_query(command: list[str]) -> list[tuple[str, float]]:
    found = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return [(r["run_id"], r["metrics"][TARGET]) for r in found]


def rounds(
    sides: dict[str, Callable[[], Any]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Time every side once per round, rounds interleaved (a load change on the machine hits all sides)."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    answers: dict[str, list[Any]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, side in sides.items():
            start = time.perf_counter()
            answers[name].append(side())
            times[name].append(time.perf_counter() - start)
    return times, answers


def agree(answer: list[tuple[str, float]], expected: list[tuple[str, float]]) -> bool:
    return [r for r, _ in answer] == [r for r, _ in expected] and bool(
        np.allclose([v for _, v in answer], [v for _, v in expected])
    )


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
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless the warm query is >= 50x faster than the baseline and every query takes < 5 s",
    )
    args = parser.parse_args()
    data = args.data or default_data / f"topk-{args.runs}x{args.steps}"
    start = time.perf_counter()
    folder = make_archive(data, args.runs, args.steps)
    generated = time.perf_counter() - start
    cache_home = Path(tempfile.mkdtemp(prefix="bench-topk-cache-"))
    os.environ["XDG_CACHE_HOME"] = str(cache_home)  # ours and the commands below: never the user's cache

    def cold(side: Callable[[], list[tuple[str, float]]]) -> Callable[[], list[tuple[str, float]]]:
        """`side` with an empty summary cache (emptying it is timed too: it takes a millisecond)."""

        def run() -> list[tuple[str, float]]:
            shutil.rmtree(cache_home / "run-tools", ignore_errors=True)
            return side()

        return run

    try:
        engine_query(data, cache=False)  # untimed: puts the archive in the OS page cache for both sides
        sides = {
            "cold": cold(lambda: engine_query(data)),
            "warm": lambda: engine_query(data),
            "no_cache": lambda: engine_query(data, cache=False),
            "baseline": lambda: seed_loop(folder),
            "read_floor": lambda: read_floor(folder),
        }
        if not args.no_cli:
            cli_query(cli_command(data, "--no-cache"))  # untimed: the script's environment
            sides |= {
                "uv_run_cold": cold(lambda: cli_query(cli_command(data))),
                "uv_run": lambda: cli_query(cli_command(data)),
                "uv_run_no_cache": lambda: cli_query(cli_command(data, "--no-cache")),
            }
        times, answers = rounds(sides, args.repeats)
    finally:
        shutil.rmtree(cache_home, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["baseline"]
    del answers["read_floor"]  # a row count, not a ranking
    same = all(agree(answer, answers["baseline"][0]) for side in answers.values() for answer in side)
    figures: dict[str, Any] = {
        "runs": args.runs, "steps": args.steps, "metrics": len(METRICS),
        "points": args.runs * args.steps * len(METRICS), "cpus": os.cpu_count(),
        "archive_s": round(generated, 2),
    }  # fmt: skip
    for name, values in times.items():
        figures |= {f"{name}_s": round(medians[name], 3), f"{name}_runs_s": [round(t, 3) for t in values]}
    for name in ("cold", "no_cache", "warm", "read_floor"):
        figures[f"speedup_{name}"] = round(base / medians[name], 1)
    figures["same_answer"] = same
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, value in figures.items():
            print(f"{name:>22}: {value}")
    if not same:
        print("error: the engine and the per-run loop disagree", file=sys.stderr)
        return 1
    slowest = max(medians[name] for name in ("cold", "no_cache", "warm"))
    if args.check and (figures["speedup_warm"] < 50 or slowest >= 5):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
