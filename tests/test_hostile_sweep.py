"""A hostile sweep: odd data and faults from the server, hostile file systems, signals, concurrent exports,
hostile offline logs, hostile analysis inputs and secrets in odd places, each held to the README's contract.

Every case runs the scripts as subprocesses of this venv's Python in a folder of its own (a throwaway HOME,
no credentials but its own), a few cases at a time, and is checked for:
- the exit code the contract promises (where the README leaves it open, the case's comment says why);
- no traceback; a non-zero exit's last line is an `error:` line (exit 2 and 3: the only one);
- no `.*.tmp` left in the output folder;
- nothing silently lost: an export's runs files hold every run the server has, or it exits 1 naming them;
- it finished within its timeout (a hang is killed and fails the case).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import sweep_api, sweep_archives, sweep_limits, sweep_local, sweep_readers
from tests.batches import Batches, selected_params
from tests.export_checks import (
    ENTITY,
    assert_same_export,
    cron_dataset,
    export_content,
    new_run,
    utc_now,
)
from tests.sweep import (
    AGGREGATE,
    ALPHA,
    ANALYZE,
    BETA,
    EXPORT,
    FAST,
    INPUTS,
    KEY,
    LIST,
    NEPTUNE_EXPORT,
    SAMPLE_PROJECT,
    WANDB_TOPK,
    Case,
    Mutate,
    Outcome,
    alpha,
    api_export,
    beta,
    check_accounted,
    copied_export,
    finish,
    history_requested,
    history_run,
    hold_history_files,
    last_error_line,
    listed_runs,
    row_of,
    run,
    runs_frame,
    script_run,
    server_env,
    start,
)
from tests.test_bad_input import SAMPLES, closed_port_url, isolated_env
from tests.wandb_standin import HookResult, RequestInfo, StandinDataset, StandinServer


def raw(run_index: int, **fields: Any) -> Mutate:
    """beta's run `run_index` sent with these GraphQL fields as given."""

    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        beta(dataset).runs[run_index].raw_fields = fields

    return mutate


def expect_row(run_index: int, **values: Any) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        run_id = beta(cron_dataset()).runs[run_index].id
        row = row_of(outcome, run_id)
        for name, value in values.items():
            assert row[name] == value, (name, row[name], value)
        assert runs_frame(outcome).height == 5

    return check


BETA_IDS = [run.id for run in cron_dataset().project(ENTITY, "beta").runs]  # type: ignore[union-attr]


# (a) hostile data from the server ---------------------------------------------------------------


def summary_of(run_index: int, summary: dict[str, Any] | None = None, config: Any = None) -> Mutate:
    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        target = beta(dataset).runs[run_index]
        if summary is not None:
            target.summary = summary
        if config is not None:
            target.raw_config = config

    return mutate


HUGE_SUMMARY = {f"metric/{i:05d}": i * 0.5 for i in range(5000)}
TEN_MB = "x" * (10 << 20)
ODD_NAME = "\u202eevil\x00name 😀 \x1b[2J"
ODD_KEYS = {"": 1.0, "/": 2.0, "..": 3.0, " ": float("nan"), "ok": float("-inf")}


def duplicate_across_pages(dataset: StandinDataset, server: StandinServer) -> None:
    """150 runs listed, the 121st the same run as the 6th: the server counts 150, lists 149 distinct."""
    moment = utc_now() - timedelta(days=20)
    runs = [new_run(f"dup{i:05d}", moment + timedelta(minutes=i), steps=1) for i in range(150)]
    for made in runs:
        made.history = None
    runs[120] = runs[5]
    dataset.add_project(ENTITY, "dup", runs, is_team=True)


def check_dup(outcome: Outcome) -> None:
    frame = runs_frame(outcome, "dup")
    assert frame.height == 149 and frame["id"].n_unique() == 149
    assert "error: cron/dup: 1 of 150 runs missing" in outcome.stderr


def check_huge_summary(outcome: Outcome) -> None:
    row = row_of(outcome, BETA_IDS[0])
    assert row["metric_metric_04999"] == 4999 * 0.5


def check_ten_mb(outcome: Outcome) -> None:
    assert row_of(outcome, BETA_IDS[1])["metric_blob"] == TEN_MB


def check_config_list(outcome: Outcome) -> None:
    assert row_of(outcome, BETA_IDS[2])["_config_json"] == "[1, 2, 3]"
    assert "a JSON list, not an object" in outcome.stderr


def check_odd_name(outcome: Outcome) -> None:
    assert row_of(outcome, BETA_IDS[0])["name"] == ODD_NAME
    assert "\x1b" not in outcome.stderr and "\x1b" not in outcome.stdout


def check_odd_keys(outcome: Outcome) -> None:
    row = row_of(outcome, BETA_IDS[3])
    raw_summary = json.loads(row["_summary_json"])
    assert raw_summary[""] == 1.0 and raw_summary[".."] == 3.0 and math.isnan(raw_summary[" "])
    assert row["metric_ok"] == -math.inf
    flat = [value for name, value in row.items() if name.startswith("metric_") and value in (1.0, 2.0, 3.0)]
    assert sorted(flat) == [1.0, 2.0, 3.0], "keys that flatten alike keep their own columns"


def newest_created_at(value: Any) -> Mutate:
    """beta's newest run (the one list_entities asks for) sent with `value` as its createdAt."""

    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        max(beta(dataset).runs, key=lambda run: run.created_at).raw_fields = {"createdAt": value}

    return mutate


def check_listed(outcome: Outcome) -> None:
    (listed,) = json.loads(outcome.stdout)
    projects = {project["project"]: project for project in listed["projects"]}
    assert projects["beta"]["runs"] == 5 and projects["beta"]["last_run"] is None
    assert projects["alpha"]["runs"] == 12 and projects["alpha"]["last_run"] is not None


def check_missing_id(outcome: Outcome) -> None:
    assert runs_frame(outcome).height == 4
    assert "error: cron/beta: 1 of 5 runs missing" in outcome.stderr


# (b) a misbehaving server -----------------------------------------------------------------------


def on_files_of(
    pick: Callable[[StandinDataset], Any], answer: Callable[[StandinServer, Any], HookResult]
) -> Mutate:
    """Every history file request of the picked run is answered by `answer`."""

    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        target = pick(dataset)

        def hook(request: RequestInfo) -> HookResult | None:
            if request.operation is None and f"/{target.id}/" in request.path:
                return answer(server, target)
            return None

        server.request_hook = hook

    return mutate


def parquet_of(frame: pl.DataFrame) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(frame.to_arrow(), sink)
    return sink.getvalue().to_pybytes()


FLOAT_STEP = parquet_of(
    pl.DataFrame({"_step": [0.0, 1.0], "_timestamp": [1.7e9, 1.7e9 + 1], "loss": [1.0, 0.5]})
)
TEXT_TIME = parquet_of(pl.DataFrame({"_step": [0, 1], "_timestamp": ["noon", "later"], "loss": [1.0, 0.5]}))
HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def truncated_file(server: StandinServer, target: Any) -> HookResult:
    data = server.parquet_bytes(target, 0) or b""
    return HookResult(status=200, body=data[: len(data) // 2])


def history_missing(pick: Callable[[StandinDataset], Any], reason: str = "") -> Callable[[Outcome], None]:
    """Only the picked run's history is missing (named); every run and the others' history are there."""

    def check(outcome: Outcome) -> None:
        dataset = cron_dataset()
        bad = pick(dataset)
        assert f"error: cron/alpha: history of 1 run(s) missing ({bad.id})" in outcome.stderr
        assert reason in outcome.stderr
        assert runs_frame(outcome, "alpha").height == 12
        history = pl.read_parquet(outcome.folder / "out" / f"{ENTITY}_alpha_history.parquet")
        with_history = {run.id for run in alpha(dataset).runs if run.history is not None}
        assert set(history["run_id"].unique()) == with_history - {bad.id}

    return check


def on_operation(operation: str, answer: HookResult, times: int | None = None) -> Mutate:
    """GraphQL `operation` answered with `answer` (the first `times` requests, or all)."""

    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        count = [0]
        lock = threading.Lock()

        def hook(request: RequestInfo) -> HookResult | None:
            if request.operation != operation:
                return None
            with lock:
                count[0] += 1
                if times is not None and count[0] > times:
                    return None
            return answer

        server.request_hook = hook

    return mutate


def latency(seconds: float) -> Mutate:
    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        server.latency_s = seconds

    return mutate


def count_low(dataset: StandinDataset, server: StandinServer) -> None:
    server.runs_count_extra = -3


def all_beta(outcome: Outcome) -> None:
    assert sorted(runs_frame(outcome)["id"]) == sorted(BETA_IDS)


def took_under(seconds: float) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        assert outcome.seconds < seconds, f"took {outcome.seconds:.0f} s"

    return check


# (c) disk and file system -----------------------------------------------------------------------


def make_read_only(folder: Path) -> None:
    (folder / "ro").mkdir()
    (folder / "ro").chmod(0o555)


def file_at(name: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / name).write_text("a file, not a folder\n")

    return setup


def fifo_at(name: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / "out").mkdir(exist_ok=True)
        os.mkfifo(folder / "out" / name)

    return setup


def stale_temp_files(folder: Path) -> None:
    out = folder / "out"
    out.mkdir()
    for name in (".cron_beta_runs.parquet.k2j3h4g5.tmp", ".cron_beta_metadata.json.a1b2c3d4.tmp"):
        (out / name).write_bytes(b"half written by an export that died")
    (out / ".export.lock").write_text("")  # released (or never recorded): no holder to take over from


def symlinked_output(folder: Path) -> None:
    (folder / "real").mkdir()
    (folder / "out").symlink_to(folder / "real")


UNICODE_OUT = "ü dir/with space/out"


def check_unicode_out(outcome: Outcome) -> None:
    assert pl.read_parquet(outcome.folder / UNICODE_OUT / f"{ENTITY}_beta_runs.parquet").height == 5


def check_symlinked_out(outcome: Outcome) -> None:
    assert pl.read_parquet(outcome.folder / "real" / f"{ENTITY}_beta_runs.parquet").height == 5


def nothing_written(out: str = "out") -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        folder = outcome.folder / out
        held = (
            [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
            if folder.is_dir()
            else []
        )
        assert all(not name.endswith((".parquet", ".json")) for name in held), held

    return check


def disk_full(outcome: Outcome) -> None:
    assert "error: cron/alpha not exported: cannot write out/cron_alpha_history.parquet" in outcome.stderr
    assert "File too large" in outcome.stderr
    nothing_written()(outcome)


def incremental_after(damage: Callable[[Path], None]) -> Callable[[Path], Outcome]:
    """An --incremental export of alpha, its files damaged by `damage(out)`, then the same export again:
    the damaged files are replaced by a full export (README: a file missing or unreadable)."""
    argv = ["-e", ENTITY, "-p", "alpha", "--include-history", "--incremental", "-o", "out"]

    def scenario(folder: Path) -> Outcome:
        dataset = cron_dataset()
        with StandinServer(dataset) as server:
            env = server_env(folder, server)
            first = run(EXPORT, argv, folder, env)
            assert first.code == 0, first.stderr
            damage(folder / "out")
            outcome = run(EXPORT, argv, folder, env)
        outcome.server_runs = listed_runs(dataset)
        return outcome

    return scenario


def older_runs_file_put_back(folder: Path) -> Outcome:
    """A runs file restored from before the latest incremental export (a backup put back): it lacks a run
    the export state records, so the next incremental export must not trust it."""
    argv = ["-e", ENTITY, "-p", "beta", "--incremental", "-o", "out"]
    dataset = cron_dataset()
    with StandinServer(dataset) as server:
        env = server_env(folder, server)
        assert run(EXPORT, argv, folder, env).code == 0
        runs = folder / "out" / f"{ENTITY}_beta_runs.parquet"
        older = runs.read_bytes()
        beta(dataset).runs.append(new_run("late0002", utc_now() - timedelta(minutes=1)))
        server.clear_cache()
        assert run(EXPORT, argv, folder, env).code == 0
        runs.write_bytes(older)
        outcome = run(EXPORT, argv, folder, env)
    outcome.server_runs = listed_runs(dataset)
    return outcome


def foreign_parquet(kind: str) -> Callable[[Path], None]:
    def damage(out: Path) -> None:
        pl.DataFrame({"a": [1, 2], "b": ["x", "y"]}).write_parquet(out / f"{ENTITY}_alpha_{kind}.parquet")

    return damage


def check_alpha_whole(outcome: Outcome) -> None:
    assert runs_frame(outcome, "alpha").height == 12
    history = pl.read_parquet(outcome.folder / "out" / f"{ENTITY}_alpha_history.parquet")
    assert history.columns == ["run_id", "step", "timestamp", "key", "value"] and history.height > 0


def neptune_archive_with_fifo(name: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        from tests.neptune_fixtures import write_archive

        write_archive(folder / "archive")
        (folder / "out").mkdir()
        os.mkfifo(folder / "out" / name)

    return setup


# (d) signals and concurrency --------------------------------------------------------------------


def interrupted_then_resumed(signum: int, *, twice: bool = False) -> Callable[[Path], Outcome]:
    """beta then alpha (with history, answered slowly): a signal during alpha's downloads; the same
    command again resumes (beta is not fetched again), and the files equal a clean export's."""
    argv = ["-e", ENTITY, "-p", "beta,alpha", "--include-history", "-o", "out"]

    def scenario(folder: Path) -> Outcome:
        dataset = cron_dataset()
        with StandinServer(dataset) as server:
            env = server_env(folder, server)
            clean = run(EXPORT, [*argv[:-1], "clean"], folder, env)
            assert clean.code == 0, clean.stderr
            requested = hold_history_files(server, HookResult(delay_s=1.0))
            began = time.monotonic()
            child = start(EXPORT, argv, folder, env)
            history_requested(requested, child)
            time.sleep(0.3)
            child.send_signal(signum)
            if twice:
                time.sleep(0.1)
                child.send_signal(signum)
            first = finish(child, folder, 60, began)
            if twice and first.code == -signum:  # the second signal ended the exit hooks: to a shell,
                first.code = 128 + signum  # as to cron, that is the same status
            server.request_hook = None
            again = run(EXPORT, argv, folder, env)
        first.server_runs = listed_runs(dataset)
        first.extra = {"again": again, "clean": folder / "clean"}
        return first

    return scenario


def check_resumed(outcome: Outcome) -> None:
    again: Outcome = outcome.extra["again"]
    assert again.code == 0 and "Traceback" not in again.stderr, again.stderr
    assert "resuming the export started" in again.stderr and "1 project(s) it completed" in again.stderr
    assert_same_export(export_content(outcome.folder / "out"), export_content(outcome.extra["clean"]))
    assert not list((outcome.folder / "out").glob(".*.tmp"))


def check_interrupted(status: int, name: str) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: interrupted ({name})"], outcome.stderr
        check_resumed(outcome)

    return check


def two_exports_at_once(folder: Path) -> Outcome:
    """While one export holds the folder (its history answered slowly), a second one into it exits 3."""
    dataset = cron_dataset()
    argv = list(ALPHA)
    with StandinServer(dataset) as server:
        env = server_env(folder, server)
        release = threading.Event()
        requested = hold_history_files(server, HookResult(delay_s=0.0), release)
        began = time.monotonic()
        first = start(EXPORT, argv, folder, env)
        try:
            history_requested(requested, first)
            second = run(EXPORT, argv, folder, env, timeout=60)
        finally:
            release.set()
        holder = finish(first, folder, 120, began)
    second.server_runs = listed_runs(dataset)
    second.extra = {"first": holder, "pid": first.pid}
    return second


def check_two_exports(outcome: Outcome) -> None:
    holder: Outcome = outcome.extra["first"]
    assert holder.code == 0, holder.stderr
    assert f"(PID {outcome.extra['pid']} on" in outcome.stderr
    assert runs_frame(holder, "alpha").height == 12
    assert outcome.stdout == ""


def incremental_interrupted(folder: Path) -> Outcome:
    """An --incremental export cut off by SIGTERM while it downloads a new run's history; run again, its
    files equal those of a full export."""
    dataset = cron_dataset()
    argv = ["-e", ENTITY, "-p", "alpha", "--include-history", "--incremental", "-o", "out"]
    with StandinServer(dataset) as server:
        env = server_env(folder, server)
        assert run(EXPORT, argv, folder, env).code == 0
        alpha(dataset).runs.append(new_run("late0001", utc_now() - timedelta(minutes=1)))
        server.clear_cache()
        requested = hold_history_files(server, HookResult(delay_s=2.0))
        began = time.monotonic()
        child = start(EXPORT, argv, folder, env)
        history_requested(requested, child)
        time.sleep(0.2)
        child.send_signal(signal.SIGTERM)
        first = finish(child, folder, 60, began)
        server.request_hook = None
        again = run(EXPORT, argv, folder, env)
        full = run(EXPORT, [*argv[:-2], "-o", "clean"], folder, env)
    first.server_runs = listed_runs(dataset)
    first.extra = {"again": again, "full": full}
    return first


def signal_during_stall(operation: str, signum: int) -> Callable[[Path], Outcome]:
    """A signal while `operation` stalls (answered 40 s late, --timeout 60): the export stops at once."""

    def scenario(folder: Path) -> Outcome:
        dataset = cron_dataset()
        with StandinServer(dataset) as server:
            stalled = threading.Event()

            def hook(request: RequestInfo) -> HookResult | None:
                if request.operation == operation:
                    stalled.set()
                    return HookResult(delay_s=40)
                return None

            server.request_hook = hook
            began = time.monotonic()
            child = start(EXPORT, [*BETA, "--timeout", "60"], folder, server_env(folder, server))
            if not stalled.wait(60):
                os.killpg(child.pid, signal.SIGKILL)
                raise AssertionError(f"no {operation} request")
            time.sleep(0.5)
            signalled = time.monotonic()
            child.send_signal(signum)
            outcome = finish(child, folder, 60, began)
            outcome.extra["after_signal"] = time.monotonic() - signalled
        outcome.server_runs = listed_runs(dataset)
        return outcome

    return scenario


def sigterm_while_downloads_retry(folder: Path) -> Outcome:
    """SIGTERM while every history file fails (HTTP 503) and downloads are being retried."""
    dataset = cron_dataset()
    with StandinServer(dataset) as server:
        requested = hold_history_files(server, HookResult(status=503))
        began = time.monotonic()
        argv = [*ALPHA, "--max-retry-time", "25"]
        child = start(EXPORT, argv, folder, server_env(folder, server))
        history_requested(requested, child)
        time.sleep(2)
        signalled = time.monotonic()
        child.send_signal(signal.SIGTERM)
        outcome = finish(child, folder, 60, began)
        outcome.extra["after_signal"] = time.monotonic() - signalled
    outcome.server_runs = listed_runs(dataset)
    return outcome


def stopped_within(seconds: float) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        assert outcome.extra["after_signal"] < seconds, f"took {outcome.extra['after_signal']:.0f} s"
        nothing_written()(outcome)

    return check


def check_incremental_interrupted(outcome: Outcome) -> None:
    again, full = outcome.extra["again"], outcome.extra["full"]
    assert again.code == 0 and full.code == 0, (again.stderr, full.stderr)
    got, want = export_content(outcome.folder / "out"), export_content(outcome.folder / "clean")
    for name in list(got):  # the states differ in their options (--incremental): compare their runs
        if name.endswith("_state.json"):
            assert got[name]["runs"] == want[name]["runs"]
            del got[name], want[name]
    assert_same_export(got, want)
    assert "late0001" in runs_frame(outcome, "alpha")["id"].to_list()


# (e) hostile offline inputs ---------------------------------------------------------------------

GOOD_LOGS = sorted(SAMPLES.glob("*/run-*.wandb"))[:3]


def offline_folder(bad: Callable[[Path], None]) -> Callable[[Path], None]:
    """wandb/ with three good sample runs and one run folder whose run-bad.wandb is `bad`."""

    def setup(folder: Path) -> None:
        wandb = folder / "wandb"
        for log in GOOD_LOGS:
            (wandb / log.parent.name).mkdir(parents=True)
            (wandb / log.parent.name / log.name).write_bytes(log.read_bytes())
        (wandb / "offline-run-20260101_000000-bad").mkdir()
        bad(wandb / "offline-run-20260101_000000-bad" / "run-bad.wandb")

    return setup


def symlink_loop(path: Path) -> None:
    path.symlink_to(path.name)


def zero_length(path: Path) -> None:
    path.write_bytes(b"")


def no_permission(path: Path) -> None:
    path.write_bytes(GOOD_LOGS[0].read_bytes())
    path.chmod(0)


def huge_garbage(path: Path) -> None:
    with path.open("wb") as stream:
        stream.write(b"GARBAGE!" * 4096)
        stream.truncate(2 << 30)  # 2 GiB, sparse


def to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def check_three_good(outcome: Outcome) -> None:
    (runs,) = [pl.read_parquet(p) for p in (outcome.folder / "out").glob("*_runs.parquet")]
    assert runs.height == 3
    assert "run-bad.wandb" in last_error_line(outcome) or "run-bad.wandb" in outcome.stderr


def offline_case(id: str, bad: Callable[[Path], None], *, limit: str | None = None, **kw: Any) -> Case:
    """One bad entry among good logs: the others are exported, the bad one named, exit 1 (README: a bad
    file among many must not stop a nightly export, nor vanish silently)."""
    return Case(id, "e", script_run(EXPORT, ("--offline", "wandb", "-o", "out"), offline_folder(bad), timeout=60,
                                     limit=limit), 1, "not exported", check=check_three_good, **kw)  # fmt: skip


def huge_garbage_alone(folder: Path) -> None:
    huge_garbage(folder / "run-x.wandb")


# (f) hostile analysis, aggregate and query inputs -----------------------------------------------


def both(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """The sample export as `good/`, and a copy of it changed as `export/`."""

    def setup(folder: Path) -> None:
        copied_export(lambda export: None)(folder)
        (folder / "export").rename(folder / "good")
        copied_export(change)(folder)

    return setup


def runs_file(export: Path) -> Path:
    return export / f"{SAMPLE_PROJECT}_runs.parquet"


def retype_columns(export: Path) -> None:
    frame = pl.read_parquet(runs_file(export))
    frame = frame.with_columns(pl.int_range(pl.len()).alias("id"), pl.col("created_at").cast(pl.String))
    frame.write_parquet(runs_file(export))


def no_rows(export: Path) -> None:
    pl.read_parquet(runs_file(export)).head(0).write_parquet(runs_file(export))


def doubled(export: Path) -> None:
    frame = pl.read_parquet(runs_file(export))
    pl.concat([frame, frame]).write_parquet(runs_file(export))


def metadata_list(export: Path) -> None:
    (export / f"{SAMPLE_PROJECT}_metadata.json").write_text("[]\n")


def foreign_history(export: Path) -> None:
    pl.DataFrame({"a": [1, 2], "b": ["x", "y"]}).write_parquet(export / f"{SAMPLE_PROJECT}_history.parquet")


FORGED = "\x1b[2Jevil\nerror: forged\r"


def control_names(export: Path) -> None:
    frame = pl.read_parquet(runs_file(export))
    frame.with_columns(pl.lit(FORGED).alias("name")).write_parquet(runs_file(export))


def check_no_forged_line(outcome: Outcome) -> None:
    for text in (outcome.stdout, outcome.stderr):
        assert "\x1b" not in text and "\r" not in text
        assert not any(line.startswith("error: forged") for line in text.splitlines())


def check_aggregated(rows: int) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        assert pl.read_parquet(outcome.folder / "out" / "all.parquet").height == rows

    return check


# (g) secrets ------------------------------------------------------------------------------------


def no_key_anywhere_but(*allowed: str) -> Callable[[Outcome], None]:
    """KEY is in no output, log or file but the runs files' data columns named in `allowed`."""

    def check(outcome: Outcome) -> None:
        assert KEY not in outcome.stdout and KEY not in outcome.stderr
        for path in outcome.folder.rglob("*"):
            if not path.is_file() or path.name == ".env" or "home" in path.relative_to(outcome.folder).parts:
                continue
            if path.name.endswith("_runs.parquet"):
                frame = pl.read_parquet(path)
                for column in frame.columns:
                    if column not in allowed and frame[column].dtype == pl.String:
                        assert not frame[column].str.contains(KEY, literal=True).any(), column
            else:
                assert KEY.encode() not in path.read_bytes(), path

    return check


FIFO = "<a named pipe>"


def key_server(mutate: Mutate | None = None, *, url_user: bool = False, dotenv: str | None = None,
               argv: tuple[str, ...] = BETA, timeout: float = 90) -> Callable[[Path], Outcome]:  # fmt: skip
    """An export from a stand-in that accepts KEY: the key in the environment, in the URL or in a .env."""

    def scenario(folder: Path) -> Outcome:
        dataset = cron_dataset()
        with StandinServer(dataset, api_key=KEY) as server:
            if mutate:
                mutate(dataset, server)
            env = server_env(folder, server)
            if url_user:
                env["WANDB_BASE_URL"] = server.url.replace("http://", f"http://{KEY}@")
            if dotenv is FIFO:
                del env["WANDB_API_KEY"]
                os.mkfifo(folder / ".env")
            elif dotenv is not None:
                del env["WANDB_API_KEY"]
                (folder / ".env").write_bytes(dotenv.replace("{key}", KEY).encode())
            outcome = run(EXPORT, argv, folder, env, timeout=timeout)
        outcome.server_runs = listed_runs(dataset)
        return outcome

    return scenario


def key_as(field_name: str) -> Mutate:
    def mutate(dataset: StandinDataset, server: StandinServer) -> None:
        target = beta(dataset).runs[0]
        if field_name == "name":
            target.display_name = KEY
        else:
            target.config = {**target.config, "token": KEY}
            target.summary = {**target.summary, "note": f"key={KEY}"}

    return mutate


def check_key_kept(column: str, value: str) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        assert row_of(outcome, BETA_IDS[0])[column] == value
        no_key_anywhere_but(column, "_config_json", "_summary_json", "metric_note")(outcome)

    return check


def unreachable_with_key_in_url(folder: Path) -> Outcome:
    env = isolated_env(folder / "home") | {
        "WANDB_BASE_URL": closed_port_url().replace("http://", f"http://{KEY}@"),
        "WANDB_API_KEY": KEY,
    }
    return run(LIST, ["--timeout", "2"], folder, env, timeout=90)


# ------------------------------------------------------------------ the corpus

CASES = [
    # (a) hostile data from the server: each odd field costs at most that field, never the project
    Case("a-tags-a-string", "a", api_export(BETA, raw(0, tags="baseline")), 0,
         check=expect_row(0, tags=["baseline"])),  # one tag sent bare is that tag, not no tags
    Case("a-tags-mixed-types", "a", api_export(BETA, raw(1, tags=["a", 7, None])), 0,
         check=expect_row(1, tags=["a", "7"])),  # null is no tag
    Case("a-created-at-garbage", "a", api_export(BETA, raw(2, createdAt="last tuesday")), 0, "createdAt",
         check=expect_row(2, created_at=None)),  # a warning names it; the run is exported
    Case("a-heartbeat-a-number", "a", api_export(BETA, raw(3, heartbeatAt=1700000000)), 0, "heartbeatAt",
         check=expect_row(3, heartbeat_at=None)),
    Case("a-null-display-name", "a", api_export(BETA, raw(4, displayName=None)), 0,
         check=expect_row(4, name=None)),
    Case("a-display-name-a-number", "a", api_export(BETA, raw(0, displayName=12345)), 0,
         check=expect_row(0, name="12345")),
    Case("a-state-and-group-objects", "a", api_export(BETA, raw(1, state={"x": 1}, group=["g"], notes=3.5)), 0,
         check=expect_row(1, notes="3.5")),
    Case("a-run-without-id", "a", api_export(BETA, raw(2, name=None)), 1, "runs missing from: cron/beta",
         check=check_missing_id),
    Case("a-huge-summary-5000-keys", "a", api_export(BETA, summary_of(0, HUGE_SUMMARY)), 0,
         check=check_huge_summary),
    Case("a-summary-10mb-string", "a", api_export(BETA, summary_of(1, {"blob": TEN_MB}), timeout=120), 0,
         check=check_ten_mb),
    Case("a-config-a-json-list", "a", api_export(BETA, summary_of(2, config="[1, 2, 3]")), 0,
         check=check_config_list),
    Case("a-summary-keys-empty-and-separators", "a", api_export(BETA, summary_of(3, ODD_KEYS)), 0,
         check=check_odd_keys),
    Case("a-unicode-nul-escape-name", "a", api_export(BETA, raw(0, displayName=ODD_NAME)), 0,
         check=check_odd_name),
    Case("a-list-entities-newest-run-created-at-garbage", "a",
         api_export(("-e", ENTITY, "--json"), newest_created_at("soon"), script=LIST), 0, check=check_listed),
    Case("a-duplicate-run-across-pages", "a",
         api_export(("-e", ENTITY, "-p", "dup", "-o", "out"), duplicate_across_pages), 1,
         "runs missing from: cron/dup", check=check_dup),  # listed 149 of the 150 it counts
    # (b) a misbehaving server
    Case("b-500-on-every-history-file-of-one-run", "b",
         api_export((*ALPHA, *FAST), on_files_of(history_run, lambda s, r: HookResult(status=500)), timeout=120),
         1, "runs missing from: cron/alpha", check=history_missing(history_run, "too many 500 error responses")),
    Case("b-truncated-parquet", "b", api_export((*ALPHA, *FAST), on_files_of(history_run, truncated_file)),
         1, "runs missing from: cron/alpha", check=history_missing(history_run, "not whole parquet")),
    Case("b-parquet-float-step", "b",
         api_export((*ALPHA, *FAST), on_files_of(history_run, lambda s, r: HookResult(status=200, body=FLOAT_STEP))),
         1, "runs missing from: cron/alpha", check=history_missing(history_run, "_step of type double")),
    Case("b-parquet-text-timestamp", "b",
         api_export((*ALPHA, *FAST), on_files_of(history_run, lambda s, r: HookResult(status=200, body=TEXT_TIME))),
         1, "runs missing from: cron/alpha", check=history_missing(history_run, "_timestamp")),
    Case("b-html-200-for-a-history-file", "b",
         api_export((*ALPHA, *FAST), on_files_of(history_run, lambda s, r: HookResult(status=200, body=HTML))),
         1, "runs missing from: cron/alpha", check=history_missing(history_run)),
    Case("b-html-200-on-runs-once", "b", api_export((*BETA, *FAST), on_operation("Runs", HookResult(body=HTML), 1)),
         0, check=all_beta),
    Case("b-html-200-on-runs-always", "b", api_export((*BETA, *FAST), on_operation("Runs", HookResult(body=HTML))),
         1, "not exported: cron/beta", check=took_under(60)),
    # The login check answered with an error is the server's fault, not the key's: exit 1, not 2.
    Case("b-500-on-login", "b", api_export((*BETA, "--timeout", "30"), on_operation("Viewer", HookResult(status=500))), 1,
         "W&B server", check=nothing_written()),
    Case("b-html-200-on-login", "b", api_export((*BETA, *FAST), on_operation("Viewer", HookResult(body=HTML))), 2,
         "no W&B API at", check=nothing_written()),  # a web page where the API should be: a wrong URL
    Case("b-slow-but-within-timeout", "b", api_export((*BETA, "--timeout", "3"), latency(1.0)), 0, check=all_beta),
    Case("b-runs-stall-past-timeout", "b",
         api_export((*BETA, "--timeout", "1", "--max-retry-time", "3"), on_operation("Runs", HookResult(delay_s=4))),
         1, "not exported: cron/beta", check=took_under(75)),
    Case("b-runs-connection-dropped-always", "b",
         api_export((*BETA, *FAST), on_operation("Runs", HookResult(drop=True))), 1, "not exported: cron/beta"),
    Case("b-runs-connection-dropped-twice", "b",
         api_export((*BETA, *FAST), on_operation("Runs", HookResult(drop=True), 2)), 0, check=all_beta),
    Case("b-run-count-lies-low", "b", api_export(BETA, count_low), 0, check=all_beta),
    Case("b-retry-after-an-hour", "b",
         api_export((*BETA, "--max-retry-time", "5", "--timeout", "3"),
                    on_operation("Runs", HookResult(status=429, headers={"Retry-After": "3600"}))),
         1, "not exported: cron/beta", check=took_under(75)),
    Case("b-404-on-a-history-file", "b",
         api_export((*ALPHA, *FAST), on_files_of(history_run, lambda s, r: HookResult(status=404))), 1,
         "runs missing from: cron/alpha", check=history_missing(history_run, "HTTP 404")),
    # (c) disk and file system
    Case("c-read-only-output-api", "c", api_export((*BETA[:-1], "ro"), setup=make_read_only, limit="read-only"), 2,
         "output folder ro is not writable", out="ro"),
    Case("c-output-is-a-file-api", "c", api_export(BETA, setup=file_at("out")), 2,
         "cannot create output folder out"),
    Case("c-output-parent-is-a-file", "c", api_export((*BETA[:-1], "f/out"), setup=file_at("f")), 2,
         "cannot create output folder f/out"),
    Case("c-fifo-at-runs-path", "c", api_export(BETA, setup=fifo_at(f"{ENTITY}_beta_runs.parquet"), timeout=60), 2,
         "not a regular file"),
    Case("c-fifo-at-metadata-path", "c",
         api_export(BETA, setup=fifo_at(f"{ENTITY}_beta_metadata.json"), timeout=60), 2, "not a regular file"),
    Case("c-fifo-at-state-path-incremental", "c",
         api_export((*BETA, "--incremental"), setup=fifo_at(f"{ENTITY}_beta_state.json"), timeout=60), 2,
         "not a regular file"),
    Case("c-neptune-fifo-at-metadata-path", "c",
         script_run(NEPTUNE_EXPORT, ("--source", "archive", "-o", "out"),
                    neptune_archive_with_fifo("team_sae-sweep_metadata.json"), timeout=60), 2, "not a regular file"),
    Case("c-unicode-and-spaces-in-output-path", "c", api_export((*BETA[:-1], UNICODE_OUT)), 0,
         check=check_unicode_out, out=UNICODE_OUT),
    Case("c-stale-temp-files-removed", "c", api_export(BETA, setup=stale_temp_files), 0, check=all_beta),
    Case("c-output-folder-is-a-symlink", "c", api_export(BETA, setup=symlinked_output), 0, check=check_symlinked_out),
    # Cron keeps running into a folder whose files someone replaced: the next export repairs them.
    Case("c-incremental-runs-file-replaced-by-foreign-parquet", "c", incremental_after(foreign_parquet("runs")), 0,
         "full export", check=check_alpha_whole),
    Case("c-incremental-history-file-replaced-by-foreign-parquet", "c",
         incremental_after(foreign_parquet("history")), 0, "full export", check=check_alpha_whole),
    Case("c-incremental-older-runs-file-put-back", "c", older_runs_file_put_back, 0, "full export",
         check=lambda outcome: runs_frame(outcome).height == 6 or pytest.fail("late0002 lost")),
    Case("c-full-disk-api", "c", api_export((*ALPHA, *FAST), limit="full-disk"), 1, "not exported: cron/alpha",
         check=disk_full),
    # (d) signals and concurrency
    Case("d-two-exports-into-one-folder", "d", two_exports_at_once, 3, "is in use by another export",
         check=check_two_exports),
    Case("d-sigterm-during-history-then-resume", "d", interrupted_then_resumed(signal.SIGTERM), 143,
         "interrupted (SIGTERM)", check=check_interrupted(143, "SIGTERM")),
    Case("d-sigint-during-history-then-resume", "d", interrupted_then_resumed(signal.SIGINT), 130,
         "interrupted (SIGINT)", check=check_interrupted(130, "SIGINT")),
    Case("d-sigterm-twice-during-history", "d", interrupted_then_resumed(signal.SIGTERM, twice=True), 143,
         "interrupted (SIGTERM)", check=check_interrupted(143, "SIGTERM")),
    # The main thread waits in the client for a stalled answer: the signal must not wait for it.
    Case("d-sigterm-while-a-page-of-runs-stalls", "d", signal_during_stall("Runs", signal.SIGTERM), 143,
         "interrupted (SIGTERM)", check=stopped_within(25)),
    Case("d-sigint-while-the-login-check-stalls", "d", signal_during_stall("Viewer", signal.SIGINT), 130,
         "interrupted (SIGINT)", check=stopped_within(25)),
    # Retrying workers must neither hold the exit up nor write after the error line.
    Case("d-sigterm-while-history-downloads-retry", "d", sigterm_while_downloads_retry, 143,
         "interrupted (SIGTERM)", check=stopped_within(30)),
    Case("d-sigterm-during-incremental-then-rerun", "d", incremental_interrupted, 143, "interrupted (SIGTERM)",
         check=check_incremental_interrupted),
    # (e) hostile offline inputs: one bad entry among three good logs
    offline_case("e-symlink-loop-log", symlink_loop),
    offline_case("e-directory-named-like-a-log", lambda path: path.mkdir()),
    offline_case("e-zero-length-log", zero_length),
    offline_case("e-log-without-permission", no_permission, limit="read-only"),
    offline_case("e-huge-sparse-garbage-log", huge_garbage),
    offline_case("e-fifo-named-like-a-log", lambda path: os.mkfifo(path)),
    offline_case("e-log-linked-to-dev-zero", to_dev_zero),
    Case("e-huge-sparse-garbage-log-alone", "e",
         script_run(EXPORT, ("--offline", "run-x.wandb", "-o", "out"), huge_garbage_alone, timeout=60), 2,
         "not a W&B run log", check=took_under(30)),
    # (f) hostile analysis, aggregate and query inputs (the sample export, changed)
    # A runs file whose id is a number and created_at text: analyze ranks it as it is (nothing to lose);
    # aggregated with a good export, those columns are kept as text, with a warning naming them.
    Case("f-analyze-wrong-column-types", "f", script_run(ANALYZE, ("export",), copied_export(retype_columns)), 0),
    Case("f-aggregate-wrong-column-types-with-a-good-export", "f",
         script_run(AGGREGATE, ("export", "good", "-o", "out/all.parquet"), both(retype_columns)), 0,
         "irreconcilable types", check=check_aggregated(26)),
    Case("f-analyze-zero-rows", "f", script_run(ANALYZE, ("export",), copied_export(no_rows)), 0),
    Case("f-aggregate-zero-rows", "f",
         script_run(AGGREGATE, ("export", "-o", "out/all.parquet"), copied_export(no_rows)), 0,
         check=check_aggregated(0)),
    Case("f-query-zero-rows", "f",
         script_run(WANDB_TOPK, ("--export", "export", "--metric", "test/mse"), copied_export(no_rows)), 0),
    Case("f-aggregate-duplicate-ids", "f",
         script_run(AGGREGATE, ("export", "-o", "out/all.parquet"), copied_export(doubled)), 0,
         check=check_aggregated(13)),
    # analyze reads the runs files; metadata it does not need is no reason to stop (a deep one is: test_hostile_analysis)
    Case("f-analyze-metadata-a-list", "f", script_run(ANALYZE, ("export",), copied_export(metadata_list)), 0),
    Case("f-aggregate-metadata-a-list", "f",
         script_run(AGGREGATE, ("export", "-o", "out/all.parquet"), copied_export(metadata_list)), 0,
         check=check_aggregated(13)),
    Case("f-query-mean-all-foreign-history", "f",
         script_run(WANDB_TOPK, ("--export", "export", "--metric", "test/mse", "--aggregation", "mean_all"),
                    copied_export(foreign_history)), 2, "history"),
    Case("f-analyze-control-characters-in-names", "f",
         script_run(ANALYZE, ("export", "--top", "3"), copied_export(control_names)), 0, check=check_no_forged_line),
    # (g) secrets
    Case("g-key-as-url-username-unreachable", "g", unreachable_with_key_in_url, 1, "did not answer",
         check=no_key_anywhere_but()),
    Case("g-key-as-url-username-export", "g", key_server(url_user=True), 0, check=no_key_anywhere_but()),
    Case("g-key-as-run-name", "g", key_server(key_as("name")), 0, check=check_key_kept("name", KEY)),
    Case("g-key-in-config-and-summary", "g", key_server(key_as("config")), 0,
         check=check_key_kept("config_token", KEY)),
    Case("g-dotenv-export-double-quotes-comment", "g",
         key_server(dotenv='export WANDB_API_KEY="{key}"  # the team key\n'), 0, check=no_key_anywhere_but()),
    Case("g-dotenv-single-quotes-crlf", "g", key_server(dotenv="# keys\r\nWANDB_API_KEY='{key}'\r\n"), 0,
         check=no_key_anywhere_but()),
    Case("g-dotenv-spaces-around-equals", "g", key_server(dotenv="WANDB_API_KEY = {key} \n"), 0,
         check=no_key_anywhere_but()),
    # A .env that is a named pipe nobody writes is skipped after a wait (it hung forever): no key found.
    Case("g-dotenv-a-named-pipe", "g", key_server(dotenv=FIFO, timeout=30), 2, "no W&B API key found"),
    Case("g-dotenv-byte-order-mark", "g", key_server(dotenv="\ufeffWANDB_API_KEY={key}\n"), 0,
         check=no_key_anywhere_but()),
]  # fmt: skip
CASES += [
    *sweep_local.CASES,
    *sweep_archives.CASES,
    *sweep_api.CASES,
    *sweep_readers.CASES,
    *sweep_limits.CASES,
]
# Issue 20's classes of defect, each a letter; a..g above.
CATEGORIES = {
    "h": "unreadable entries",
    "i": "clocks and dates",
    "j": "one folder, two trackers",
    "k": "Neptune archives",
    "l": "readers see one export state",
    "m": "runs that change while the server pages",
    "n": "resource limits",
    "o": "signals at shutdown",
    "p": "numbers kept exact",
    "q": "runs still being written",
    "r": "copies of one run",
}


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> Batches[Case, Outcome]:
    """Every selected case, three at a time (most of each is interpreter and wandb-core start-up), a
    category at a time (a batch: under `pytest -n` each category runs whole on one worker)."""
    base = tmp_path_factory.mktemp("sweep")
    sample = base / "sample"
    sample.mkdir()
    made = run(EXPORT, ["--offline", str(SAMPLES), "-o", "export", "--include-history"], sample,
               isolated_env(sample / "home"))  # fmt: skip
    assert made.code == 0, made.stderr
    INPUTS["export"] = sample / "export"

    def attempt(case: Case) -> Outcome:
        folder = base / case.id
        folder.mkdir()
        try:
            return case.scenario(folder)
        except Exception as error:  # the scenario itself broke: the case fails with why
            return Outcome(None, "", f"scenario failed: {type(error).__name__}: {error}", folder, 0.0)

    return Batches(
        "tests/test_hostile_sweep.py::test_hostile_case",
        selected_params(request),
        case_id=lambda case: case.id,
        attempt=attempt,
    )


def params() -> list[Any]:
    return [pytest.param(case, id=case.id, marks=case.marks) for case in CASES]


@pytest.mark.parametrize("case", params())
def test_hostile_case(case: Case, results: Batches[Case, Outcome]) -> None:
    outcome = results[case.id]
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    context = (
        f"{case.id}: exit {outcome.code} after {outcome.seconds:.1f} s\n--- stderr\n{outcome.stderr[-4000:]}"
    )
    context += f"\n--- stdout\n{outcome.stdout[-1500:]}"
    assert outcome.code is not None, "timed out (killed)\n" + context
    assert outcome.code == case.code, context
    assert "Traceback" not in outcome.stderr, context
    assert case.message in outcome.stderr, context
    if case.code != 0:
        last = last_error_line(outcome)
        assert last.startswith("error: "), context
        assert case.message in last or case.code >= 128, context
        if case.code in (2, 3):
            assert sum(line.startswith("error:") for line in outcome.stderr.splitlines()) == 1, context
    out = outcome.folder / case.out
    if out.is_dir():
        assert not list(out.glob(".*.tmp")), f"temp files left: {list(out.glob('.*.tmp'))}"
    check_accounted(outcome, case.out)
    if case.check:
        case.check(outcome)


def test_the_sweep_is_wide_enough():
    per_category = {category: sum(case.category == category for case in CASES) for category in "abcdefg"}
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)
    assert min(per_category.values()) >= 5, per_category
    assert {case.category for case in CASES} <= set("abcdefg") | set(CATEGORIES)
    newer = {category: sum(case.category == category for case in CASES) for category in CATEGORIES}
    assert sum(newer.values()) >= 30 and min(newer.values()) >= 2, newer
