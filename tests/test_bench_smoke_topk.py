"""The top-k benchmark runs end to end at a tiny size and both sides agree."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_topk_smoke(tmp_path):
    command = ["uv", "run", str(ROOT / "bench" / "bench_topk.py"), "--runs", "60", "--steps", "30"]
    command += ["--repeats", "1", "--data", str(tmp_path / "archive"), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["same_answer"] is True
    assert figures["points"] == 60 * 30 * 4
    assert figures["baseline_s"] > 0 and figures["ours_s"] > 0 and figures["uv_run_s"] > 0
    assert len(list((tmp_path / "archive").glob("*/*_part_0.parquet"))) == 60
