"""The offline-log parse benchmark runs end to end at a tiny size and both readers agree."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_offline_parse_bench_smoke(tmp_path):
    command = ["uv", "run", str(ROOT / "bench" / "bench_offline_parse.py"), "--rows", "300", "--repeats", "1"]
    command += ["--cache", str(tmp_path), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["same_answer"] is True
    assert figures["history_values"] == 300 * 10
    assert figures["naive_s"] > 0 and figures["ours_s"] > 0 and figures["speedup"] > 0
    for side in ("ours_memory", "naive_memory"):
        assert figures[side]["peak_rss_mb"] > 0 and figures[side]["frame_mb"] > 0
    assert len(list(tmp_path.glob("offline-parse-300x10/wandb/offline-run-*/run-*.wandb"))) == 1
