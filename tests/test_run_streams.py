"""Everything a run holds (issue 21), items 2-4: the tidy streams beside history (every history value that
is not a number, console output, system metrics), read from runs the real clients wrote, each value
compared with what was logged."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from shared.cli.progress import TerminalEvents
from shared.table.schema import GENERATION_KEY
from shared.wandb.offline import read_run_log
from tests.export_checks import ENTITY, cron_standin
from tests.test_wandb_offline import Logs, logs  # noqa: F401 (the fixture)
from tests.wandb_standin import StandinServer


def export_offline(paths: list[Path], folder: Path, **options: object) -> tuple[list, list[str]]:
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
    from shared.wandb.sources import OfflineSource

    events = TerminalEvents()
    outcome = export_runs(
        [ExportTarget(OfflineSource(paths, events=events))], ExportOptions(folder, **options), events
    )
    return outcome.results, outcome.failures


def test_an_offline_export_keeps_every_history_value(logs: Logs, tmp_path: Path):  # noqa: F811
    """With history, the values that are not numbers land in `*_history_other.parquet`, of the export's
    generation and named by its metadata; none is counted as skipped."""
    results, failures = export_offline([logs.complete], tmp_path, include_history=True)
    assert failures == []
    metadata = json.loads(results[0].metadata_path.read_text())
    other_path = tmp_path / metadata["files"]["history_other"]
    assert other_path.name.endswith("_history_other.parquet")
    assert metadata["skipped_history_values"] == 0 and metadata["history_other_rows"] == 3
    assert pq.read_schema(other_path).metadata[GENERATION_KEY.encode()].decode() == metadata["generation"]
    stored = pl.read_parquet(other_path).sort("key")
    assert stored.columns == ["run_id", "step", "timestamp", "key", "type", "value"]
    assert_frame_equal(stored, read_run_log(logs.complete).history_other.sort("key"))
    numeric = pl.read_parquet(results[0].history_path)
    assert numeric.schema["value"] == pl.Float64 and "label" not in numeric["key"].to_list()


def test_without_history_no_history_other_file(logs: Logs, tmp_path: Path):  # noqa: F811
    results, _ = export_offline([logs.complete], tmp_path)
    metadata = json.loads(results[0].metadata_path.read_text())
    assert "history_other" not in metadata["files"] and not list(tmp_path.glob("*_history_other.parquet"))


def test_readers_of_a_folder_take_no_stream_file_for_runs(logs: Logs, tmp_path: Path):  # noqa: F811
    """A glob over an export's parquets, or the newest export of a folder, finds its runs file only."""
    from shared.base.events import Events
    from shared.table.exports import find_runs_files, newest_export

    results, _ = export_offline([logs.complete], tmp_path, include_history=True)
    other = next(tmp_path.glob("*_history_other.parquet"))
    other.touch()  # the newest file of the folder
    events = Events()
    assert find_runs_files([str(tmp_path / "*.parquet")], events) == [results[0].runs_path]
    assert f"skipping history_other file {other}" in "\n".join(events.notes)
    assert newest_export(tmp_path)[0] == results[0].runs_path


# ------------------------------------------------------------------ console and system metrics

WANDB_SCRIPT = """\
import sys, time, wandb
run = wandb.init(mode="offline", project="proj", settings=wandb.Settings(x_stats_sampling_interval=0.2))
print("first line")
print("to stderr", file=sys.stderr)
for step in range(3):
    run.log({"loss": 1.0 / (step + 1), "phase": f"p{step}"})
    print(f"step {step}", "two parts")
time.sleep(1.5)
run.finish()
"""

NEPTUNE_SCRIPT = """\
import sys, time, neptune
run = neptune.init_run(project="ws/proj", mode="offline", name="streams")
for step in range(4):
    run["train/phase"].append(f"phase-{step}", step=step)
    run["train/loss"].append(1.0 / (step + 1), step=step)
print("first line")
print("to stderr", file=sys.stderr)
time.sleep(2)
run.stop()
"""


def run_script(folder: Path, text: str, **environment: str) -> None:
    """`text` run as a script in `folder` by this Python, the tracker's own setup kept out."""
    import os
    import subprocess
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(text)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NEPTUNE_"))}
    done = subprocess.run(
        [sys.executable, "train.py"],
        cwd=folder,
        env=keep | {"HOME": str(folder)} | environment,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_offline_wandb_export_keeps_the_console_and_system_metrics(tmp_path: Path):
    """A script run by the real client: each printed line in order with its stream, and the stats records'
    samples with the client's keys (several of them: the sampling interval is 0.2 s)."""
    run_script(tmp_path / "job", WANDB_SCRIPT, WANDB_MODE="offline", WANDB_SILENT="true")
    options = {"include_history": True, "streams": frozenset({"console", "system"})}
    results, failures = export_offline([tmp_path / "job" / "wandb"], tmp_path / "out", **options)
    assert failures == []
    metadata = json.loads(results[0].metadata_path.read_text())
    console = pl.read_parquet(tmp_path / "out" / metadata["files"]["console"])
    printed = [("stdout", "first line"), ("stderr", "to stderr")]
    printed += [("stdout", f"step {step} two parts") for step in range(3)]
    lines = console.filter(pl.col("text").is_in([text for _, text in printed]))
    assert lines.select("stream", "text").rows() == printed
    assert console["line"].to_list() == list(range(console.height))
    # Each line timed by the client's output record, today (the run took seconds).
    stamps = lines["timestamp"]
    assert stamps.null_count() == 0 and stamps.dt.date().n_unique() <= 2
    assert abs((stamps.max() - stamps.min()).total_seconds()) < 300
    system = pl.read_parquet(tmp_path / "out" / metadata["files"]["system"])
    samples = system.filter(pl.col("key") == "memory_percent")
    assert samples.height >= 2 and samples["value"].is_between(0, 100).all()
    assert {"cpu", "proc.memory.rssMB"} <= set(system["key"])
    assert metadata["system_rows"] == system.height and system["timestamp"].null_count() == 0
    other = pl.read_parquet(tmp_path / "out" / metadata["files"]["history_other"])
    assert other.select("step", "key", "type", "value").rows() == [
        (s, "phase", "string", f"p{s}") for s in range(3)
    ]


def test_an_offline_neptune_export_keeps_string_series_console_and_monitoring(tmp_path: Path):
    """A script run by the real neptune client: the string series to history_other (it used to be dropped
    with skipped_history_values 0), the captured stdout and stderr as lines, monitoring/<id>/* as system."""
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
    from shared.neptune.offline import OfflineSource

    data = tmp_path / "job" / ".neptune"
    run_script(tmp_path / "job", NEPTUNE_SCRIPT, NEPTUNE_MODE="offline", NEPTUNE_DATA_DIRECTORY=str(data))
    events = TerminalEvents()
    streams = frozenset({"console", "system"})
    outcome = export_runs(
        [ExportTarget(OfflineSource(data, "ws/proj", events=events), ("ws", "proj"))],
        ExportOptions(tmp_path / "out", include_history=True, streams=streams),
        events,
    )
    assert outcome.failures == []
    metadata = json.loads(outcome.results[0].metadata_path.read_text())
    assert metadata["skipped_history_values"] == 0
    read = {
        name: pl.read_parquet(tmp_path / "out" / metadata["files"][name])
        for name in ("history_other", "console", "system")
    }
    assert read["history_other"].select("step", "key", "type", "value").rows() == [
        (step, "train/phase", "string", f"phase-{step}") for step in range(4)
    ]
    lines = read["console"].filter(pl.col("text").is_in(["first line", "to stderr"]))
    # the client captures each stream in its own thread: the order across streams is its clock's
    assert sorted(lines.select("stream", "text").rows()) == [
        ("stderr", "to stderr"),
        ("stdout", "first line"),
    ]
    assert not read["console"]["text"].str.contains("\n").any()
    assert lines["timestamp"].null_count() == 0  # each write's time, as the client logged it
    keys = set(read["system"]["key"])
    assert any(key.startswith("monitoring/") and key.endswith("/memory") for key in keys), keys
    history = pl.read_parquet(outcome.results[0].history_path)
    assert not history["key"].str.starts_with("monitoring/").any()  # monitoring is the system file's


# ------------------------------------------------------------------ the W&B stand-in


@pytest.fixture
def wandb_standin() -> Iterator[StandinServer]:
    with cron_standin() as server:
        yield server


def test_an_archive_export_keeps_string_series_console_and_monitoring(tmp_path: Path, capsys):
    """neptune-exporter rows of a string series, a captured stdout, a monitoring series, a histogram
    series and a file series: each lands in its file (the histogram as W&B's histogram JSON, the file
    as its path). Only a series of a kind the exporter does not write is skipped, counted and named."""
    import pyarrow as pa

    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
    from shared.neptune.archive import ArchiveSource
    from tests.neptune_fixtures import EXPORTER_SCHEMA, PROJECT, SPECS, point_time, write_archive

    root = write_archive(tmp_path / "data", specs=SPECS[:1])
    part = next(root.glob("*/*_part_0.parquet"))
    base = {"project_id": PROJECT, "run_id": "TEST-1"}

    def point(path: str, kind: str, step: int, **value: object) -> dict[str, object]:
        where = {"attribute_path": path, "attribute_type": kind, "step": step, "timestamp": point_time(step)}
        return base | where | value

    added = [point("train/phase", "string_series", step, string_value=f"phase-{step}") for step in range(3)]
    added += [
        point("monitoring/abc/stdout", "string_series", 0, string_value="hello"),
        point("monitoring/abc/stdout", "string_series", 1, string_value="\n"),
        point("monitoring/abc/cpu", "float_series", 0, float_value=12.5),
        point(
            "train/hist",
            "histogram_series",
            0,
            histogram_value={"type": "COUNTS", "edges": [0.0, 1.0, 2.5], "values": [3.0, 1.0]},
        ),
        point("train/hist", "histogram_series", 1),  # neptune-exporter writes a NaN histogram as null
        point("media/sample", "file_series", 4, file_value={"path": "team/TEST-1/media/sample/4.png"}),
        point("train/other", "future_series", 2, string_value="x"),  # a kind no exporter wrote yet
    ]
    table = pa.concat_tables([pq.read_table(part), pa.Table.from_pylist(added, schema=EXPORTER_SCHEMA)])
    pq.write_table(table, part)

    events = TerminalEvents()
    source = ArchiveSource(root, PROJECT, cache=False, events=events)
    outcome = export_runs(
        [ExportTarget(source, source.key)],
        ExportOptions(tmp_path / "out", include_history=True, streams=frozenset({"console", "system"})),
        events,
    )
    assert outcome.failures == []
    metadata = json.loads(outcome.results[0].metadata_path.read_text())
    read = {
        name: pl.read_parquet(tmp_path / "out" / metadata["files"][name])
        for name in ("history_other", "console", "system")
    }
    histogram = {
        "_type": "histogram",
        "bins": [0.0, 1.0, 2.5],
        "values": [3.0, 1.0],
        "histogram_type": "COUNTS",
    }
    media = {"_type": "file", "path": "team/TEST-1/media/sample/4.png"}
    assert read["history_other"].select("step", "key", "type", "value").sort("key", "step").rows() == [
        (4, "media/sample", "media", json.dumps(media, sort_keys=True)),
        (0, "train/hist", "histogram", json.dumps(histogram, sort_keys=True)),
        (1, "train/hist", "histogram", None),
        *[(step, "train/phase", "string", f"phase-{step}") for step in range(3)],
    ]
    stamps = read["history_other"].sort("key", "step")["timestamp"].to_list()
    assert stamps == [point_time(step) for step in (4, 0, 1, 0, 1, 2)]
    assert read["console"].select("line", "stream", "text").rows() == [(0, "stdout", "hello")]
    assert read["system"].select("key", "value").rows() == [("monitoring/abc/cpu", 12.5)]
    assert metadata["skipped_history_values"] == 1
    assert "series of type future_series are not read (counted in skipped_history_values)" in (
        capsys.readouterr().err
    )


def test_an_api_export_keeps_every_history_value_and_an_update_carries_them(
    wandb_env, tmp_path: Path, capsys
):
    """The W&B API's history files: a string, a boolean and a histogram (JSON in the file) go to
    history_other, none counted as skipped; an incremental update that fetches other runs keeps them."""
    from tests.current_data import load_script
    from tests.export_checks import advance_run, utc_now

    export_runs = load_script("export_runs")
    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    kept, changed = alpha.runs[0], alpha.runs[1]
    histogram = {"_type": "histogram", "bins": [0.0, 1.0, 2.0], "values": [3, 1]}
    kept.history = [
        {
            "_step": step,
            "_timestamp": 1.7e9 + step,
            "loss": 1.0 / (step + 1),
            "phase": f"p{step}",
            "ok": step == 0,
        }
        | ({"hist": histogram} if step == 1 else {})
        for step in range(3)
    ]
    kept.history_meta, kept.live_from_step = None, None
    argv = ["-e", ENTITY, "-p", "alpha", "--include-history", "--incremental", "-o", str(tmp_path)]
    assert export_runs.main(argv) == 0
    metadata = json.loads(next(tmp_path.glob("*_metadata.json")).read_text())
    other_path = tmp_path / metadata["files"]["history_other"]
    expected = [(step, "phase", "string", f"p{step}") for step in range(3)]
    expected += [(step, "ok", "bool", "true" if step == 0 else "false") for step in range(3)]
    expected += [(1, "hist", "histogram", json.dumps(histogram, sort_keys=True))]

    def stored() -> list[tuple]:
        frame = pl.read_parquet(other_path).filter(pl.col("run_id") == kept.id)
        return sorted(frame.select("step", "key", "type", "value").rows())

    assert stored() == sorted(expected)
    assert metadata["skipped_history_values"] == 0
    assert pl.read_parquet(other_path).filter(pl.col("run_id") == kept.id)["timestamp"].null_count() == 0

    advance_run(changed, utc_now())
    wandb_env.clear_cache()
    assert export_runs.main(argv) == 0
    assert "1 new or changed run(s) merged into the files" in capsys.readouterr().err
    assert stored() == sorted(expected)  # carried from the stored file: the run was not fetched again


def test_a_stream_file_left_from_an_earlier_export_is_named(logs: Logs, tmp_path: Path, capsys):  # noqa: F811
    export_offline([logs.complete], tmp_path, include_history=True, streams=frozenset({"console"}))
    capsys.readouterr()
    export_offline([logs.complete], tmp_path, include_history=True)
    err = capsys.readouterr().err
    assert "_console.parquet is left from an earlier export: not part of this one" in err
    assert "_history_other.parquet is left" not in err


def test_aggregate_with_history_carries_the_stream_files(logs: Logs, tmp_path: Path):  # noqa: F811
    """`aggregate --include-history` merges each input's history_other and console files beside its
    history, each row with its run's entity and project, of the aggregate's generation."""
    from tests.current_data import load_script

    aggregate_runs = load_script("aggregate_runs")
    streams = frozenset({"console"})
    results, _ = export_offline([logs.complete], tmp_path / "export", include_history=True, streams=streams)
    output = tmp_path / "all.parquet"
    argv = [str(results[0].runs_path), "-o", str(output), "--include-history", "--protocol", "all"]
    assert aggregate_runs.main(argv) == 0
    generation = pq.read_metadata(output).metadata[GENERATION_KEY.encode()]
    for name in ("history_other", "console"):
        merged = pl.read_parquet(tmp_path / f"all_{name}.parquet")
        exported = pl.read_parquet(next((tmp_path / "export").glob(f"*_{name}.parquet")))
        assert merged.height == exported.height and set(merged["project"]) <= {"proj"}
        assert_frame_equal(merged.select(exported.columns), exported, check_row_order=False)
        assert (
            pq.read_metadata(tmp_path / f"all_{name}.parquet").metadata[GENERATION_KEY.encode()] == generation
        )
    assert not (tmp_path / "all_system.parquet").exists()  # the export has none


def test_the_runs_table_summarises_the_system_metrics(tmp_path: Path):
    """cpu_mean, memory_peak_gb, gpu_mean and gpu_memory_peak_gb from W&B's and Neptune's keys as logged,
    each compared with the samples it summarises; null for a run without such samples."""
    from shared.export.project import ProjectExport
    from shared.table.schema import RunRecord

    export = ProjectExport(
        tmp_path,
        "e",
        "p",
        include_history=False,
        metadata={},
        tracker="wandb-offline",
        streams=frozenset({"system"}),
    )
    for run_id in ("w", "n", "none"):
        export.add_run(RunRecord(run_id, "e", "p"))
    samples = [
        ("w", "cpu", 10.0), ("w", "cpu", 30.0), ("w", "proc.memory.rssMB", 512.0), ("w", "proc.memory.rssMB", 2048.0),
        ("w", "gpu.0.gpu", 50.0), ("w", "gpu.1.gpu", 70.0), ("w", "gpu.0.memoryAllocatedBytes", 2.0 * 2**30),
        ("n", "monitoring/ab12/cpu", 40.0), ("n", "monitoring/ab12/memory", 3.5), ("n", "monitoring/ab12/memory", 1.5),
        ("n", "monitoring/ab12/gpu", 20.0), ("n", "monitoring/ab12/gpu_memory", 0.75),
        ("none", "disk.in", 1.0),
    ]  # fmt: skip
    frame = pl.DataFrame(samples, schema=["run_id", "key", "value"], orient="row").with_columns(
        timestamp=pl.lit(None, pl.Datetime("us", "UTC"))
    )
    export.add_stream("system", frame.select("run_id", "timestamp", "key", "value"))
    result = export.finish()
    columns = ["id", "cpu_mean", "memory_peak_gb", "gpu_mean", "gpu_memory_peak_gb"]
    assert pl.read_parquet(result.runs_path).select(columns).rows() == [
        ("w", 20.0, 2.0, 60.0, 2.0),
        ("n", 40.0, 3.5, 20.0, 0.75),
        ("none", None, None, None, None),
    ]


# ------------------------------------------------------------------ the W&B API: output.log and events

RAW_LOG = "epoch 1: loss=0.5\n\nünïcødé ✓ 日本\nlast line without its newline".encode()
MERGED_LOG = (
    "2026-11-30T12:00:00.123456 starting\n"
    "ERROR 2026-11-30T12:00:01.000000 Traceback (most recent call last):\n"
    "2026-11-30T12:00:02.000000 [rank-0] done ✓\n"
).encode()


def events_rows(count: int, *, gpu: bool) -> list[dict]:
    """An events stream as wandb-core's file stream writes it (core/internal/filestream/updatestats.go)."""
    start = 1.78e9
    return [
        {"_wandb": True, "_timestamp": start + i / 4, "_runtime": i / 4, "system.cpu": float(i % 100)}
        | {"system.memory_percent": 40.5, "system.proc.memory.rssMB": 100.0 + i}
        | (
            {"system.gpu.0.gpu": 50.0, "system.gpu.0.memoryAllocatedBytes": 2.0**30 * (1 + i % 2)}
            if gpu
            else {}
        )
        for i in range(count)
    ]


def api_runs(wandb_env: StandinServer, extra: int = 20) -> list:
    """cron/alpha with `extra` more runs (copies under new ids), more than one lookup batch of 25."""
    from dataclasses import replace

    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    alpha.runs += [
        replace(alpha.runs[i % len(alpha.runs)], id=f"copy{i:03d}", files={}, events=[]) for i in range(extra)
    ]
    wandb_env.clear_cache()
    return alpha.runs


def export_api(folder: Path, *flags: str) -> int:
    from tests.current_data import load_script

    argv = ["-e", ENTITY, "-p", "alpha", "--include-console", "--include-system-metrics", *flags]
    return load_script("export_runs").main([*argv, "-o", str(folder)])


def stream_file(folder: Path, name: str) -> pl.DataFrame:
    metadata = json.loads(next(folder.glob("*_metadata.json")).read_text())
    frame = pl.read_parquet(folder / metadata["files"][name])
    assert metadata[f"{name}_rows"] == frame.height
    return frame


@pytest.mark.parametrize("history", [False, True], ids=["alone", "with-history"])
def test_an_api_export_keeps_each_runs_output_log_and_events(wandb_env, tmp_path: Path, history: bool):
    """Each run's output.log and events stream as the stand-in serves them: a raw log (the text alone:
    stream null; unicode, an empty line, a last line without its newline), a log merged from the file
    stream (its marks taken off, ERROR lines as stderr), no log at all (no rows, no failure); events with
    the `system.` prefix taken off (the offline keys), every sample of a stream longer than the 500 the
    client asks for by default. One lookup per 25 runs, one fetch per output.log, the events of up to 25
    runs in one request."""
    runs = api_runs(wandb_env)
    raw, merged, silent = runs[0], runs[1], runs[2]
    raw.files["output.log"], merged.files["output.log"] = RAW_LOG, MERGED_LOG
    raw.events, merged.events = events_rows(1200, gpu=True), events_rows(3, gpu=False)
    wandb_env.reset_counts()
    assert export_api(tmp_path, *(["--include-history"] if history else [])) == 0

    console = stream_file(tmp_path, "console").sort("run_id", "line")
    assert console.filter(pl.col("run_id") == silent.id).is_empty()
    assert console.filter(pl.col("run_id") == raw.id).select("line", "stream", "text").rows() == [
        (0, None, "epoch 1: loss=0.5"),
        (1, None, ""),
        (2, None, "ünïcødé ✓ 日本"),
        (3, None, "last line without its newline"),
    ]
    assert console.filter(pl.col("run_id") == merged.id).select("line", "stream", "text").rows() == [
        (0, "stdout", "starting"),
        (1, "stderr", "Traceback (most recent call last):"),
        (2, "stdout", "[rank-0] done ✓"),
    ]
    # The merged log's times are kept (UTC); an uploaded output.log has none.
    times = console.filter(pl.col("run_id") == merged.id)["timestamp"].dt.strftime("%H:%M:%S%.6f").to_list()
    assert times == ["12:00:00.123456", "12:00:01.000000", "12:00:02.000000"]
    assert console.filter(pl.col("run_id") == raw.id)["timestamp"].null_count() == 4
    assert set(console["run_id"]) == {raw.id, merged.id}

    system = stream_file(tmp_path, "system")
    for run in (raw, merged):
        expected = sorted(
            (row["_timestamp"], key.removeprefix("system."), value)
            for row in run.events
            for key, value in row.items()
            if key.startswith("system.")
        )
        got = system.filter(pl.col("run_id") == run.id).with_columns(
            seconds=pl.col("timestamp").dt.epoch("us") / 1e6
        )
        assert sorted(got.select("seconds", "key", "value").rows()) == expected  # times in quarter seconds
    assert set(system["run_id"]) == {raw.id, merged.id}
    assert {"cpu", "memory_percent", "proc.memory.rssMB", "gpu.0.gpu"} <= set(system["key"])

    table = pl.read_parquet(next(tmp_path.glob("*_runs.parquet")))
    summaries = {row.pop("id"): row for row in table.select(
        "id", "cpu_mean", "memory_peak_gb", "gpu_mean", "gpu_memory_peak_gb"
    ).to_dicts()}  # fmt: skip
    assert summaries[raw.id] == pytest.approx(
        {"cpu_mean": sum(i % 100 for i in range(1200)) / 1200, "memory_peak_gb": 1299 / 1024, "gpu_mean": 50.0,
         "gpu_memory_peak_gb": 2.0}
    )  # fmt: skip
    assert summaries[silent.id] == dict.fromkeys(summaries[silent.id])

    assert wandb_env.requests["RunContents"] == math.ceil(len(runs) / 25) == 2
    assert wandb_env.requests["RunEvents"] == 1  # the two runs with events, in one batch; none without
    assert wandb_env.requests["GET /files/run-file"] == 2  # the output.logs
    wandb_env.assert_clean()


def test_a_multipart_console_log_is_read_in_order_from_the_files_listing(wandb_env, tmp_path: Path):
    """A run logged with console_multipart has no output.log: its parts (`logs/output_<date>_<time>_<n>.log`,
    the counter not zero-padded, so name order is not time order) are read from its files listing, oldest
    first, one download each; a log that only looks like a part is not one."""
    runs = api_runs(wandb_env, extra=0)
    multipart, plain = runs[0], runs[1]
    multipart.files["logs/output_20261206_184602_10.log"] = b"second\nthird"
    multipart.files["logs/output_20261206_184602_9.log"] = b"first\n"
    multipart.files["logs/output_20261207_000000_1.log"] = "next day ✓\n".encode()
    multipart.files["logs/debug.log"] = b"not console"
    plain.files["output.log"] = RAW_LOG
    wandb_env.reset_counts()
    assert export_api(tmp_path) == 0

    console = stream_file(tmp_path, "console").sort("run_id", "line")
    assert console.filter(pl.col("run_id") == multipart.id).select("line", "stream", "text").rows() == [
        (0, None, "first"),
        (1, None, "second"),
        (2, None, "third"),
        (3, None, "next day ✓"),
    ]
    assert console.filter(pl.col("run_id") == plain.id).height == 4
    assert wandb_env.requests["GET /files/run-file"] == 4  # the three parts and the plain run's output.log
    wandb_env.assert_clean()


def test_an_output_log_or_events_that_cannot_be_had_name_the_run(wandb_env, tmp_path: Path, capsys):
    """The server refuses one run's output.log and sends another's events short (fewer samples than its
    eventsLineCount): both runs are named, the export ends incomplete (exit 1), the others are kept."""
    from shared.base.errors import Incomplete
    from tests.wandb_standin import HookResult

    runs = api_runs(wandb_env, extra=0)
    refused, short, fine = runs[0], runs[1], runs[2]
    for run in (refused, fine):
        run.files["output.log"] = RAW_LOG
    short.events, short.raw_fields = events_rows(3, gpu=False), {"eventsLineCount": 5}
    wandb_env.request_hook = lambda request: (
        HookResult(status=403) if request.path.endswith(f"/{refused.id}/output.log") else None
    )
    try:
        with pytest.raises(Incomplete):
            export_api(tmp_path)
    finally:
        wandb_env.request_hook = None
    err = capsys.readouterr().err
    assert f"run {refused.id} not exported: console: download failed (HTTP 403)" in err
    assert f"run {short.id} not exported: system: the server sent 3 of its 5 samples" in err
    # The summary says what the files lack of each run: its console, its system metrics (not its history).
    assert (
        f"cron/alpha: console of 1 run(s) missing ({refused.id}); system metrics of 1 run(s) missing ({short.id})"
        in err
    )
    console = stream_file(tmp_path, "console")
    assert set(console["run_id"]) == {fine.id} and console.height == 4


def test_events_read_as_one_frame_are_those_read_a_line_at_a_time():
    """The events of many runs are read as one JSON-lines frame; each sample is as reading them line by
    line gives it: a key a row lacks has no row, text is null, integers are numbers. A NaN (which polars
    does not read) sends the batch a line at a time."""
    from shared.wandb.run_contents import events_frame, events_rows

    runs = [
        ("a", ['{"_timestamp": 1.5, "system.cpu": 3, "system.gpu.0.gpu": "n/a", "_wandb": true}',
               '{"_timestamp": 2.5, "system.cpu": 0.5, "_runtime": 1.0}']),
        ("b", ['{"_timestamp": 1.0, "system.disk./.usageGB": 4.25, "system.cpu": 7.5}']),
        ("none", []),
    ]  # fmt: skip
    for batch, rows in ((runs, 5), ([*runs, ("nan", ['{"_timestamp": 3.0, "system.cpu": NaN}'])], 6)):
        together, failed = events_rows(batch)
        one_by_one = pl.concat([events_frame(run_id, lines) for run_id, lines in batch])
        assert failed == {} and together.height == rows
        order = ("run_id", "timestamp", "key")
        assert_frame_equal(together.sort(order), one_by_one.sort(order))
    _, failed = events_rows([("bad", ['{"system.cpu": 1}'])])
    assert failed == {"bad": "an events row without a timestamp"}


def test_an_api_update_fetches_the_streams_of_changed_runs_and_carries_the_others(
    wandb_env, tmp_path: Path, capsys
):
    """`--incremental`: a run that changed is fetched again (its new console line and samples), one that
    did not keeps its stored rows without a request for its output.log or events."""
    from tests.export_checks import advance_run, utc_now

    runs = api_runs(wandb_env, extra=0)
    kept, changed = runs[0], runs[1]
    for run in (kept, changed):
        run.files["output.log"], run.events = RAW_LOG, events_rows(3, gpu=False)
    assert export_api(tmp_path, "--incremental") == 0

    changed.files["output.log"] = RAW_LOG + b"\nresumed"
    changed.events = events_rows(4, gpu=False)
    advance_run(changed, utc_now())
    wandb_env.clear_cache()
    wandb_env.reset_counts()
    assert export_api(tmp_path, "--incremental") == 0
    assert "1 new or changed run(s) merged into the files" in capsys.readouterr().err
    console, system = stream_file(tmp_path, "console"), stream_file(tmp_path, "system")
    lines = dict(console.group_by("run_id").len().iter_rows())
    assert lines == {kept.id: 4, changed.id: 5}
    samples = dict(system.group_by("run_id").agg(pl.col("timestamp").n_unique()).iter_rows())
    assert samples == {kept.id: 3, changed.id: 4}
    assert wandb_env.requests["GET /files/run-file"] == 1 and wandb_env.requests["RunEvents"] == 1


def test_an_update_carries_console_rows_of_an_export_made_before_their_timestamp(wandb_env, tmp_path: Path):
    """Console files written before the `timestamp` column: an update carries their rows (timestamp null)
    beside the rows it fetches, in one file of the current columns."""
    import pyarrow.parquet as pq

    from tests.export_checks import advance_run, utc_now

    runs = api_runs(wandb_env, extra=0)
    kept, changed = runs[0], runs[1]
    kept.files["output.log"], changed.files["output.log"] = RAW_LOG, MERGED_LOG
    assert export_api(tmp_path, "--incremental") == 0
    metadata = json.loads(next(tmp_path.glob("*_metadata.json")).read_text())
    path = tmp_path / metadata["files"]["console"]
    old = pq.read_table(path)
    pq.write_table(old.drop(["timestamp"]).replace_schema_metadata(old.schema.metadata), path)

    changed.files["output.log"] = MERGED_LOG + b"2026-11-30T12:00:03.000000 resumed\n"
    advance_run(changed, utc_now())
    wandb_env.clear_cache()
    assert export_api(tmp_path, "--incremental") == 0
    console = stream_file(tmp_path, "console")
    assert console.columns == ["run_id", "line", "timestamp", "stream", "text"]
    assert console.filter(pl.col("run_id") == kept.id)["timestamp"].null_count() == 4  # carried
    assert console.filter(pl.col("run_id") == changed.id)["timestamp"].null_count() == 0  # fetched: 4 lines
