"""The top-k benchmark runs end to end at a tiny size, every side agrees, and it leaves no cache behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_topk_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the bench keeps its summary cache
    command = ["uv", "run", str(ROOT / "bench" / "bench_topk.py"), "--runs", "60", "--steps", "30"]
    command += ["--repeats", "1", "--data", str(tmp_path / "archive"), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["same_answer"] is True
    assert figures["points"] == 60 * 30 * 4
    sides = ("baseline", "cold", "no_cache", "warm", "uv_run", "uv_run_no_cache")
    assert all(figures[f"{side}_s"] > 0 and len(figures[f"{side}_runs_s"]) == 1 for side in sides)
    assert all(figures[f"speedup_{side}"] > 0 for side in ("cold", "no_cache", "warm"))
    assert not list(tmp_path.glob("bench-topk-cache-*"))  # its temporary summary cache is gone
    assert len(list((tmp_path / "archive").glob("*/*_part_0.parquet"))) == 60
