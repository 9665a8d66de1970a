#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "psutil>=7",
# ]
# ///
"""Run every benchmark of the project against its baseline and write BENCHMARKS.md.

Each benchmark is one of the bench/*.py scripts, run as its own `uv run` process (they build their own
synthetic data, cached under --data, and time their baseline in the same run, rounds interleaved,
medians of --repeats). This script collects their figures, adds the start-up time of every tool
(`uv run <tool> --help`), and writes the machine, the versions, each figure with its baseline, the
ratio, the target and whether it is met. The machine's load average before and after each benchmark is
recorded too: on a shared machine it explains a figure that moved.

Timed commands run with bytecode caching on (PYTHONDONTWRITEBYTECODE removed, the cache kept under
--data), as a user's Python does; some sandboxes set it, which makes every start compile from source.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from measure import command_env, run_measured  # noqa: E402

REPO = ROOT.parent
X = "\N{MULTIPLICATION SIGN}"  # in the report
TOOLS = sorted([*REPO.glob("wandb-tools/*.py"), *REPO.glob("neptune-tools/*.py")])
EXAMPLES = """\
examples:
  uv run bench/run_all.py                              # everything, full size (~15 min), BENCHMARKS.md
  uv run bench/run_all.py --only export_api,topk       # some benchmarks (BENCHMARKS.md gets just these)
  uv run bench/run_all.py --quick -o /tmp/B.md         # tiny sizes: checks the benchmarks run, no figures
"""


def bench_args(name: str, quick: bool, data: Path, repeats: int) -> list[str]:
    """The command line of one benchmark: full size, or tiny with --quick."""
    common = ["--repeats", str(1 if quick else repeats), "--json"]
    if name in ("export_api", "export_memory"):
        only = "speed" if name == "export_api" else "memory"
        size = ["--runs", "30", "--steps", "20", "--memory-steps", "40", "--smoke"] if quick else []
        return ["bench_export_api.py", "--only", only, "--data", str(data), *size, *common]
    if name == "offline_parse":
        size = ["--rows", "300", "--no-cli"] if quick else []
        return ["bench_offline_parse.py", "--cache", str(data), *size, *common]
    if name == "topk":
        size = ["--runs", "60", "--steps", "30", "--no-cli"] if quick else []
        folder = data / ("topk-quick" if quick else "topk-10000x1000")
        return ["bench_topk.py", "--data", str(folder), *size, *common]
    if name == "topk_peers":
        size = ["--runs", "60", "--steps", "30", "--only", "last"] if quick else []
        folder = data / ("topk-exporter-quick" if quick else "topk-exporter-10000x1000")
        return ["bench_topk_peers.py", "--data", str(folder), *size, *common]
    if name == "report":
        size = ["--runs", "300", "--columns", "40"] if quick else []
        return ["bench_report.py", "--data", str(data / "report"), *size, *common]
    if name == "analyze":
        size = ["--runs", "500", "--columns", "40", "--no-cli"] if quick else []
        return ["bench_analyze.py", "--data", str(data / "analyze"), *size, *common]
    if name == "aggregate":
        size = ["--files", "3", "--runs", "200", "--columns", "40"] if quick else []
        return ["bench_aggregate.py", "--data", str(data / "aggregate"), *size, *common]
    raise ValueError(name)


def run_bench(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    command = ["uv", "run", str(ROOT / args[0]), *args[1:]]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr[-3000:]}")
    return json.loads(result.stdout)


def startup(env: dict[str, str], repeats: int) -> dict[str, Any]:
    """`uv run <tool> --help` per tool after a warm-up: the floor under every command's time."""
    figures = {}
    for tool in TOOLS:
        command = ["uv", "run", str(tool), "--help"]
        warm = run_measured(command, env=env, cwd=REPO)
        if warm.returncode != 0:
            figures[str(tool.relative_to(REPO))] = {"error": warm.stderr.strip()[-300:]}
            continue
        runs = [run_measured(command, env=env, cwd=REPO) for _ in range(repeats)]
        figures[str(tool.relative_to(REPO))] = {
            "seconds": round(statistics.median([r.seconds for r in runs]), 3),
            "runs_s": [round(r.seconds, 3) for r in runs],
            "peak_rss_mb": round(max(r.peak_rss_mb for r in runs)),
        }
    return figures


# --------------------------------------------------------------------------------------------- report


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.3f} s" if seconds < 1 else f"{seconds:.2f} s"


def ratio(baseline: float, ours: float) -> str:
    return f"{baseline / ours:.1f}{X}" if ours else "—"


def yes(met: bool) -> str:
    return "**yes**" if met else "**no**"


def rows_for(name: str, f: dict[str, Any]) -> list[list[str]]:
    """Summary-table rows: benchmark, size, ours in-process, ours `uv run`, baseline, ratio, target, met."""
    if name == "export_api":
        size = f"{f['runs']} runs {X} {f['steps']} steps {X} {f['keys']} keys, {f['latency_s'] * 1000:.0f} ms latency"
        pages_ok = f["summary_pages"] <= f["summary_pages_allowed"]
        return [
            ["export via the W&B API", size, fmt_s(f["core_s"]), fmt_s(f["ours_s"]),
             f"{fmt_s(f['baseline_s'])} (`--workers 1`)", ratio(f["baseline_s"], f["ours_s"]), f"≥ 8{X}",
             yes(f["speedup"] >= 8 and f["complete"])],
            ["… summary pages (Runs requests)", f"per page {math.ceil(f['runs'] / max(f['summary_pages'], 1))}",
             "", str(f["summary_pages"]), "—", "—", f"≤ ⌈N/100⌉ + 5 = {f['summary_pages_allowed']}", yes(pages_ok)],
        ]  # fmt: skip
    if name == "export_memory":
        size = f"{f['runs']} runs {X} {f['steps']} steps {X} {f['keys']} keys"
        figure = f"peak RSS {f['peak_rss_mb']} MB (Python), {f['peak_tree_mb']} MB (whole tree)"
        met = f["peak_tree_mb"] < f["target_mb"] and f["complete"]
        return [["export memory", size, "", figure, "—", "—", "< 500 MB", yes(met)]]
    if name == "offline_parse":
        size = f"{f['log_mb']} MB log, {f['rows']} rows {X} {f['keys']} keys"
        whole = fmt_s(f.get("uv_run_export_s"))
        return [["offline `.wandb` parse", size, fmt_s(f["ours_s"]), whole, f"{fmt_s(f['naive_s'])} (naive reader)",
                 ratio(f["naive_s"], f["ours_s"]), f"≥ 4{X}", yes(f["speedup"] >= 4 and f["same_answer"])]]  # fmt: skip
    if name == "topk":
        size = f"{f['runs']} runs {X} {f['steps']} steps {X} {f['metrics']} metrics"
        base = f"{fmt_s(f['baseline_s'])} (seed's per-run loop)"
        rows = []
        sides = {"cold": ("empty summary cache", "uv_run_cold_s"), "warm": ("cached summaries", "uv_run_s"),
                 "no_cache": ("no cache", "uv_run_no_cache_s")}  # fmt: skip
        for side, (label, whole_key) in sides.items():
            ours, whole = f[f"{side}_s"], f.get(whole_key)
            met = f["baseline_s"] / ours >= 50 and max(ours, whole or 0) < 5 and f["same_answer"]
            rows.append([f"top-k, {label}", size, fmt_s(ours), fmt_s(whole), base, ratio(f["baseline_s"], ours),
                         f"≥ 50{X} and < 5 s", yes(met)])  # fmt: skip
        if "read_floor_s" in f:
            rows.append(["… reading alone (4 columns, no query): bounds a first query", size,
                         fmt_s(f["read_floor_s"]), "", base, ratio(f["baseline_s"], f["read_floor_s"]), "—", "—"])  # fmt: skip
        return rows
    if name == "topk_peers":
        size = f"{f['runs']} runs {X} {f['steps']} steps {X} {f['metrics']} metrics, exporter layout"
        rows = []
        for query, q in f["queries"].items():
            m = q["median_s"]
            peer = min(m["polars"], m["duckdb"])
            rows.append([f"top-k `{query}`, first query", size, "", fmt_s(m["ours_first"]),
                         f"{fmt_s(peer)} (faster of polars {fmt_s(m['polars'])}, DuckDB {fmt_s(m['duckdb'])}); "
                         f"read floor {fmt_s(m['read_floor'])}", f"{peer / m['ours_first']:.2f}{X}",
                         f"≥ 1{X}", yes(m["ours_first"] <= peer and f["same_answer"])])  # fmt: skip
            rows.append([f"… `{query}`, repeated", size, "", fmt_s(m["ours_repeated"]), fmt_s(peer),
                         ratio(peer, m["ours_repeated"]), f"≥ 5{X}",
                         yes(peer / m["ours_repeated"] >= 5 and f["same_answer"])])  # fmt: skip
        return rows
    if name == "report":
        size = f"{f['runs']} runs {X} {f['columns']} columns"
        return [
            [f"HTML report `{variant}`", size, "",
             f"{fmt_s(v['write_s'])}, {v['size_mb']:.2f} MB, loads in {fmt_s(v['load_s'])}", "—", "—",
             "< 3 s, < 5 MB, loads < 2 s", yes(f["met"][variant])]
            for variant, v in f["variants"].items()
        ]  # fmt: skip
    if name == "analyze":
        size = f"{f['runs']} runs {X} {f['columns']} columns"
        rows = []
        baseline = f.get("baseline") or {}
        for op, values in f["ops"].items():
            base = (
                f"{fmt_s(baseline.get('median_s'))} (pandas read + groupby)"
                if op == "group-by" and baseline
                else "—"
            )
            whole = values.get("uv_run_s")
            slowest = max(values["in_process_s"], whole or 0)
            rel = (
                ratio(baseline["median_s"], values["in_process_s"]) if op == "group-by" and baseline else "—"
            )
            rows.append([f"analyze `--{op}`", size, fmt_s(values["in_process_s"]), fmt_s(whole), base, rel,
                         "< 2 s", yes(slowest < 2)])  # fmt: skip
        return rows
    if name == "aggregate":
        size = f"{f['files']} exports {X} {f['runs_per_file']} runs {X} {f['columns_per_file']} columns"
        figure = f"peak RSS {f['peak_rss_mb']} MB, {fmt_s(f['seconds'])}"
        met = f["peak_rss_mb"] < 2048 and f["output_runs"] == f["expected_runs"]
        return [["aggregate memory", size, "", figure, "—", "—", "< 2 GB", yes(met)]]
    raise ValueError(name)


def lock_versions(lock: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Versions a script's committed lock pins (what `uv run` gives its users)."""
    if not lock.is_file():
        return {}
    packages = tomllib.loads(lock.read_text())["package"]
    return {p["name"]: p["version"] for p in packages if p["name"] in names}


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor() or "unknown",
    ) if Path("/proc/cpuinfo").is_file() else platform.processor()  # fmt: skip
    uv = subprocess.run(["uv", "--version"], capture_output=True, text=True).stdout.strip()
    versions = lock_versions(
        REPO / "wandb-tools" / "export_runs.py.lock", ("wandb", "polars", "pyarrow", "urllib3")
    )
    versions |= lock_versions(REPO / "neptune-tools" / "query_topk.py.lock", ("neptune", "numpy"))
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(), "python": platform.python_version(), "uv": uv, "packages": versions,
    }  # fmt: skip


def render(results: dict[str, dict[str, Any]], info: dict[str, Any], command: str) -> str:
    runs = "one run" if info["repeats"] == 1 else f"the median of {info['repeats']} runs"
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}`",
        f"on {info['date']} (took {info['total_s'] / 60:.1f} min). Every figure is {runs} (peak memory: the",
        "highest); each baseline ran in the same invocation, its rounds interleaved with ours. *In-process*",
        "times the work inside the tool's own Python; *`uv run`* times the whole command as a user types it",
        "(after an untimed warm-up run), start-up included. Peak memory is measured from outside the process.",
        "",
        "## Machine",
        "",
        f"- CPU: {info['machine']['cpu']}, {info['machine']['logical_cpus']} logical CPUs, "
        f"{info['machine']['ram_gb']} GB RAM",
        f"- OS: {info['machine']['os']}; Python {info['machine']['python']}; {info['machine']['uv']}",
        "- Packages (from the scripts' locks): "
        + ", ".join(f"{k} {v}" for k, v in sorted(info["machine"]["packages"].items())),
        "",
        "## Results",
        "",
        "| benchmark | size | ours, in-process | ours, `uv run` | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in results.items():
        if name == "startup" or "figures" not in entry:
            continue
        lines += ["| " + " | ".join(row) + " |" for row in rows_for(name, entry["figures"])]
    failed = {name: entry["error"] for name, entry in results.items() if "error" in entry}
    if failed:
        lines += ["", "Benchmarks that did not complete:", ""]
        lines += [
            f"- {name}: {error.splitlines()[-1] if error else 'failed'}" for name, error in failed.items()
        ]
    if "startup" in results and "figures" in results["startup"]:
        lines += [
            "",
            "## Start-up: `uv run <tool> --help`",
            "",
            "| tool | seconds | peak RSS |",
            "|---|---|---|",
        ]
        for tool, values in results["startup"]["figures"].items():
            if "error" in values:
                lines.append(f"| `{tool}` | failed: {values['error'].splitlines()[-1]} | |")
            else:
                lines.append(f"| `{tool}` | {fmt_s(values['seconds'])} | {values['peak_rss_mb']} MB |")
    lines += ["", "## Details", ""]
    for name, entry in results.items():
        load = entry.get("load", {})
        lines += [
            f"### {name}",
            "",
            f"`{entry['command']}` — {entry.get('seconds', 0):.0f} s; load average before {load.get('before')}, "
            f"after {load.get('after')}",
            "",
            "```json",
            json.dumps(entry.get("figures", entry.get("error")), indent=2),
            "```",
            "",
        ]
    return "\n".join(lines)


def job(name: str, args: argparse.Namespace, env: dict[str, str]) -> tuple[str, Callable[[], dict[str, Any]]]:
    """The command shown for a benchmark and the call that runs it."""
    if name == "startup":
        return "uv run <tool> --help", lambda: startup(env, 1 if args.quick else args.repeats)
    bench = bench_args(name, args.quick, args.data, args.repeats)
    figures = lambda: run_bench(bench, env)  # noqa: E731
    if name.startswith("export"):  # bench_export_api.py nests its figures under "speed" / "memory"
        return "uv run bench/" + " ".join(bench), lambda: next(iter(figures().values()))
    return "uv run bench/" + " ".join(bench), figures


def measured_entry(item: tuple[str, tuple[str, Callable[[], dict[str, Any]]]]) -> dict[str, Any]:
    """Run one benchmark: its figures (or its error), wall time, and the load average around it."""
    name, (command, run) = item
    print(f"… {name}", file=sys.stderr, flush=True)
    before, start = os.getloadavg(), time.perf_counter()
    entry: dict[str, Any] = {"command": command}
    try:
        entry["figures"] = run()
    except RuntimeError as error:
        entry["error"] = str(error)
        print(f"warning: {name}: {error}", file=sys.stderr)
    entry["seconds"] = time.perf_counter() - start
    entry["load"] = {"before": [round(x, 1) for x in before], "after": [round(x, 1) for x in os.getloadavg()]}
    return entry


BENCHMARKS = (
    "export_api", "export_memory", "offline_parse", "topk", "topk_peers", "analyze", "aggregate", "report", "startup",
)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: proves they run")
    parser.add_argument(
        "--only", help=f"comma-separated benchmarks to run (default: all of {', '.join(BENCHMARKS)})"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure, medians (default 3)")
    default_data = Path("/tmp/run-tools-bench")
    parser.add_argument(
        "--data", type=Path, default=default_data, help=f"synthetic data, reused (default {default_data})"
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=REPO / "BENCHMARKS.md", help="report (default BENCHMARKS.md)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    args = parser.parse_args()
    wanted = [name.strip() for name in (args.only or ",".join(BENCHMARKS)).split(",") if name.strip()]
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.data.mkdir(parents=True, exist_ok=True)
    env = command_env(args.data / "pycache")
    started = time.perf_counter()
    jobs = {name: job(name, args, env) for name in wanted}
    if args.quick:  # figures at tiny sizes mean nothing: run them side by side, it only proves they run
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = dict(zip(jobs, pool.map(measured_entry, jobs.items()), strict=True))
    else:  # one at a time: each has the machine to itself
        results = {name: measured_entry((name, work)) for name, work in jobs.items()}
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "total_s": time.perf_counter() - started,
        "repeats": 1 if args.quick else args.repeats,
        "machine": machine(),
    }
    shown = "uv run bench/run_all.py" + "".join(f" {a}" for a in sys.argv[1:])
    temp = args.output.with_name(f".{args.output.name}.tmp")
    temp.write_text(render(results, info, shown) + "\n", encoding="utf-8")
    temp.replace(args.output)
    if args.json:
        args.json.write_text(
            json.dumps({"info": info, "results": results}, indent=2) + "\n", encoding="utf-8"
        )
    print(f"wrote {args.output}", file=sys.stderr)
    return 1 if any("error" in entry for entry in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
