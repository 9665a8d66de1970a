"""The many-export-folders benchmark runs end to end at a tiny size, and ours and both peers agree."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_many_exports_smoke(tmp_path):
    command = ["uv", "run", str(ROOT / "bench" / "bench_many_exports.py"), "--folders", "8", "--repeats", "1"]
    command += ["--data", str(tmp_path / "exports"), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["same_answer"] is True
    assert (
        figures["distinct_runs"] == 50 + 2 * 7
    )  # 50 the first night, 2 new each night after; nights 5-7 hold finished runs: copies that tie on heartbeat_at
    assert all(seconds > 0 for seconds in figures["median_s"].values()) and len(figures["median_s"]) == 6
    assert all(mb > 0 for mb in figures["peak_tree_mb"].values())
    folders = sorted((tmp_path / "exports" / "snaps").iterdir())
    assert [len(list(f.glob("*_runs.parquet"))) for f in folders] == [1] * 8
    assert all(len(list(f.glob("*_metadata.json"))) == 1 for f in folders)
