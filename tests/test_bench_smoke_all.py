"""bench/run_all.py --quick runs every benchmark at a tiny size and writes the whole report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW_LABELS = (
    "| export via the W&B API |",
    "| … summary pages (Runs requests) |",
    "| export memory |",
    "| offline `.wandb` parse |",
    "| top-k, empty summary cache |",
    "| top-k, cached summaries |",
    "| top-k, no cache |",
    "| top-k `last`, first query |",
    "| … `last`, repeated |",
    "| analyze `--top` |",
    "| analyze `--group-by` |",
    "| analyze `--pivot` |",
    "| aggregate memory |",
    "| HTML report `report` |",
)


@pytest.mark.slow
def test_run_all_quick_reports_every_benchmark(tmp_path):
    report, figures_file = tmp_path / "BENCHMARKS.md", tmp_path / "figures.json"
    command = ["uv", "run", str(ROOT / "bench" / "run_all.py"), "--quick", "--data", str(tmp_path / "data")]
    command += ["-o", str(report), "--json", str(figures_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]

    figures = json.loads(figures_file.read_text())
    results = figures["results"]
    assert set(results) == {
        "export_api", "export_memory", "offline_parse", "topk", "topk_peers", "analyze", "aggregate",
        "report", "startup",
    }  # fmt: skip
    assert all("figures" in entry and "error" not in entry for entry in results.values())
    export = results["export_api"]["figures"]
    assert export["complete"] and export["server_problems"] == []
    assert export["summary_pages"] == 1 and export["requests_ours"]["GET /files"] == 30
    assert export["baseline_s"] > 0 and export["ours_s"] > 0
    assert results["export_memory"]["figures"]["complete"]
    assert (
        results["export_memory"]["figures"]["peak_tree_mb"]
        >= results["export_memory"]["figures"]["peak_rss_mb"]
        > 0
    )
    assert results["offline_parse"]["figures"]["same_answer"] and results["topk"]["figures"]["same_answer"]
    assert results["topk_peers"]["figures"]["same_answer"]  # ours, polars and DuckDB agree
    assert results["report"]["figures"]["variants"]["report"]["size_mb"] > 0
    tools = {*ROOT.glob("wandb-tools/*.py"), *ROOT.glob("neptune-tools/*.py")}
    assert {str(tool.relative_to(ROOT)) for tool in tools} == set(results["startup"]["figures"])
    assert all(value.get("seconds", 0) > 0 for value in results["startup"]["figures"].values())
    assert figures["info"]["machine"]["logical_cpus"] > 0

    text = report.read_text()
    assert text.startswith("# Benchmarks\n") and "## Machine" in text and "## Start-up" in text
    for label in ROW_LABELS:
        assert label in text, label
    for tool in tools:
        assert f"| `{tool.relative_to(ROOT)}` |" in text
    assert not list(tmp_path.glob(".*.tmp"))  # the report was written through a temp file and renamed
