#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "polars>=2.1",
#     "pyarrow>=26",
#     "psutil>=7",
# ]
# ///
"""Benchmark: `export_runs.py --include-history` through the real wandb client against the stand-in server.

speed: N runs x S steps x K float keys behind the stand-in (tests/wandb_standin.py) with --latency
seconds injected before every GraphQL and file request; the exporter as users run it (`uv run
wandb-tools/export_runs.py ... --include-history`, after an untimed warm-up) with its default workers
against the same command with `--workers 1`, rounds interleaved, medians. The server counts requests:
Runs (summary pages) must stay <= ceil(N / per_page) + 5. The stand-in serves each run's history
parquet from files made before timing (a real server's exports sit in storage; building them is not
the client's cost), so the server process spends its CPU on HTTP only. Also timed: the exporter's
main() inside its own environment's Python (the in-process core, no interpreter start or imports).

memory: N runs x --memory-steps steps x K keys, exported --repeats times; the highest peak RSS of the
largest process (the Python exporter) and of the whole process tree at once (uv, Python, wandb-core),
measured from outside; the target holds the tree to it.

contents (issue 21): the same runs, each with an output.log of --console-lines lines and an events stream
of --events samples; `--include-history` alone against `--include-history --include-console
--include-system-metrics`, rounds interleaved, both at the exporter's default workers: min and median
seconds, their ratio (target <= 1.5), peak memory of each, and the extra requests (lookups <= ceil(N/25),
one fetch per run and stream).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import command_env, run_measured  # noqa: E402

from tests.wandb_standin import StandinRun, StandinServer, synthetic_dataset  # noqa: E402

EXPORTER = ROOT / "wandb-tools" / "export_runs.py"
ENTITY, PROJECT, WARMUP_PROJECT = "bench", "synthetic", "warmup"
RUNS_PER_PAGE = 100  # shared/wandb_api.py RUNS_PER_PAGE
SPEEDUP_TARGET, MEMORY_TARGET_MB, PAGE_SLACK = 8.0, 500.0, 5
CONTENTS_RATIO_TARGET, LOOKUP_BATCH = 1.5, 25
STREAM_FLAGS = ["--include-console", "--include-system-metrics"]
EXAMPLES = """\
examples:
  bench_export_api.py                                  # 2000 runs x 2k steps, and 2000 x 10k for memory
  bench_export_api.py --runs 40 --steps 50 --memory-steps 100 --repeats 1 --json   # a quick look
  bench_export_api.py --only speed --check             # exit 1 unless >= 8x and pages within bounds
"""
# The in-process core: the exporter's main() in its own environment, timed after its imports.
CORE_DRIVER = """
import importlib.util, json, sys, time
spec = importlib.util.spec_from_file_location("export_runs", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
start = time.perf_counter()
code = module.main(sys.argv[2:])
print(json.dumps({"core_s": time.perf_counter() - start, "code": code}), file=sys.stderr)
"""


class FileBackedServer(StandinServer):
    """The stand-in, serving history parquet from files written before timing (the server's storage)."""

    def __init__(self, dataset: Any, storage: Path) -> None:
        super().__init__(dataset)
        self.storage = storage

    def stored_file(self, run: StandinRun, index: int) -> Path:
        return self.storage / f"{run.id}_{index}.parquet"

    def prepare(self) -> None:
        """Write every run's parquet files once, as the stand-in builds them (kept for later runs)."""
        manifest = self.storage / "complete"
        if manifest.is_file():
            return
        shutil.rmtree(self.storage, ignore_errors=True)
        self.storage.mkdir(parents=True)
        projects = self.dataset.entities[ENTITY].projects
        for project in projects.values():
            for run in project.runs:
                for index in range(self.parquet_file_count(run)):
                    data = super().parquet_bytes(run, index)
                    assert data is not None
                    self.stored_file(run, index).write_bytes(data)
                self.clear_cache()
        manifest.write_text(json.dumps(sorted(projects)))

    def parquet_bytes(self, run: StandinRun, index: int) -> bytes | None:
        path = self.stored_file(run, index)
        return path.read_bytes() if path.is_file() else None


def add_contents(server: StandinServer, console_lines: int, events: int) -> None:
    """Each run of the timed project gets an output.log and an events stream (wandb-core's keys)."""
    project = server.dataset.project(ENTITY, PROJECT)
    assert project is not None
    for index, run in enumerate(project.runs):
        log = "".join(
            f"epoch {line}: loss={1 / (line + 1):.6f} run {index}\n" for line in range(console_lines)
        )
        run.files["output.log"] = log.encode()
        start = run.created_at.replace(tzinfo=UTC).timestamp()
        run.events = [  # as JSON lines: the server's storage, not its work per request (as history's files)
            json.dumps(
                {"_wandb": True, "_timestamp": start + 15 * i, "_runtime": 15.0 * i}
                | {f"system.{key}": float((i + index) % 100) for key in SYSTEM_KEYS}
            )
            for i in range(events)
        ]


SYSTEM_KEYS = (
    "cpu", "memory_percent", "proc.memory.rssMB", "proc.memory.percent", "proc.cpu.threads", "disk./.usageGB",
    "network.sent", "network.recv", "gpu.0.gpu", "gpu.0.memoryAllocatedBytes", "gpu.0.temp", "gpu.0.powerWatts",
)  # fmt: skip


def serve(runs: int, steps: int, keys: int, data: Path, latency_s: float) -> FileBackedServer:
    dataset = synthetic_dataset(runs, steps, keys, entity=ENTITY, project=PROJECT)
    warmup = synthetic_dataset(10, 10, keys, entity=ENTITY, project=WARMUP_PROJECT, seed=1)
    dataset.add_project(ENTITY, warmup.project(ENTITY, WARMUP_PROJECT))
    server = FileBackedServer(dataset, data / f"export-api-{runs}x{steps}x{keys}")
    server.prepare()
    server.latency_s = latency_s
    return server.start()


def client_env(server: StandinServer, home: Path, pycache: Path) -> dict[str, str]:
    """The real client pointed at the stand-in, with a throwaway home (as the tests' `wandb_env`)."""
    env = command_env(pycache) | {
        "HOME": str(home),
        "WANDB_BASE_URL": server.url,
        "WANDB_API_KEY": server.api_key,
        "WANDB_SILENT": "true",
    }
    for variable in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        (home / variable.lower()).mkdir(parents=True, exist_ok=True)
        env[variable] = str(home / variable.lower())
    for variable in ("WANDB_ENTITY", "WANDB_PROJECT", "WANDB_MODE"):
        env.pop(variable, None)
    return env


def export_args(project: str, out: Path, workers: int | None, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["-e", ENTITY, "-p", project, "-o", str(out), "--include-history", "--json", *extra]
    return args + (["--workers", str(workers)] if workers else [])


def exported(out: Path, project: str = PROJECT) -> tuple[int, int]:
    """Rows in the runs and the history file the export wrote."""
    runs = pq.ParquetFile(out / f"{ENTITY}_{project}_runs.parquet").metadata.num_rows
    history = pq.ParquetFile(out / f"{ENTITY}_{project}_history.parquet").metadata.num_rows
    return runs, history


@functools.cache
def script_python() -> str:
    """The interpreter of the exporter's own environment (as `uv run` would use it)."""
    found = subprocess.run(
        ["uv", "python", "find", "--script", str(EXPORTER)], capture_output=True, text=True, check=True
    )
    return found.stdout.strip()


def timed_export(
    server: StandinServer,
    env: dict[str, str],
    scratch: Path,
    workers: int | None,
    *,
    core: bool = False,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One export; wall time, peak memory, the server's request counts, and what was written."""
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    server.reset_counts()
    if core:
        command = [script_python(), "-c", CORE_DRIVER, str(EXPORTER), *export_args(PROJECT, out, workers)]
    else:
        command = ["uv", "run", str(EXPORTER), *export_args(PROJECT, out, workers, extra)]
    measured = run_measured(command, env=env, cwd=ROOT)
    if measured.returncode != 0:
        raise SystemExit(f"export failed ({measured.returncode}): {measured.stderr[-2000:]}")
    runs, history = exported(out)
    figures = {
        "seconds": measured.seconds,
        "peak_rss_mb": measured.peak_rss_mb,
        "peak_tree_mb": measured.peak_tree_mb,
        "runs": runs,
        "history_rows": history,
        "requests": dict(server.requests),
    }
    for stream in ("console", "system"):
        if (path := out / f"{ENTITY}_{PROJECT}_{stream}.parquet").is_file():
            figures[f"{stream}_rows"] = pq.ParquetFile(path).metadata.num_rows
    if core:
        figures["core_s"] = json.loads(measured.stderr.strip().splitlines()[-1])["core_s"]
    shutil.rmtree(out, ignore_errors=True)
    return figures


@contextmanager
def served(
    args: argparse.Namespace, steps: int, scratch: Path, pycache: Path
) -> Iterator[tuple[FileBackedServer, dict[str, str], float]]:
    """The stand-in with the project of `steps`-step runs, the client's environment, and the set-up time."""
    start = time.perf_counter()
    server = serve(args.runs, steps, args.keys, args.data, args.latency)
    try:
        yield server, client_env(server, scratch / "home", pycache), time.perf_counter() - start
    finally:
        server.stop()


def warm_up(env: dict[str, str], scratch: Path) -> None:
    """An untimed export first: uv's environment, the wandb service and the caches are ready."""
    warm = subprocess.run(
        ["uv", "run", str(EXPORTER), *export_args(WARMUP_PROJECT, scratch / "warm", None)],
        env=env, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if warm.returncode != 0:
        raise SystemExit(f"warm-up export failed: {warm.stderr[-2000:]}")


def speed(args: argparse.Namespace, scratch: Path, pycache: Path) -> dict[str, Any]:
    with served(args, args.steps, scratch, pycache) as (server, env, prepared):
        if not args.smoke:
            warm_up(env, scratch)
        sides: dict[str, list[dict[str, Any]]] = {"baseline": [], "ours": [], "core": []}
        for _ in range(args.repeats):
            sides["baseline"].append(timed_export(server, env, scratch, 1))
            sides["ours"].append(timed_export(server, env, scratch, args.workers))
            if not args.smoke:
                sides["core"].append(timed_export(server, env, scratch, args.workers, core=True))
        problems = server.problems()
    expected = (args.runs, args.runs * args.steps * args.keys)
    pages_allowed = math.ceil(args.runs / RUNS_PER_PAGE) + PAGE_SLACK
    baseline = statistics.median([r["seconds"] for r in sides["baseline"]])
    ours = statistics.median([r["seconds"] for r in sides["ours"]])
    pages = max(r["requests"].get("Runs", 0) for side in sides.values() for r in side)
    return {
        "runs": args.runs, "steps": args.steps, "keys": args.keys, "latency_s": args.latency,
        "workers": args.workers or "default", "server_files_prepared_s": round(prepared, 2),
        "baseline_s": round(baseline, 2), "baseline_runs_s": [round(r["seconds"], 2) for r in sides["baseline"]],
        "ours_s": round(ours, 2), "ours_runs_s": [round(r["seconds"], 2) for r in sides["ours"]],
        "core_s": round(statistics.median([r["core_s"] for r in sides["core"]]), 2) if sides["core"] else None,
        "core_runs_s": [round(r["core_s"], 2) for r in sides["core"]],
        "speedup": round(baseline / ours, 2), "speedup_target": SPEEDUP_TARGET,
        "summary_pages": pages, "summary_pages_allowed": pages_allowed,
        "requests_ours": sides["ours"][0]["requests"], "requests_baseline": sides["baseline"][0]["requests"],
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in sides["ours"])),
        "complete": all((r["runs"], r["history_rows"]) == expected for side in sides.values() for r in side),
        "server_problems": problems,
    }  # fmt: skip


def contents(args: argparse.Namespace, scratch: Path, pycache: Path) -> dict[str, Any]:
    with served(args, args.steps, scratch, pycache) as (server, env, _):
        add_contents(server, args.console_lines, args.events)
        if not args.smoke:
            warm_up(env, scratch)
        sides: dict[str, list[dict[str, Any]]] = {"history": [], "everything": []}
        for _ in range(args.repeats):
            sides["history"].append(timed_export(server, env, scratch, args.workers))
            sides["everything"].append(
                timed_export(server, env, scratch, args.workers, extra=tuple(STREAM_FLAGS))
            )
        problems = server.problems()
    expected = (args.runs, args.runs * args.steps * args.keys)
    seconds = {side: [r["seconds"] for r in results] for side, results in sides.items()}
    everything = sides["everything"][0]["requests"]
    return {
        "runs": args.runs, "steps": args.steps, "keys": args.keys, "latency_s": args.latency,
        "console_lines": args.console_lines, "events": args.events, "workers": args.workers or "default",
        **{f"{side}_min_s": round(min(values), 2) for side, values in seconds.items()},
        **{f"{side}_median_s": round(statistics.median(values), 2) for side, values in seconds.items()},
        **{f"{side}_runs_s": [round(v, 2) for v in values] for side, values in seconds.items()},
        "ratio_median": round(statistics.median(seconds["everything"]) / statistics.median(seconds["history"]), 2),
        "ratio_min": round(min(seconds["everything"]) / min(seconds["history"]), 2),
        "ratio_target": CONTENTS_RATIO_TARGET,
        **{f"{side}_peak_rss_mb": round(max(r["peak_rss_mb"] for r in results)) for side, results in sides.items()},
        **{f"{side}_peak_tree_mb": round(max(r["peak_tree_mb"] for r in results)) for side, results in sides.items()},
        "lookups": everything.get("RunContents", 0), "lookups_allowed": math.ceil(args.runs / LOOKUP_BATCH),
        "events_fetches": everything.get("RunEvents", 0), "console_fetches": everything.get("GET /files/run-file", 0),
        "complete": all((r["runs"], r["history_rows"]) == expected for side in sides.values() for r in side)
        and all(
            (r.get("console_rows"), r.get("system_rows"))
            == (args.runs * args.console_lines, args.runs * args.events * len(SYSTEM_KEYS))
            for r in sides["everything"]
        ),
        "server_problems": problems,
    }  # fmt: skip


def memory(args: argparse.Namespace, scratch: Path, pycache: Path) -> dict[str, Any]:
    with served(args, args.memory_steps, scratch, pycache) as (server, env, prepared):
        measured = [timed_export(server, env, scratch, args.workers) for _ in range(args.repeats)]
    expected = (args.runs, args.runs * args.memory_steps * args.keys)
    return {
        "runs": args.runs, "steps": args.memory_steps, "keys": args.keys, "workers": args.workers or "default",
        "server_files_prepared_s": round(prepared, 2),
        "seconds": round(statistics.median([m["seconds"] for m in measured]), 2),
        "peak_rss_mb": round(max(m["peak_rss_mb"] for m in measured)),
        "peak_tree_mb": round(max(m["peak_tree_mb"] for m in measured)),
        "peak_tree_runs_mb": [round(m["peak_tree_mb"]) for m in measured],
        "target_mb": MEMORY_TARGET_MB,
        "complete": all((m["runs"], m["history_rows"]) == expected for m in measured),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2000, help="runs in the project (default 2000)")
    parser.add_argument("--steps", type=int, default=2000, help="history steps per run, speed (default 2000)")
    parser.add_argument(
        "--memory-steps", type=int, default=10_000, help="history steps per run, memory (default 10000)"
    )
    parser.add_argument("--keys", type=int, default=5, help="float keys per history row (default 5)")
    parser.add_argument(
        "--latency", type=float, default=0.030, help="seconds before each server answer (default 0.030)"
    )
    parser.add_argument("--workers", type=int, help="--workers for our side (default: the exporter's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds, medians (default 3)")
    parser.add_argument(
        "--only", choices=["speed", "memory", "contents"], help="run one benchmark (contents: only so)"
    )
    parser.add_argument("--console-lines", type=int, default=500, help="output.log lines per run (contents)")
    parser.add_argument("--events", type=int, default=240, help="events samples per run (contents)")
    parser.add_argument(
        "--smoke", action="store_true", help="for tests: no warm-up run, no in-process core timing"
    )
    default_data = Path(tempfile.gettempdir()) / "run-tools-bench"
    parser.add_argument(
        "--data", type=Path, default=default_data, help=f"server files, reused (default {default_data})"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 unless every target is met (speed, pages, memory)"
    )
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-export-api-") as folder:
        scratch = Path(folder)
        pycache = args.data / "pycache"
        if args.only in (None, "speed"):
            figures["speed"] = speed(args, scratch, pycache)
        if args.only in (None, "memory"):
            figures["memory"] = memory(args, scratch, pycache)
        if args.only == "contents":
            figures["contents"] = contents(args, scratch, pycache)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, values in figures.items():
            print(f"{name}:")
            for key, value in values.items():
                print(f"  {key:>24}: {value}")
    met = targets_met(figures)
    return 1 if args.check and not met else 0


def targets_met(figures: dict[str, Any]) -> bool:
    speed_ok = "speed" not in figures or (
        figures["speed"]["speedup"] >= SPEEDUP_TARGET
        and figures["speed"]["summary_pages"] <= figures["speed"]["summary_pages_allowed"]
        and figures["speed"]["complete"]
    )
    memory_ok = "memory" not in figures or (
        figures["memory"]["peak_tree_mb"] < MEMORY_TARGET_MB and figures["memory"]["complete"]
    )
    contents_ok = "contents" not in figures or (
        figures["contents"]["ratio_median"] <= CONTENTS_RATIO_TARGET
        and figures["contents"]["lookups"] <= figures["contents"]["lookups_allowed"]
        and figures["contents"]["complete"]
    )
    return speed_ok and memory_ok and contents_ok


if __name__ == "__main__":
    sys.exit(main())
