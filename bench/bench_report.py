#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "numpy>=2",
#     "polars>=2.1",
#     "psutil>=5.9",
#     "pyarrow>=26",
#     "selenium>=4.20",
# ]
# ///
"""Benchmark: analyze_runs.py --report on a synthetic 10k-run x 300-column export: the whole `uv run`
command's time and peak memory, the page's size, and its load time in headless Chromium."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_analyze import make_export  # noqa: E402 (the same synthetic export as the analyze benchmark)
from measure import command_env, run_measured  # noqa: E402

from tests.chromium import CHROMIUM_FLAGS  # noqa: E402 (the browser tests' flags)

TARGETS = {"write_s": 3.0, "size_mb": 5.0, "load_s": 2.0}
VARIANTS = {"report": [], "report --pareto k": ["--pareto", "k"]}
EXAMPLES = """\
examples:
  bench_report.py                                  # 10000 runs x 300 columns, median of 3
  bench_report.py --runs 300 --columns 40 --repeats 1 --json
  bench_report.py --check                          # exit 1 unless under 3 s, 5 MB and a 2 s load
"""


def write_times(export: Path, page: Path, options: list[str], repeats: int, env: dict) -> dict:
    """Median wall time and peak memory of the whole command, after one warm-up run; the page's size."""
    command = ["uv", "run", str(ROOT / "wandb-tools" / "analyze_runs.py"), str(export)]
    command += ["--report", str(page), "--metric", "test/mse", *options]
    warm = run_measured(command, env=env, cwd=ROOT)
    if warm.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{warm.stderr[-2000:]}")
    runs = [run_measured(command, env=env, cwd=ROOT) for _ in range(repeats)]
    return {
        "write_s": round(statistics.median(r.seconds for r in runs), 3),
        "write_runs_s": [round(r.seconds, 3) for r in runs],
        "peak_rss_mb": round(max(r.peak_rss_mb for r in runs)),
        "size_mb": round(page.stat().st_size / 1e6, 3),
        "log": warm.stderr.strip().splitlines()[-1],
    }


def load_times(pages: list[Path], repeats: int, profile: Path) -> list[dict]:
    """Per page: median time from navigation start to the load event in headless Chromium (a fresh load
    each time), and the console messages it logged."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        raise SystemExit("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    results = []
    try:
        for page in pages:
            times = []
            for _ in range(repeats):
                driver.get("about:blank")
                driver.get(page.as_uri())
                times.append(
                    driver.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd")
                    / 1000
                )
            results.append(
                {
                    "load_s": round(statistics.median(times), 3),
                    "load_runs_s": [round(t, 3) for t in times],
                    "console": [entry["message"] for entry in driver.get_log("browser")],
                }
            )
    finally:
        driver.quit()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the export (default 10000)")
    parser.add_argument("--columns", type=int, default=300, help="columns in the export (default 300)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median counts (default 3)")
    parser.add_argument("--data", type=Path, help="folder for the export and pages (default: a temp folder)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 unless every target is met")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.data or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        export = folder / "bench_report_runs.parquet"
        make_export(export, args.runs, args.columns)
        env = command_env(folder / "pycache")
        figures: dict = {"runs": args.runs, "columns": args.columns, "repeats": args.repeats, "variants": {}}
        pages = []
        for name, options in VARIANTS.items():
            page = folder / f"{name.replace(' ', '_').replace('-', '')}.html"
            figures["variants"][name] = write_times(export, page, options, args.repeats, env)
            pages.append(page)
        for name, loaded in zip(VARIANTS, load_times(pages, args.repeats, folder / "profile"), strict=True):
            figures["variants"][name] |= loaded
    met = {
        name: all(values[key] < limit for key, limit in TARGETS.items()) and not values["console"]
        for name, values in figures["variants"].items()
    }
    figures["targets"], figures["met"] = TARGETS, met
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{args.runs} runs x {args.columns} columns, median of {args.repeats}")
        for name, values in figures["variants"].items():
            print(
                f"  {name:<18} write {values['write_s']:.2f} s (peak {values['peak_rss_mb']} MB), "
                f"{values['size_mb']:.2f} MB, load {values['load_s']:.3f} s"
                + ("" if met[name] else "  (over a target)")
            )
    return 1 if args.check and not met["report"] else 0


if __name__ == "__main__":
    sys.exit(main())
