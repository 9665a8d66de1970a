"""The aggregate and analyze benchmarks run end to end at a tiny size."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(name: str, *args: str) -> dict:
    command = ["uv", "run", str(ROOT / "bench" / name), *args, "--repeats", "1", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_bench_analyze_smoke(tmp_path):
    figures = bench("bench_analyze.py", "--runs", "500", "--columns", "60", "--data", str(tmp_path))
    assert (figures["runs"], figures["columns"]) == (500, 60)  # the core columns alone are 40 and more
    assert set(figures["ops"]) == {"top", "group-by", "pivot"}
    for op in figures["ops"].values():
        assert op["in_process_s"] > 0 and op["uv_run_s"] > 0
    baseline = figures["baseline"]
    assert baseline is None or (0 < baseline["groups"] <= 120 and figures["baseline_over_group_by"] > 0)


@pytest.mark.slow
def test_bench_aggregate_smoke(tmp_path):
    figures = bench(
        "bench_aggregate.py", "--files", "3", "--runs", "200", "--columns", "40", "--data", str(tmp_path)
    )
    assert figures["output_runs"] == figures["expected_runs"] == 3 * 200 - 2 * 20
    assert 0 < figures["peak_rss_mb"] < 2048 and figures["seconds"] > 0
