#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "numpy>=2",
#     "polars>=2.1",
#     "psutil>=7",
#     "pyarrow>=26",
# ]
# ///
"""Benchmark: aggregate and analyze over many export folders (a folder per night), ours against the peers.

The folders are made from ONE real export of the bundled samples by our exporter (samples/wandb →
`wandb-tools/export_runs.py`): its runs file and metadata are replicated per night with changed values,
each with its own generation (footer and metadata agree, as the exporter writes them) and export time.
One project, 50 runs x 60 columns per folder; every night 2 new runs start, a run changes (heartbeat,
state, metrics) for 5 nights and then stays finished, so a finished run's later copies tie on
`heartbeat_at` and the later export wins. Cached under /tmp/run-tools-bench/many-exports-N.

Every side is a whole `uv run` process, rounds interleaved, medians; peak RSS (whole tree; largest process):
- ours: `aggregate_runs.py SNAPS/ -o u.parquet --no-enrich --protocol all` and
  `analyze_runs.py SNAPS/ --metric test/mse --top 5 --format json`;
- polars (bench/peer_many_polars.py): concat of lazy scans, diagonal_relaxed, newest copy per run;
- DuckDB (bench/peer_many_duckdb.py): read_parquet(union_by_name) QUALIFY row_number() = 1.
The answers must agree (the same runs, the same newest copies and their files; the same top 5), or
the bench exits 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from measure import command_env, run_measured  # noqa: E402

RUNS, COLUMNS, NEW_PER_NIGHT, NIGHTS_RUNNING = 50, 60, 2, 5
METRIC, TOP = "metric_test_mse", 5
FIRST_NIGHT = datetime(2000, 1, 1, tzinfo=UTC)
LAYOUT = "v1"  # bump when the generated folders change: a cache of another layout is made again
X = "\N{MULTIPLICATION SIGN}"
SIDES = ("ours_aggregate", "polars_aggregate", "duckdb_aggregate", "ours_analyze", "polars_top", "duckdb_top")
EXAMPLES = """\
examples:
  bench_many_exports.py --folders 1000 --markdown     # 3 interleaved rounds, rows for BENCHMARKS.md
  bench_many_exports.py --folders 10000 --repeats 1 --json
"""


def template(scratch: Path) -> tuple[pa.Table, dict[str, Any], str]:
    """The samples exported by our exporter: its runs table, its metadata and the file stem."""
    command = [
        "uv",
        "run",
        str(ROOT / "wandb-tools" / "export_runs.py"),
        "--source",
        str(ROOT / "samples" / "wandb"),
    ]
    subprocess.run([*command, "-o", str(scratch)], check=True, capture_output=True, cwd=ROOT)
    (runs_file,) = scratch.glob("*_runs.parquet")
    stem = runs_file.name.removesuffix("_runs.parquet")
    metadata = json.loads((scratch / f"{stem}_metadata.json").read_text())
    return pq.read_table(runs_file), metadata, stem


def widen(table: pa.Table) -> pa.Table:
    """The sample table with extra config and metric columns (before the JSON columns): COLUMNS in all."""
    extra = COLUMNS - table.num_columns
    names = [f"config_p{i:02d}" for i in range(extra // 2)] + [
        f"metric_extra_{i:02d}" for i in range(extra - extra // 2)
    ]
    at = table.schema.get_field_index("_config_json")
    for offset, name in enumerate(names):
        table = table.add_column(at + offset, name, pa.nulls(table.num_rows, pa.float64()))
    return table


def night(base: pa.Table, index: int) -> pa.Table:
    """Night `index`'s snapshot: runs [2·index, 2·index + 50) (the newest 2 started that night), as they were."""
    runs = np.arange(NEW_PER_NIGHT * index, NEW_PER_NIGHT * index + RUNS)
    started = np.maximum(0, (runs - RUNS + NEW_PER_NIGHT) // NEW_PER_NIGHT)  # the night each run started
    age = np.minimum(index - started, NIGHTS_RUNNING)  # nights run so far; capped: finished
    table = base.take(runs % base.num_rows)
    start = np.datetime64(FIRST_NIGHT.replace(tzinfo=None), "us")
    created = start + started.astype("timedelta64[D]") + (runs % NEW_PER_NIGHT).astype("timedelta64[m]")
    heartbeat = created + age.astype("timedelta64[D]") + np.timedelta64(30, "m")
    quality = 0.05 + ((runs * 2654435761) % 1_000_003) / 1_000_003  # fixed per run, no random state
    progress = 1 + 1 / (1 + age)  # metrics improve while a run runs, then stay
    values = {
        "id": pa.array([f"r{r:07d}" for r in runs]),
        "name": pa.array([f"{name}_r{r}" for name, r in zip(table["name"].to_pylist(), runs, strict=True)]),
        "state": pa.array(np.where(age < NIGHTS_RUNNING, "running", "finished")),
        "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
        "heartbeat_at": pa.array(heartbeat, pa.timestamp("us", tz="UTC")),
        "runtime_s": pa.array(age * 86400.0 + 1800),
        "metric_test_mse": pa.array(quality * progress),
        "metric_best_test_mse": pa.array(quality * progress),
        "metric_train_loss": pa.array(quality * progress * 1.1),
        "metric_test_accuracy": pa.array(1 - quality / progress),
    }
    for i, name in enumerate(n for n in table.column_names if n.startswith(("config_p", "metric_extra_"))):
        values[name] = pa.array(quality * (i + 1) * (progress if name.startswith("metric") else 1))
    for name, column in values.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def make_folders(folders: int, data: Path) -> Path:
    """`folders` nightly export folders under `data`/snaps (reused when complete and of this layout)."""
    snaps, done = data / "snaps", data / f"complete-{LAYOUT}"
    if done.is_file() and done.read_text().strip() == str(folders):
        return snaps
    done.unlink(missing_ok=True)
    shutil.rmtree(snaps, ignore_errors=True)  # only what this bench made: --data may hold other files
    snaps.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        sample, metadata, stem = template(Path(scratch))
    base = widen(sample)
    columns = {field.name: str(field.type) for field in base.schema}
    for index in range(folders):
        exported = FIRST_NIGHT + timedelta(days=index, hours=2)
        folder = snaps / exported.strftime("%Y-%m-%d")
        folder.mkdir()
        generation = uuid.uuid4().hex
        table = night(base, index)
        footer = {b"run_tools.history_file": b"", b"run_tools.generation": generation.encode()}
        table = table.replace_schema_metadata(footer)
        pq.write_table(table, folder / f"{stem}_runs.parquet", compression="zstd")
        written = metadata | {
            "exported_at": exported.isoformat(),
            "generation": generation,
            "run_count": RUNS,
            "runs_reported": RUNS,
            "runs_exported": RUNS,
            "columns": columns,
        }
        (folder / f"{stem}_metadata.json").write_text(json.dumps(written, indent=2))
    done.write_text(f"{folders}\n")
    return snaps


def commands(snaps: Path, out: Path) -> dict[str, list[str]]:
    aggregate = ["uv", "run", str(ROOT / "wandb-tools" / "aggregate_runs.py"), str(snaps)]
    analyze = ["uv", "run", str(ROOT / "wandb-tools" / "analyze_runs.py"), str(snaps)]
    polars = ["uv", "run", str(BENCH / "peer_many_polars.py"), str(snaps)]
    duckdb = ["uv", "run", str(BENCH / "peer_many_duckdb.py"), str(snaps)]
    top = ["--metric", METRIC, "--top", str(TOP)]
    return {
        "ours_aggregate": [*aggregate, "-o", str(out / "ours.parquet"), "--no-enrich", "--protocol", "all"],
        "polars_aggregate": [*polars, "-o", str(out / "polars.parquet")],
        "duckdb_aggregate": [*duckdb, "-o", str(out / "duckdb.parquet")],
        "ours_analyze": [*analyze, "--metric", "test/mse", "--top", str(TOP), "--format", "json"],
        "polars_top": [*polars, *top],
        "duckdb_top": [*duckdb, *top],
    }


def newest_copies(path: Path) -> pl.DataFrame:
    """An aggregate's runs as compared: key, heartbeat, the metric and the file the copy came from."""
    frame = pl.read_parquet(path, columns=["entity", "project", "id", "heartbeat_at", METRIC, "_source_file"])
    return frame.sort("entity", "project", "id")


def top_ids(side: str, stdout: str) -> list[str]:
    if side == "ours_analyze":
        return [row["id"] for row in json.loads(stdout)]
    return [run_id for run_id, _ in json.loads(stdout)]


def markdown(figures: dict[str, Any]) -> str:
    m, peak = figures["median_s"], figures["peak_tree_mb"]
    lines = [
        f"| {figures['folders']:,} folders | ours | polars | DuckDB | ours vs faster peer |",
        "|---|---|---|---|---|",
    ]
    for label, ours, peers in (
        ("aggregate", "ours_aggregate", ("polars_aggregate", "duckdb_aggregate")),
        ("analyze --top 5", "ours_analyze", ("polars_top", "duckdb_top")),
    ):
        faster = min(m[p] for p in peers)
        lines.append(
            f"| {label} | {m[ours]:.2f} s, {peak[ours]:.0f} MB | {m[peers[0]]:.2f} s, {peak[peers[0]]:.0f} MB "
            f"| {m[peers[1]]:.2f} s, {peak[peers[1]]:.0f} MB | {m[ours] / faster:.2f}{X} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--folders", type=int, default=1_000, help="export folders, one per night (default 1000)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median; default 3)")
    parser.add_argument("--only", help=f"comma-separated sides (default: {','.join(SIDES)})")
    default = Path(tempfile.gettempdir()) / "run-tools-bench"
    parser.add_argument("--data", type=Path, help=f"folder of the exports (default {default}/many-exports-N)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--markdown", action="store_true", help="print rows for BENCHMARKS.md")
    args = parser.parse_args()
    sides = args.only.split(",") if args.only else list(SIDES)
    snaps = make_folders(args.folders, args.data or default / f"many-exports-{args.folders}")
    times: dict[str, list[float]] = {side: [] for side in sides}
    peaks: dict[str, list[float]] = {side: [] for side in sides}
    largest: dict[str, list[float]] = {side: [] for side in sides}  # the largest single process's peak
    outputs: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-many-exports-") as scratch:
        out = Path(scratch)
        env = command_env(out / "pycache")
        lines = commands(snaps, out)
        for round_ in range(args.repeats + 1):  # round 0, untimed: environments, page cache
            for side in sides:
                measured = run_measured(lines[side], env=env)
                if measured.returncode != 0:
                    raise SystemExit(
                        f"error: {side} failed ({measured.returncode}): {measured.stderr[-2000:]}"
                    )
                if round_:
                    times[side].append(measured.seconds)
                    peaks[side].append(measured.peak_tree_mb)
                    largest[side].append(measured.peak_rss_mb)
                outputs[side] = measured.stdout
        copies = {
            side: newest_copies(out / f"{side.split('_')[0]}.parquet")
            for side in sides
            if side.endswith("aggregate")
        }
        tops = {side: top_ids(side, outputs[side]) for side in sides if not side.endswith("aggregate")}
    expected_runs = NEW_PER_NIGHT * (args.folders - 1) + RUNS
    same = all(c.equals(next(iter(copies.values()))) and c.height == expected_runs for c in copies.values())
    same = same and all(t == next(iter(tops.values())) for t in tops.values())
    figures: dict[str, Any] = {
        "folders": args.folders, "runs_per_folder": RUNS, "columns": COLUMNS, "distinct_runs": expected_runs,
        "repeats": args.repeats, "same_answer": same,
        "median_s": {side: round(statistics.median(t), 3) for side, t in times.items()},
        "runs_s": {side: [round(x, 3) for x in t] for side, t in times.items()},
        "peak_tree_mb": {side: round(max(p)) for side, p in peaks.items()},
        "peak_rss_mb": {side: round(max(p)) for side, p in largest.items()},
    }  # fmt: skip
    if args.json:
        print(json.dumps(figures, indent=2))
    if args.markdown or not args.json:
        if set(sides) == set(SIDES):
            print(markdown(figures))
        else:
            print(json.dumps(figures["median_s"]))
    if not same:
        print("error: ours and the peers disagree on the newest copies or the top 5", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
