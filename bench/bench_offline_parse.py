#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "wandb>=0.31",
#     "polars>=2.1",
#     "pyarrow>=26",
# ]
# ///
"""Benchmark: reading an offline W&B run log, our columnar reader vs a naive record-by-record reader."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.table.schema import HISTORY_COLUMNS, is_internal_key  # noqa: E402
from shared.wandb.offline import read_run_log  # noqa: E402

EXAMPLES = """\
examples:
  bench_offline_parse.py                      # 50k rows x 10 keys (~45 MB log), 3 repeats
  bench_offline_parse.py --rows 2000 --json   # a quick look
  bench_offline_parse.py --check              # exit 1 unless ours is >= 4x faster
"""
KEYS = 10
TARGET_SPEEDUP = 4.0


# --- the log, written by the real client ---------------------------------------------------------


def write_log(folder: Path, rows: int) -> None:
    """One offline run of `rows` steps x KEYS float metrics (a NaN now and then), written by wandb itself."""
    for variable, sub in (("HOME", "home"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache")):
        os.environ[variable] = str(folder / sub)
    os.environ |= {"WANDB_DATA_DIR": str(folder / "data"), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    import wandb

    rng = random.Random(20261123)
    run = wandb.init(mode="offline", dir=folder, project="bench", name="bench", config={"rows": rows})
    for _ in range(rows):
        run.log({f"metric_{k}": rng.random() if rng.random() > 0.001 else math.nan for k in range(KEYS)})
    run.finish()


def cached_log(cache: Path, rows: int) -> Path:
    """The run log for `rows`, made once (in a child process, so the wandb service dies with it) and reused."""
    folder = cache / f"offline-parse-{rows}x{KEYS}"
    logs = sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))
    if (folder / "complete").is_file() and len(logs) == 1:
        return logs[0]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = [sys.executable, __file__, "--write-log", str(folder), "--rows", str(rows)]
    subprocess.run(command, check=True)
    (folder / "complete").touch()
    return next(folder.glob("wandb/offline-run-*/run-*.wandb"))


# --- the naive reader: what a straight port of wandb's old Python datastore reader looks like -----


def naive_read(path: Path) -> tuple[pl.DataFrame, int, dict[str, Any]]:
    """Record by record: read each frame, check its CRC, parse a full Record, json.loads every value.

    No recovery from damage: a bad CRC ends the read (the benchmark log is intact).
    """
    from wandb.proto import wandb_internal_pb2 as wandb_pb

    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    skipped = 0
    run_id = ""
    with path.open("rb") as stream:
        stream.read(7)
        pending = b""
        while True:
            offset = stream.tell()
            left = 32768 - offset % 32768
            if left < 7:
                stream.read(left)
                continue
            header = stream.read(7)
            if len(header) < 7:
                break
            checksum, length, kind = struct.unpack("<IHB", header)
            if kind == 0 and length == 0:
                break
            payload = stream.read(length)
            if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
                raise ValueError(f"bad CRC at {offset}")
            if kind in (2, 3):
                pending += payload
                continue
            data, pending = pending + payload, b""
            record = wandb_pb.Record()
            record.ParseFromString(data)
            which = record.WhichOneof("record_type")
            if which == "run":
                run_id = record.run.run_id
            elif which == "summary":
                for item in record.summary.update:
                    key_path = [item.key] if item.key else list(item.nested_key)
                    node = summary
                    for name in key_path[:-1]:
                        node = node.setdefault(name, {})
                    node[key_path[-1]] = json.loads(item.value_json)
                for item in record.summary.remove:
                    key_path = [item.key] if item.key else list(item.nested_key)
                    node = summary
                    for name in key_path[:-1]:
                        node = node.get(name, {})
                    node.pop(key_path[-1], None)
            elif which == "history":
                values = {
                    item.key or ".".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
                step = record.history.step.num if record.history.HasField("step") else values.get("_step")
                stamp = values.get("_timestamp")
                media = [name[: -len("._type")] for name in values if name.endswith("._type")]
                for name, value in values.items():
                    obj = next((m for m in media if name == m or name.startswith(m + ".")), None)
                    if is_internal_key(name) or value is None or (obj is not None and name != obj + "._type"):
                        continue
                    if obj is not None or isinstance(value, bool) or not isinstance(value, int | float):
                        skipped += 1
                        continue
                    rows.append({"step": step, "timestamp": stamp, "key": name, "value": float(value)})
    frame = pl.DataFrame(
        rows, schema={"step": pl.Int64, "timestamp": pl.Float64, "key": pl.String, "value": pl.Float64}
    )
    frame = frame.select(
        pl.lit(run_id).alias("run_id"),
        "step",
        pl.from_epoch((pl.col("timestamp") * 1e6).round().cast(pl.Int64), "us").dt.replace_time_zone("UTC"),
        "key",
        "value",
    ).cast(HISTORY_COLUMNS)
    return frame, skipped, summary


def ours_read(path: Path) -> tuple[pl.DataFrame, int, dict[str, Any]]:
    run = read_run_log(path)
    return run.history, run.skipped_values, run.record.summary


# --- measuring -----------------------------------------------------------------------------------


def timed(function: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def export_command(log: Path, repeats: int) -> tuple[float, list[float], Any]:
    """The whole `uv run wandb-tools/export_runs.py --offline LOG --include-history`, as a user runs it
    (after an untimed run that readies the script's environment)."""
    with tempfile.TemporaryDirectory(prefix="bench-offline-export-") as out:
        command = ["uv", "run", str(ROOT / "wandb-tools" / "export_runs.py"), "--offline", str(log)]
        command += ["-o", out, "--include-history", "--json"]
        run = lambda: subprocess.run(command, check=True, capture_output=True, cwd=ROOT)  # noqa: E731
        run()
        return timed(run, repeats)


def peak_memory(reader: str, path: Path) -> dict[str, float]:
    """Peak RSS of a fresh process that reads the log once, and how much of it the reading added."""
    command = [sys.executable, __file__, "--measure-memory", reader, str(path)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def _peak_rss_mb() -> float:
    """This process's peak resident memory (Linux's VmHWM: unlike ru_maxrss, not inherited across exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_memory(reader: str, path: Path) -> None:
    """(child process) Print peak RSS before and after one read, and the output frame's size, in MB."""
    from wandb.proto import wandb_internal_pb2  # noqa: F401  (imports count in the baseline, not the read)

    before = _peak_rss_mb()
    frame = (ours_read if reader == "ours" else naive_read)(path)[0]
    peak = _peak_rss_mb()
    figures = {
        "peak_rss_mb": peak,
        "read_added_mb": peak - before,
        "frame_mb": frame.estimated_size() / 2**20,
    }
    print(json.dumps({name: round(value, 1) for name, value in figures.items()}))


def same_answer(
    ours: tuple[pl.DataFrame, int, dict[str, Any]], naive: tuple[pl.DataFrame, int, dict[str, Any]]
) -> bool:
    order = ["step", "key"]
    frames_equal = ours[0].sort(order).equals(naive[0].sort(order))
    return (
        frames_equal
        and ours[1] == naive[1]
        and json.dumps(ours[2], sort_keys=True) == json.dumps(naive[2], sort_keys=True)
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=50_000, help=f"logged steps of {KEYS} metrics (default 50000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats of each reader (median; default 3)"
    )
    default_cache = Path(tempfile.gettempdir()) / "run-tools-bench"
    parser.add_argument(
        "--cache", type=Path, default=default_cache, help=f"where logs are kept (default {default_cache})"
    )
    parser.add_argument(
        "--no-cli",
        action="store_true",
        help="skip timing the whole `uv run export_runs.py --offline` command",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 unless ours is >= {TARGET_SPEEDUP:g}x faster"
    )
    parser.add_argument("--write-log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure-memory", nargs=2, metavar=("READER", "LOG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_log:
        write_log(args.write_log, args.rows)
        return 0
    if args.measure_memory:
        measure_memory(args.measure_memory[0], Path(args.measure_memory[1]))
        return 0

    start = time.perf_counter()
    log = cached_log(args.cache, args.rows)
    made = time.perf_counter() - start
    ours_read(log)  # warm-up: page cache, imports
    naive_s, naive_times, naive_answer = timed(lambda: naive_read(log), args.repeats)
    ours_s, ours_times, ours_answer = timed(lambda: ours_read(log), args.repeats)
    export_s, export_times, _ = export_command(log, args.repeats) if not args.no_cli else (None, [], None)
    figures: dict[str, Any] = {
        "rows": args.rows, "keys": KEYS, "log_mb": round(log.stat().st_size / 2**20, 1),
        "history_values": ours_answer[0].height, "log_made_or_found_s": round(made, 2),
        "naive_s": round(naive_s, 3), "naive_runs_s": [round(t, 3) for t in naive_times],
        "ours_s": round(ours_s, 3), "ours_runs_s": [round(t, 3) for t in ours_times],
        "speedup": round(naive_s / ours_s, 1), "same_answer": same_answer(ours_answer, naive_answer),
        "uv_run_export_s": export_s and round(export_s, 3), "uv_run_export_runs_s": [round(t, 3) for t in export_times],
        "ours_memory": peak_memory("ours", log), "naive_memory": peak_memory("naive", log),
    }  # fmt: skip
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, value in figures.items():
            print(f"{name:>20}: {value}")
    if not figures["same_answer"]:
        print("error: our reader and the naive reader disagree", file=sys.stderr)
        return 1
    return 1 if args.check and figures["speedup"] < TARGET_SPEEDUP else 0


if __name__ == "__main__":
    sys.exit(main())
