"""neptune-tools/export_runs.py on neptune-exporter archives, real offline runs and a stand-in server."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from shared.base.errors import BadInput, Incomplete
from shared.table.schema import CORE_COLUMNS, HISTORY_SCHEMA, RAW_JSON_COLUMNS
from tests.current_data import load_script
from tests.neptune_fixtures import (
    BAD_PARTS,
    CREATED,
    INF,
    NAN,
    PROJECT,
    SPECS,
    Calls,
    Spec,
    StandInClient,
    bad_part_error,
    exporter_name,
    numbered,
    point_time,
    server_view,
    steps,
    write_archive,
    write_bad_part,
    write_offline_project,
)

ROOT = Path(__file__).resolve().parent.parent
export_runs = load_script("export_runs", "neptune-tools")
aggregate_runs = load_script("aggregate_runs")
analyze_runs = load_script("analyze_runs")

OMEGA = Spec(  # every sys field the mapping reads, nested parameters, fractional steps, client bookkeeping
    "omega",
    {"lr": 0.1, "width": 64, "optimizer": "sgd", "model": {"type": "gcn", "k": 3}},
    {
        "train/loss": [(0.0, 2.0), (0.5, 1.5), (1.5, 1.0)],
        "metrics/L0": steps(12.0, 11.0),
        "eval/accuracy": steps(0.2, INF, 0.3),
        "monitoring/0a1b2c3d/cpu": steps(50.0, 60.0),  # hardware monitoring: left out
    },
    {"metrics/L1": 0.7},
    tags=("sweep", "ablation"),
    description="diverged once, resumed",
    failed=True,
    group_tags=("grid-b", "grid-a"),
    attributes={
        "eval/note": "ok",
        "eval/passed": False,
        "eval/finished_at": datetime(2025, 5, 2, tzinfo=UTC),
    },
)
ARCHIVE_SPECS = [*SPECS, OMEGA]
OFFLINE_SPECS = [SPECS[0], SPECS[3], SPECS[5], OMEGA]  # client defaults; NaN/inf dropped; all dropped; rich
WORKSPACE, NAME = PROJECT.split("/")


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (compared as JSON text)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def points_of(spec: Spec, path: str, *, finite_only: bool) -> list[tuple[float, float]]:
    return [(s, v) for s, v in numbered(spec.series[path]) if not finite_only or math.isfinite(v)]


def expected_summary(spec: Spec, *, finite_only: bool) -> dict[str, Any]:
    """Single values as logged (datetimes as ISO text) and each series' value at its highest step."""
    summary = dict(spec.numbers)
    summary |= {k: v.isoformat() if isinstance(v, datetime) else v for k, v in spec.attributes.items()}
    for path in spec.series:
        points = points_of(spec, path, finite_only=finite_only)
        if points and not path.startswith("monitoring/"):
            summary[path] = max(points)[1]
    return summary


def expected_history(spec: Spec, run_id: str, *, finite_only: bool) -> list[tuple[str, str, int, float]]:
    return sorted(
        (run_id, path, math.floor(step), value)
        for path in spec.series
        if not path.startswith("monitoring/")
        for step, value in points_of(spec, path, finite_only=finite_only)
    )


def history_rows(path: Path) -> list[tuple[str, str, int, float]]:
    return sorted(pl.read_parquet(path).select("run_id", "key", "step", "value").iter_rows())


def metric_column(path: str) -> str:
    return "metric_" + path.replace("/", "_")


def files_of(folder: Path, workspace: str = WORKSPACE, project: str = NAME) -> dict[str, Path]:
    prefix = f"{workspace}_{project}"
    return {kind: folder / f"{prefix}_{kind}.{ext}" for kind, ext in (("runs", "parquet"), ("history", "parquet"), ("metadata", "json"))}  # fmt: skip


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("neptune-exporter") / "data"
    write_archive(root, specs=ARCHIVE_SPECS)
    write_archive(root, "team/other", specs=SPECS[:2])
    return root


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> Path:
    return write_offline_project(tmp_path_factory.mktemp("offline-project"), OFFLINE_SPECS)


@pytest.fixture(scope="module")
def archive_export(archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("archive-export")
    assert export_runs.main(["--source", str(archive), "-o", str(out), "--include-history"]) == 0
    return out


# ------------------------------------------------------------------ archives


def test_archive_runs_map_sys_config_and_metrics(archive_export):
    runs = pl.read_parquet(files_of(archive_export)["runs"])
    assert runs["id"].to_list() == [f"TEST-{i + 1}" for i in range(len(ARCHIVE_SPECS))]
    for index, (spec, row) in enumerate(zip(ARCHIVE_SPECS, runs.iter_rows(named=True), strict=True)):
        last_step = max(s for points in spec.series.values() for s, _ in numbered(points))
        assert row["name"] == spec.name and (row["entity"], row["project"]) == (WORKSPACE, NAME)
        assert row["state"] == ("failed" if spec.failed else "finished")  # archives hold no sys/state
        assert row["created_at"] == CREATED + timedelta(hours=index)
        assert row["heartbeat_at"] == point_time(last_step) + timedelta(hours=index, minutes=5)
        assert row["runtime_s"] == 240.0 + index
        assert row["tags"] == sorted(spec.tags) and row["user"] == "ada"
        assert row["group"] == (",".join(sorted(spec.group_tags)) or None)
        assert row["notes"] == (spec.description or None)
        assert row["job_type"] is row["sweep"] is row["url"] is None
        assert json.loads(row["_config_json"]) == spec.params
        summary = json.loads(row["_summary_json"])
        assert same(summary, expected_summary(spec, finite_only=False))
        for path, value in summary.items():
            assert same(row[metric_column(path)], value), path
        assert row["config_lr"] == spec.params["lr"] and row["config_optimizer"] == spec.params["optimizer"]
    omega = runs.row(-1, named=True)
    assert (omega["config_model_type"], omega["config_model_k"]) == ("gcn", 3)
    assert runs["config_model_type"].null_count() == len(SPECS)
    assert math.isnan(runs.row(5, named=True)["metric_train_loss"])  # zeta: NaN last, as logged
    assert runs.row(3, named=True)["metric_train_loss"] == INF  # delta ends on inf
    assert not [c for c in runs.columns if c.startswith(("metric_monitoring", "metric_sys", "metric_source"))]


def test_archive_history_and_metadata(archive_export, archive):
    files = files_of(archive_export)
    history = pl.read_parquet(files["history"])
    assert history.schema == pl.Schema(HISTORY_SCHEMA)
    expected = [
        row for i, spec in enumerate(ARCHIVE_SPECS) for row in expected_history(spec, f"TEST-{i + 1}", finite_only=False)
    ]  # fmt: skip
    assert same(history_rows(files["history"]), sorted(expected))
    first = history.filter(pl.col("run_id") == "TEST-1", pl.col("key") == "train/loss").sort("step")
    assert first["timestamp"].to_list() == [point_time(s) for s, _ in numbered(SPECS[0].series["train/loss"])]
    metadata = json.loads(files["metadata"].read_text())
    assert metadata["source"] == "neptune" and metadata["source_detail"] == "neptune-archive"
    assert metadata["neptune_project"] == PROJECT and metadata["source_path"] == str(archive)
    assert metadata["run_count"] == len(ARCHIVE_SPECS) and metadata["history_rows"] == len(expected)
    assert (metadata["runs_reported"], metadata["runs_exported"], metadata["failed_runs"]) == (
        len(ARCHIVE_SPECS),
        len(ARCHIVE_SPECS),
        {},
    )
    assert metadata["fractional_steps_rounded_down"] == 2  # omega's steps 0.5 and 1.5
    assert list(metadata["columns"]) == pl.read_parquet(files["runs"]).columns
    other = files_of(archive_export, "team", "other")
    assert pl.read_parquet(other["runs"])["name"].to_list() == ["alpha", "beta"]  # every project by default


def test_schema_is_the_wandb_exports(archive_export, tmp_path):
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
    from shared.wandb.sources import OfflineSource

    outcome = export_runs(
        [ExportTarget(OfflineSource(ROOT / "samples" / "wandb"))],
        ExportOptions(tmp_path, include_history=True),
    )
    [wandb], unreadable = outcome.results, outcome.failures
    assert unreadable == []
    ours = pl.read_parquet_schema(files_of(archive_export)["runs"])
    theirs = pl.read_parquet_schema(wandb.runs_path)
    core = len(CORE_COLUMNS)
    assert list(ours.items())[:core] == list(theirs.items())[:core]
    assert list(ours.items())[-2:] == list(theirs.items())[-2:] == [(c, pl.String) for c in RAW_JSON_COLUMNS]
    assert pl.read_parquet_schema(files_of(archive_export)["history"]) == pl.read_parquet_schema(
        wandb.history_path
    )


def test_aggregate_and_analyze_read_the_export_unchanged(archive_export, tmp_path, capsys):
    unified = tmp_path / "unified.parquet"
    assert aggregate_runs.main([str(archive_export), "-o", str(unified), "--include-history"]) == 0
    merged = pl.read_parquet(unified)
    assert merged.height == len(ARCHIVE_SPECS) + 2 and set(merged["project"]) == {NAME, "other"}
    assert pl.read_parquet(tmp_path / "unified_history.parquet").height == sum(
        json.loads(p.read_text())["history_rows"] for p in archive_export.glob("*_metadata.json")
    )
    capsys.readouterr()
    runs_file = str(files_of(archive_export)["runs"])
    assert analyze_runs.main([runs_file, "--metric", "train_loss", "--top", "3", "--format", "json"]) == 0
    top = json.loads(capsys.readouterr().out)
    finite = sorted(
        (expected_summary(s, finite_only=False)["train/loss"], s.name)
        for s in ARCHIVE_SPECS
        if math.isfinite(expected_summary(s, finite_only=False)["train/loss"])
    )
    assert [row["name"] for row in top] == [name for _, name in finite[:3]]
    assert analyze_runs.main([runs_file, "--group-by", "config_optimizer", "--format", "json"]) == 0
    groups = {row["config_optimizer"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(groups) == {spec.params["optimizer"] for spec in ARCHIVE_SPECS}


# ------------------------------------------------------------------ offline runs


def test_offline_runs_export_what_the_client_logged(offline, tmp_path):
    out = tmp_path / "out"
    assert (
        export_runs.main(["--source", str(offline), "-p", PROJECT, "-o", str(out), "--include-history"]) == 0
    )
    files = files_of(out)
    runs = {row["name"]: row for row in pl.read_parquet(files["runs"]).iter_rows(named=True)}
    assert set(runs) == {spec.name for spec in OFFLINE_SPECS}
    for spec in OFFLINE_SPECS:
        row = runs[spec.name]
        assert row["state"] == ("failed" if spec.failed else "finished")
        assert row["tags"] == sorted(spec.tags) and row["group"] == (
            ",".join(sorted(spec.group_tags)) or None
        )
        assert row["notes"] == (spec.description or None) and row["user"] is None  # no owner offline
        assert row["created_at"] <= row["heartbeat_at"] and row["runtime_s"] >= 0
        assert json.loads(row["_config_json"]) == spec.params
        assert same(json.loads(row["_summary_json"]), expected_summary(spec, finite_only=True))
    assert runs["zeta"]["metric_train_loss"] is None  # the client dropped every NaN/inf point
    columns = pl.read_parquet_schema(files["runs"])
    assert not [c for c in columns if c.startswith(("metric_monitoring", "metric_source_code", "metric_sys"))]
    ids = {row["name"]: row["id"] for row in runs.values()}
    expected = sorted(
        row for spec in OFFLINE_SPECS for row in expected_history(spec, ids[spec.name], finite_only=True)
    )
    assert same(history_rows(files["history"]), expected)
    history = pl.read_parquet(files["history"])
    assert history["timestamp"].null_count() == 0
    created = min(row["created_at"] for row in runs.values())
    assert created <= history["timestamp"].min() <= history["timestamp"].max() <= datetime.now(UTC)
    metadata = json.loads(files["metadata"].read_text())
    assert (metadata["source"], metadata["source_detail"]) == ("neptune", "neptune-offline")
    assert (metadata["runs_reported"], metadata["runs_exported"]) == (len(OFFLINE_SPECS), len(OFFLINE_SPECS))


def test_offline_runs_without_a_project_and_without_history(offline, tmp_path):
    out = tmp_path / "out"
    assert export_runs.main(["--source", str(offline / ".neptune"), "-o", str(out), "--json"]) == 0
    files = files_of(out, "offline", "uncategorized")
    assert pl.read_parquet(files["runs"]).height == len(OFFLINE_SPECS)
    assert not files["history"].exists()
    metadata = json.loads(files["metadata"].read_text())
    assert metadata["history_rows"] is None and metadata["files"]["history"] is None


def test_an_offline_image_series_is_kept_as_media(tmp_path, monkeypatch):
    """Images the real client logged to a FileSeries offline (the log holds each image, base64) are
    history_other `media` rows with the image, its name and description, not dropped."""
    import base64

    import neptune
    from neptune.types import File
    from PIL import Image

    from tests.neptune_fixtures import QUIET

    image = tmp_path / "square.png"
    Image.new("RGB", (2, 2), "red").save(image)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(tmp_path / ".neptune"))
    run = neptune.init_run(project=PROJECT, mode="offline", **QUIET)
    run["samples"].append(File(str(image)), step=3, name="first", description="a red square")
    run["samples"].append(File(str(image)), step=4)
    run.stop()
    out = tmp_path / "out"
    assert (
        export_runs.main(["--source", str(tmp_path / ".neptune"), "-o", str(out), "--include-history"]) == 0
    )
    metadata = json.loads(files_of(out, "offline", "uncategorized")["metadata"].read_text())
    assert metadata["skipped_history_values"] == 0
    other = pl.read_parquet(out / metadata["files"]["history_other"]).sort("step")
    data = base64.b64encode(image.read_bytes()).decode()
    assert other.select("step", "key", "type").rows() == [(3, "samples", "media"), (4, "samples", "media")]
    assert [json.loads(value) for value in other["value"]] == [
        {"_type": "image", "data": data, "name": "first", "description": "a red square"},
        {"_type": "image", "data": data, "name": None, "description": None},
    ]


# ------------------------------------------------------------------ a live server (stand-in client)


@pytest.fixture
def live(monkeypatch):
    """The stand-in client as `neptune`, the token in the environment, local time five hours off UTC."""
    calls = Calls()
    monkeypatch.setitem(sys.modules, "neptune", StandInClient(calls, {"TEST-2": "Active"}))
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "token-for-tests")
    monkeypatch.setenv("TZ", "America/Bogota")
    time.tzset()
    yield calls
    monkeypatch.undo()
    time.tzset()


def test_live_export_reads_the_table_once_and_each_series_once(live, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        export_runs.main(["-p", PROJECT, "-o", str(out), "--include-history", "--workers", "3", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["exported"][0]["runs"] == len(SPECS)
    series = {(f"TEST-{i + 1}", path) for i, spec in enumerate(SPECS) for path in server_view(spec)}
    assert live.tables == 1 and sorted(live.fetched) == sorted(series) and live.stopped == len(SPECS) + 1
    files = files_of(out)
    runs = pl.read_parquet(files["runs"])
    assert runs["state"].to_list() == ["finished", "running", *["finished"] * (len(SPECS) - 2)]
    assert runs["tags"][0].to_list() == ["baseline"] and runs["created_at"][1] == CREATED + timedelta(hours=1)
    for spec, row in zip(SPECS, runs.iter_rows(named=True), strict=True):
        assert json.loads(row["_config_json"]) == spec.params
        assert same(json.loads(row["_summary_json"]), expected_summary(spec, finite_only=True))
    history = pl.read_parquet(files["history"]).sort("run_id", "key", "step")
    expected = sorted(
        row for i, s in enumerate(SPECS) for row in expected_history(s, f"TEST-{i + 1}", finite_only=True)
    )
    assert same(history_rows(files["history"]), expected)
    # The client hands back naive local times; they must come out as the server's UTC instants.
    assert history["timestamp"].to_list() == [point_time(step) for step in history["step"].to_list()]


# A run that logged a string series, console output and hardware monitoring, beside a plain String
# attribute (which the client answers fetch_values on with an AttributeError, as for a Float).
STREAM_SPECS = [
    replace(
        SPECS[0],
        attributes={"notes": "a plain String"},
        series=SPECS[0].series | {"monitoring/abc/cpu": steps(12.5, 30.0), "monitoring/abc/memory": steps(1.5, 1.75)},
        strings={
            "train/phase": [(0.0, "warmup"), (10.0, "train")],
            "monitoring/abc/stdout": [(0.0, "hello"), (1.0, "\n"), (2.0, "two\nlines\n")],
            "monitoring/abc/stderr": [(5.0, "oops\n")],
        },
        images=("eval/samples",),
    ),
    SPECS[1],
]  # fmt: skip


def test_live_export_reads_string_series_console_and_monitoring(live, tmp_path, monkeypatch, capsys):
    """A server's string series go to history_other, `monitoring/*/stdout|stderr` to console lines and the
    `monitoring/` float series to system metrics (with the runs table's summary), each read through the
    client's fetch_values; a plain String attribute is not a series and costs no fetch. An image series,
    which the client only downloads as files, is named in a warning."""
    monkeypatch.setitem(sys.modules, "neptune", StandInClient(live, {}, STREAM_SPECS))
    out = tmp_path / "out"
    streams = ["--include-history", "--include-console", "--include-system-metrics"]
    assert export_runs.main(["-p", PROJECT, "-o", str(out), *streams]) == 0
    metadata = json.loads(files_of(out)["metadata"].read_text())
    assert metadata["skipped_history_values"] == 0
    read = {
        name: pl.read_parquet(out / metadata["files"][name])
        for name in ("history_other", "console", "system")
    }
    assert read["history_other"].select("run_id", "step", "key", "type", "value").sort("step").rows() == [
        ("TEST-1", 0, "train/phase", "string", "warmup"),
        ("TEST-1", 10, "train/phase", "string", "train"),
    ]
    assert read["history_other"]["timestamp"].to_list() == [point_time(0.0), point_time(10.0)]
    assert read["console"].select("run_id", "line", "stream", "text").rows() == [
        ("TEST-1", 0, "stdout", "hello"),
        ("TEST-1", 1, "stdout", "two"),
        ("TEST-1", 2, "stdout", "lines"),
        ("TEST-1", 3, "stderr", "oops"),
    ]
    assert read["system"].select("key", "timestamp", "value").sort("key", "timestamp").rows() == [
        ("monitoring/abc/cpu", point_time(0.0), 12.5),
        ("monitoring/abc/cpu", point_time(10.0), 30.0),
        ("monitoring/abc/memory", point_time(0.0), 1.5),
        ("monitoring/abc/memory", point_time(10.0), 1.75),
    ]
    runs = pl.read_parquet(files_of(out)["runs"])
    assert runs["cpu_mean"].to_list() == [21.25, None] and runs["memory_peak_gb"].to_list() == [1.75, None]
    history = pl.read_parquet(files_of(out)["history"])
    assert set(history["key"]) == set(SPECS[0].series) | set(SPECS[1].series)  # numbers of the run only
    assert ("TEST-1", "notes") not in live.fetched
    warned = capsys.readouterr().err
    assert (
        f"{PROJECT}: image series are not read from a server" in warned and "TEST-1: eval/samples" in warned
    )


def test_live_failures_and_missing_token(live, tmp_path, monkeypatch, capsys):
    live.fail_on = "TEST-3"
    with pytest.raises(Incomplete, match=f"not exported: {PROJECT}"):
        export_runs.main(["-p", PROJECT, "-o", str(tmp_path / "out"), "--include-history"])
    assert "ConnectionError: server went away" in capsys.readouterr().err
    # nothing half-written, and the folder's lock, which every exporter takes, removed as it ended
    assert list((tmp_path / "out").iterdir()) == []
    live.reject_token = True  # bad input for every project: exit 2, not "not exported" (exit 1)
    with pytest.raises(BadInput, match="rejected the API token"):
        export_runs.main(["-p", PROJECT, "-o", str(tmp_path / "out")])
    assert "not exported" not in capsys.readouterr().err
    monkeypatch.delenv("NEPTUNE_API_TOKEN")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("shared.base.settings.TOOLS_ROOT", tmp_path / "no-tools-root")
    with pytest.raises(BadInput, match="no Neptune API token found"):
        export_runs.main(["-p", PROJECT, "-o", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------ bad input


def test_bad_input_is_one_clear_usage_error(archive, offline, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    cases = [
        (["--source", str(tmp_path)], r"neither a neptune-exporter data folder .* nor a \.neptune folder"),
        (["--source", str(tmp_path / "missing")], "does not exist"),
        (
            ["--source", str(archive), "-p", "team/nope"],
            r"'team/nope' is not in .*team/other, team/sae-sweep",
        ),
        (
            ["--source", str(archive / exporter_name("team/other")), "-p", "team/sae-sweep"],
            "holds the runs of project 'team/other', not 'team/sae-sweep'",
        ),
        (["--source", str(offline), "-p", "a/b", "-p", "c/d"], "at most one -p"),
        (["-p", "no-workspace"], "workspace/project"),
        (["--source", str(offline), "-p", "noslash"], "workspace/project, not 'noslash'"),
        (["--source", str(offline), "-p", "a/b/c"], "workspace/project, not 'a/b/c'"),
        (["--source", str(archive), "-p", "team/other,noslash"], "workspace/project, not 'noslash'"),
        (["--source", ""], r"an empty path names nothing"),
        ([], r"name a Neptune project \(-p workspace/project\) or a folder"),
    ]
    for args, message in cases:
        with pytest.raises(BadInput, match=message):
            export_runs.main([*args, "-o", str(out)])
    assert not out.exists()
    with pytest.raises(SystemExit):
        export_runs.main(["--source", str(archive), "--api-token", "abcd"])


def test_an_archive_project_with_a_space_in_its_name_is_picked_by_it(tmp_path):
    write_archive(tmp_path / "data", "team/sae sweep", specs=SPECS[:2])
    write_archive(tmp_path / "data", "team/other", specs=SPECS[:1])
    out = tmp_path / "out"
    assert export_runs.main(["--source", str(tmp_path / "data"), "-p", "team/sae sweep", "-o", str(out)]) == 0
    assert pl.read_parquet(next(out.glob("*_runs.parquet")))["project"].unique().to_list() == ["sae sweep"]


def bad_archive(root: Path, kind: str, layout: str) -> Path:
    """An archive with a BAD_PARTS file: the only file of a project folder (`alone`), or one more part of
    team/other next to a good team/sae-sweep (`among`); returns the bad file."""
    if layout == "alone":
        return write_bad_part(root / "proj" / "x_part_0.parquet", kind)
    write_archive(root, specs=SPECS[:2])
    write_archive(root, "team/other", specs=SPECS[:1])
    return write_bad_part(root / exporter_name("team/other") / "zz_part_0.parquet", kind)


@pytest.mark.parametrize("layout", ["alone", "among"])
@pytest.mark.parametrize("kind", BAD_PARTS)
def test_files_that_are_not_exporter_parts_are_named_and_nothing_is_written(tmp_path, kind, layout):
    root = tmp_path / "data"
    bad = bad_archive(root, kind, layout)
    out = tmp_path / "out"
    with pytest.raises(BadInput, match=bad_part_error(bad, kind)):
        export_runs.main(["--source", str(root), "-o", str(out), "--include-history"])
    assert not out.exists()  # not even the good project's files


@pytest.mark.parametrize("script", ["export_runs.py", "query_topk.py"])
def test_both_scripts_refuse_a_foreign_archive_in_one_line(tmp_path, script):
    bad = bad_archive(tmp_path / "data", "foreign", "alone")
    args = ["--source", "data", "-o", "out"] if script == "export_runs.py" else ["data", "--metric", "loss"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "neptune-tools" / script), *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert re.fullmatch(f"error: {bad_part_error(bad.relative_to(tmp_path), 'foreign')}\n", result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.slow
def test_cli_json_summary_and_one_line_errors(archive, tmp_path):
    script = str(ROOT / "neptune-tools" / "export_runs.py")
    ok = subprocess.run(
        ["uv", "run", script, "--source", str(archive), "-p", "team/other", "-o", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {
        "exported": [{"workspace": "team", "project": "other", "runs": 2, "history_rows": None, "runs_file": "team_other_runs.parquet"}],
        "failed": [],
        "incomplete": [],
    }  # fmt: skip
    bad = subprocess.run(
        ["uv", "run", script, "--source", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:")
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stdout == ""


def test_non_finite_points_and_fractional_steps_in_history(tmp_path):
    """A NaN and an inf point stay in the history as logged; a step of 7.9 becomes 7 and is counted."""
    spec = Spec("nu", {"lr": 1.0}, {"train/loss": [(0.0, NAN), (7.9, INF), (8.0, 0.5)]})
    root = write_archive(tmp_path / "data", "w/p", specs=[spec])
    out = tmp_path / "out"
    assert export_runs.main(["--source", str(root), "-o", str(out), "--include-history"]) == 0
    files = files_of(out, "w", "p")
    assert same(history_rows(files["history"]), [("TEST-1", "train/loss", 0, NAN), ("TEST-1", "train/loss", 7, INF), ("TEST-1", "train/loss", 8, 0.5)])  # fmt: skip
    assert json.loads(files["metadata"].read_text())["fractional_steps_rounded_down"] == 1
    assert pl.read_parquet(files["runs"])["metric_train_loss"].to_list() == [0.5]


def test_a_neptune_run_has_no_git_commit_column_value(archive_export):
    """git_commit is a core column of every export; null for runs without a source_code/git attribute."""
    runs = pl.read_parquet(files_of(archive_export)["runs"])
    assert runs.schema["git_commit"] == pl.String and runs["git_commit"].null_count() == runs.height


def test_a_part_gone_after_listing_fails_its_project_naming_it(tmp_path):
    """A part removed between the listing and the read (another process cleaning up): the project is not
    exported, the part named; no traceback, nothing written."""
    from shared.base.events import Events
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
    from shared.neptune.sources import export_sources

    archive = write_archive(tmp_path / "data")
    events = Events()
    sources = export_sources([], archive, events=events)
    [gone] = (archive / exporter_name(PROJECT)).glob(f"{exporter_name('TEST-2')}_part_0.parquet")
    gone.unlink()
    options = ExportOptions(tmp_path / "out", include_history=True)
    outcome = export_runs([ExportTarget(source, source.key) for source in sources], options, events)
    assert outcome.failures == [PROJECT] and not outcome.results
    assert events.errors == [
        f"{PROJECT} not exported: cannot read archive part {gone}: No such file or directory"
    ]
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_a_run_also_in_an_early_exporters_part_of_several_runs_is_refused_naming_both(tmp_path):
    """An early exporter's part_0.parquet holds every run; TEST-1 also in the current exporter's parts: its
    rows cannot be left out of part_0 alone, so both tools stop naming both files (nothing is mixed)."""
    archive = write_archive(tmp_path / "data", one_file=True)
    write_archive(tmp_path / "newer", specs=SPECS[:1])
    folder = archive / exporter_name(PROJECT)
    newer = f"{exporter_name('TEST-1')}_part_0.parquet"
    (folder / newer).write_bytes((tmp_path / "newer" / exporter_name(PROJECT) / newer).read_bytes())
    message = f"run TEST-1 is in two copies, {newer} and a part of several runs (part_0.parquet)"
    with pytest.raises(BadInput, match=re.escape(message)):
        export_runs.main(["--source", str(archive), "-o", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.parquet"))
