"""The offline run-log reader on logs written by the real wandb client in offline mode."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from wandb.proto import wandb_internal_pb2 as wandb_pb

from shared.cli.progress import TerminalEvents
from shared.table.schema import HISTORY_SCHEMA
from shared.wandb.offline import (
    FILE_HEADER,
    READ_SIZE,
    LogReadError,
    OfflineLogError,
    _Framing,
    _SummaryFold,
    locate_run_logs,
    read_run_log,
)
from tests.offline_client import offline_wandb

STEPS = 400
BLOCK = 32 * 1024
FRAME = struct.Struct("<IHB")  # crc, length, type
CONFIG = {
    "lr": 0.01,
    "model": {"depth": 3, "act": "relu"},
    "big": list(range(40_000)),
}  # `big`: several blocks


def loss(step: int) -> float:
    return 1.0 / (step + 1)


def weird(step: int) -> float:
    """NaN, +inf and -inf now and then, small numbers in between; +inf at the last step."""
    if step == STEPS - 1 or step % 11 == 0:
        return math.inf
    if step % 7 == 0:
        return math.nan
    if step % 13 == 0:
        return -math.inf
    return step * 1e-5


@dataclass
class Logs:
    complete: Path  # finished, everything below
    failed: Path  # finish(exit_code=1)
    folder: Path  # the wandb/ folder holding both


def _log_complete_run(wandb: Any, folder: Path) -> str:
    run = wandb.init(
        mode="offline",
        dir=folder,
        entity="team",
        project="proj",
        name="complete",
        config=CONFIG,
        tags=["a", "b"],
        group="grp",
        job_type="train",
        notes="a note",
    )
    run.config.update({"batch": 32, "model": {"depth": 4}}, allow_val_change=True)
    for step in range(STEPS):
        row: dict[str, Any] = {"loss": loss(step), "acc": step, "weird": weird(step)}
        if step == 5:
            row["hist"] = wandb.Histogram([1, 2, 2, 3, 3, 3])
        if step == 6:
            row["label"] = "text"
        if step == 7:
            row["flag"] = True
        if step == 8:
            row |= {"nested": {"a": 1.5}, "temp": 1.0}
        run.log(row)
    run.summary["best"] = 0.5
    run.summary["s"] = {"deep": {"v": 1}}
    run.summary["s"]["deep"]["v"] = 2
    del run.summary["temp"]
    run.finish(exit_code=0)
    return run.id


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Logs:
    work = tmp_path_factory.mktemp("offline")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_USERNAME", "alice")
        with offline_wandb(patch, work) as wandb:
            complete_id = _log_complete_run(wandb, work)
            failing = wandb.init(mode="offline", dir=work, project="proj", name="failing")
            failing.log({"loss": 1.0})
            failing.finish(exit_code=1)
    complete, failed = (
        next(work.glob(f"wandb/offline-run-*/run-{id_}.wandb")) for id_ in (complete_id, failing.id)
    )
    return Logs(complete=complete, failed=failed, folder=work / "wandb")


def frames(path: Path) -> list[tuple[int, int, int]]:
    """(offset, length, type) of every physical record, walked with the format's rules."""
    data = path.read_bytes()
    found, position = [], 7
    while position + FRAME.size <= len(data):
        if BLOCK - position % BLOCK < FRAME.size:
            position += BLOCK - position % BLOCK
            continue
        _, length, kind = FRAME.unpack_from(data, position)
        if kind == 0:
            break
        found.append((position, length, kind))
        position += FRAME.size + length
    return found


def copy_of(path: Path, folder: Path) -> Path:
    target = folder / "offline-run-copy" / path.name
    target.parent.mkdir(parents=True)
    shutil.copy(path, target)
    return target


# --- the finished run ----------------------------------------------------------------------------


def test_finished_run_record(logs: Logs):
    run = read_run_log(logs.complete)
    record = run.record
    assert (run.lost_records, run.lost_bytes) == (0, 0)
    assert record.id == logs.complete.stem.removeprefix("run-")
    assert (record.entity, record.project, record.name) == ("team", "proj", "complete")
    assert (record.state, record.group, record.job_type, record.notes) == (
        "finished",
        "grp",
        "train",
        "a note",
    )
    assert (record.tags, record.sweep, record.url, record.user) == (["a", "b"], None, None, "alice")
    assert record.config == {**CONFIG, "batch": 32, "model": {"depth": 4}}  # update replaces a whole key
    assert record.created_at is not None and record.created_at.tzinfo is not None
    assert record.created_at < record.heartbeat_at <= datetime.now(UTC)
    assert record.runtime_s is not None and 0 < record.runtime_s < 600
    assert record.heartbeat_at >= record.created_at + timedelta(seconds=record.runtime_s)
    assert record.heartbeat_at >= run.history["timestamp"].max()


def test_finished_run_summary(logs: Logs):
    summary = read_run_log(logs.complete).record.summary
    assert summary["loss"] == loss(STEPS - 1) and summary["acc"] == STEPS - 1
    assert summary["weird"] == math.inf  # bare `Infinity` in the log
    assert (summary["best"], summary["s"], summary["nested"]) == (0.5, {"deep": {"v": 2}}, {"a": 1.5})
    assert summary["hist"]["_type"] == "histogram" and summary["label"] == "text" and summary["flag"] is True
    assert "temp" not in summary  # removed after it was logged
    assert summary["_step"] == STEPS - 1 and isinstance(summary["_timestamp"], float)
    assert "_runtime" in summary and "runtime" in summary["_wandb"]


def test_finished_run_history(logs: Logs):
    run = read_run_log(logs.complete)
    history = run.history
    assert history.schema == pl.from_arrow(HISTORY_SCHEMA.empty_table()).schema
    assert history["run_id"].unique().to_list() == [run.record.id]
    assert run.skipped_values == 0  # the histogram, the string and the boolean are in history_other
    assert set(history["key"].unique()) == {"loss", "acc", "weird", "nested.a", "temp"}
    steps = list(range(STEPS))
    expected = pl.DataFrame(
        {
            "step": steps * 3 + [8, 8],
            "key": ["loss"] * STEPS + ["acc"] * STEPS + ["weird"] * STEPS + ["nested.a", "temp"],
            "value": [loss(s) for s in steps]
            + [float(s) for s in steps]
            + [weird(s) for s in steps]
            + [1.5, 1.0],
        },
        schema={"step": pl.Int64, "key": pl.String, "value": pl.Float64},
    ).sort("key", "step")
    assert_frame_equal(history.select("step", "key", "value").sort("key", "step"), expected)
    stamps = history.filter(pl.col("key") == "loss").sort("step")["timestamp"]
    assert stamps.null_count() == 0 and stamps.is_sorted()
    assert run.record.created_at <= stamps[0] and stamps[-1] <= run.record.heartbeat_at


def test_finished_run_history_other(logs: Logs):
    """Every value that is not a number, as logged: the string, the boolean and the histogram (one value
    of several items in the log: its bins and counts as JSON), at its step and time."""
    run = read_run_log(logs.complete)
    other = run.history_other.sort("key")
    assert other["run_id"].unique().to_list() == [run.record.id]
    assert other.select("step", "key", "type").rows() == [
        (7, "flag", "bool"),
        (5, "hist", "histogram"),
        (6, "label", "string"),
    ]
    flag, hist, label = other["value"].to_list()
    assert (flag, label) == ("true", "text")
    import wandb

    logged = wandb.Histogram([1, 2, 2, 3, 3, 3])
    assert json.loads(hist) == {"_type": "histogram", "values": logged.histogram, "bins": logged.bins}
    assert other["timestamp"].null_count() == 0


def test_history_keys_and_no_history(logs: Logs):
    picked = read_run_log(logs.complete, history_keys={"loss", "label", "hist"})
    assert picked.history["key"].unique().to_list() == ["loss"] and picked.history.height == STEPS
    assert picked.history_other["key"].sort().to_list() == ["hist", "label"]  # the boolean was not asked for
    assert picked.skipped_values == 0
    bare = read_run_log(logs.complete, include_history=False)
    assert bare.history.is_empty() and bare.history.schema == picked.history.schema
    assert bare.history_other.is_empty() and bare.history_other.schema == picked.history_other.schema
    assert bare.record == picked.record


def test_failed_run(logs: Logs):
    run = read_run_log(logs.failed)
    assert (run.record.state, run.record.name, run.record.entity) == ("failed", "failing", "")
    assert run.history.select("step", "key", "value").rows() == [(0, "loss", 1.0)]


# --- damage --------------------------------------------------------------------------------------


def test_log_cut_before_its_exit_record_is_crashed(logs: Logs, tmp_path: Path):
    copy = copy_of(logs.complete, tmp_path)
    last_offset = frames(copy)[-1][0]  # the exit record is the last one the client wrote
    copy.write_bytes(copy.read_bytes()[:last_offset])
    run = read_run_log(copy, now=datetime.now(UTC) + timedelta(hours=1))  # long after the job died
    assert run.record.state == "crashed"
    assert (run.lost_records, run.lost_bytes) == (0, 0)
    assert run.history.height == read_run_log(logs.complete).history.height


def test_log_truncated_mid_record_is_crashed_and_counts_the_loss(logs: Logs, tmp_path: Path):
    copy = copy_of(logs.complete, tmp_path)
    offset, length, _ = next(f for f in reversed(frames(copy)) if f[1] > 20)
    copy.write_bytes(copy.read_bytes()[: offset + FRAME.size + 10])  # 10 of its `length` bytes are left
    run = read_run_log(copy, now=datetime.now(UTC) + timedelta(hours=1))  # long after the job died
    assert run.record.state == "crashed"
    assert (run.lost_records, run.lost_bytes) == (1, FRAME.size + 10)
    assert length > 10


def test_flipped_byte_loses_only_its_block(logs: Logs, tmp_path: Path):
    complete = read_run_log(logs.complete)
    copy = copy_of(logs.complete, tmp_path)
    data = bytearray(copy.read_bytes())
    blocks = len(data) // BLOCK
    assert blocks > 2
    late_block = blocks * 3 // 4 * BLOCK  # past the run record, among history and summary records
    offset, length, _ = next(f for f in frames(copy) if f[0] > late_block + 100 and f[1] > 40 and f[2] == 1)
    data[offset + FRAME.size + length // 2] ^= 0x40
    copy.write_bytes(bytes(data))
    run = read_run_log(copy)
    assert run.lost_records >= 1
    assert 0 < run.lost_bytes <= 2 * BLOCK
    assert run.record.state == "finished" and run.record.config == complete.record.config
    block_end = offset - offset % BLOCK + BLOCK
    frames_to_block_end = [f for f in frames(copy) if offset <= f[0] < block_end]
    lost_rows = complete.history.height - run.history.height
    assert 0 < lost_rows <= 5 * len(frames_to_block_end)  # a record holds at most 5 numbers here
    assert run.history["step"].max() == STEPS - 1  # reading went on after the damaged block


def test_damage_inside_a_record_split_over_blocks_loses_that_record(logs: Logs, tmp_path: Path):
    copy = copy_of(logs.complete, tmp_path)
    chain = []  # the frames of the first record split over blocks: the run record, with its big config
    for frame in frames(copy):
        if frame[2] == 2 or chain:
            chain.append(frame)
        if chain and frame[2] == 4:
            break
    assert [kind for _, _, kind in chain][:3] == [2, 3, 3]
    data = bytearray(copy.read_bytes())
    data[chain[2][0] + FRAME.size + 5] ^= 0x01  # inside the second MIDDLE fragment
    copy.write_bytes(bytes(data))
    run = read_run_log(copy)
    assert (run.lost_records, run.lost_bytes) == (1, sum(FRAME.size + length for _, length, _ in chain))
    record = run.record  # no run record left: the id comes from the file name
    assert (record.id, record.entity, record.name, record.state) == (
        logs.complete.stem[4:],
        "",
        None,
        "finished",
    )
    assert record.config == {"batch": 32, "model": {"depth": 4}}  # from the later config record only
    assert run.history.height == read_run_log(logs.complete).history.height


@pytest.mark.parametrize("blocks", [3, READ_SIZE // BLOCK, READ_SIZE // BLOCK + 3])
def test_a_record_cut_at_the_very_end_is_a_tail_loss_however_long_the_log(blocks: int):
    """A record running past the log's end is lost at the end (what a running job is still writing), also
    when the log is exactly a whole number of reads long."""
    payload = b"x" * 100
    frame = FRAME.pack(zlib.crc32(payload, zlib.crc32(bytes([1]))), len(payload), 1) + payload
    data, written = bytearray(FILE_HEADER.pack(b":W&B", 0xBEE1, 0)), 0
    for block in range(blocks):
        room = FRAME.size + 20 if block == blocks - 1 else 0  # the last block keeps room for the cut one
        while BLOCK - len(data) % BLOCK >= len(frame) + room:
            data += frame
            written += 1
        if block == blocks - 1:
            data += FRAME.pack(0, 500, 1)  # claims more than the log holds
            data += b"y" * (BLOCK - len(data) % BLOCK)
        else:
            data += bytes(BLOCK - len(data) % BLOCK)
    assert len(data) == blocks * BLOCK
    framing = _Framing()
    assert list(framing.records(io.BytesIO(bytes(data)))) == [payload] * written
    assert (framing.lost_records, framing.tail_records) == (1, 1)
    assert framing.tail_bytes == framing.lost_bytes > 0


def test_not_a_wandb_log(tmp_path: Path):
    empty = tmp_path / "run-empty.wandb"
    empty.write_bytes(b"")
    other = tmp_path / "run-other.wandb"
    other.write_bytes(b"PK\x03\x04 certainly not a W&B log")
    short = tmp_path / "run-short.wandb"
    short.write_bytes(b":W&B")
    for path, reason in ((empty, "empty file"), (other, "not a W&B run log"), (short, "not a W&B run log")):
        with pytest.raises(OfflineLogError, match=reason) as raised:
            read_run_log(path)
        assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(LogReadError, match="cannot read"):  # not bad input: exit 1, counted by an export
        read_run_log(tmp_path / "run-missing.wandb")


# --- finding logs --------------------------------------------------------------------------------


def test_locate_run_logs_on_every_kind_of_path(logs: Logs, tmp_path: Path):
    both = sorted([logs.complete, logs.failed])
    assert locate_run_logs(logs.folder)[0] == both
    assert locate_run_logs(str(logs.folder)) == (both, [])
    assert locate_run_logs(logs.complete.parent)[0] == [logs.complete]
    assert locate_run_logs(logs.failed)[0] == [logs.failed]
    run_folder = tmp_path / "run-20260101_000000-abc"  # a synced run's folder name
    run_folder.mkdir()
    shutil.copy(logs.failed, run_folder / "run-abc.wandb")
    assert locate_run_logs(run_folder)[0] == [run_folder / "run-abc.wandb"]


def test_locate_run_logs_errors_name_the_path(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("x")
    for path in (tmp_path / "missing", tmp_path, tmp_path / "notes.txt"):
        with pytest.raises(OfflineLogError) as raised:
            locate_run_logs(path)
        assert str(path) in str(raised.value) and "\n" not in str(raised.value)


# --- the summary fold, against applying every operation in turn -----------------------------------

PATHS = [
    ("a",),
    ("b",),
    ("_runtime",),
    ("s",),
    ("_wandb", "runtime"),
    ("s", "deep"),
    ("s", "deep", "v"),
    ("a", "x"),
]
operation = st.tuples(
    st.sampled_from(PATHS), st.one_of(st.none(), st.integers(0, 9)), st.booleans()
)  # None: remove


def summary_record(operations: list[tuple[tuple[str, ...], int | None, bool]]) -> bytes:
    record = wandb_pb.SummaryRecord()
    for path, value, as_key in operations:
        item = record.remove.add() if value is None else record.update.add(value_json=str(value))
        if as_key and len(path) == 1:
            item.key = path[0]
        else:
            item.nested_key.extend(path)
    return record.SerializeToString()


def applied_in_turn(records: list[list[tuple[tuple[str, ...], int | None, bool]]]) -> dict:
    tree: dict = {}
    for record in records:
        for path, value, _ in [op for op in record if op[1] is not None] + [
            op for op in record if op[1] is None
        ]:
            node = tree
            for name in path[:-1]:
                if value is None:
                    node = node.get(name) if isinstance(node, dict) else None
                elif not isinstance(node.get(name), dict):
                    node[name] = {}
                    node = node[name]
                else:
                    node = node[name]
            if value is None:
                if isinstance(node, dict):
                    node.pop(path[-1], None)
            else:
                node[path[-1]] = value
    return tree


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(operation, max_size=4), max_size=30), st.lists(st.integers(1, 8), min_size=1))
def test_summary_fold_equals_applying_every_operation(records, batch_sizes):
    fold, start = _SummaryFold(), 0
    payloads = [summary_record(record) for record in records]
    for size in batch_sizes * len(payloads):
        if start >= len(payloads):
            break
        fold.add(payloads[start : start + size])
        start += size
    assert fold.result() == applied_in_turn(records)


# --- the export around the reader ------------------------------------------------------------------


def export_offline(
    paths: list[Path], folder: Path, *, since: datetime | None = None
) -> tuple[list, list[str]]:
    """The offline logs at `paths` exported into `folder` by the export pipeline: results and failures."""
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
    from shared.wandb.sources import OfflineSource

    events = TerminalEvents()  # what the export says goes to stderr, as under export_runs.py
    outcome = export_runs(
        [ExportTarget(OfflineSource(paths, events=events))], ExportOptions(folder, since=since), events
    )
    return outcome.results, outcome.failures


def test_one_unreadable_log_among_good_ones_is_named_and_the_rest_exported(tmp_path: Path):
    samples = Path(__file__).resolve().parent.parent / "samples" / "wandb"
    shutil.copytree(samples, tmp_path / "wandb")
    broken = tmp_path / "wandb" / "offline-run-20260101_000000-broken" / "run-broken.wandb"
    broken.parent.mkdir()
    broken.write_bytes(b"")
    good = len(locate_run_logs(samples)[0])

    results, unreadable = export_offline([tmp_path / "wandb"], tmp_path / "out")
    assert [r.runs for r in results] == [good]
    assert len(unreadable) == 1 and str(broken) in unreadable[0] and "empty file" in unreadable[0]

    only_broken = tmp_path / "only"
    shutil.copytree(broken.parent, only_broken / broken.parent.name)
    (only_broken / broken.parent.name / "run-other.wandb").write_bytes(b"PK not a log")
    with pytest.raises(OfflineLogError, match="no readable run log among 2"):
        export_offline([only_broken], tmp_path / "out2")


def test_runs_left_out_by_since_are_counted(tmp_path: Path, capsys):
    samples = Path(__file__).resolve().parent.parent / "samples" / "wandb"
    created = sorted(read_run_log(log).record.created_at for log in locate_run_logs(samples)[0])
    middle = created[len(created) // 2]

    def export(since: datetime, name: str) -> int:
        results, _ = export_offline([samples], tmp_path / name, since=since)
        return sum(r.runs for r in results)

    assert export(middle, "some") == sum(c >= middle for c in created)
    assert f"{sum(c < middle for c in created)} run(s) created before --since" in capsys.readouterr().err
    assert export(created[-1] + timedelta(seconds=1), "none") == 0
    assert f"{len(created)} run(s) created before --since" in capsys.readouterr().err


def test_the_commit_a_run_ran_is_its_git_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An offline run started in a git repository records the commit it ran; the export keeps it as the
    runs table's git_commit (a run outside a repository has none)."""
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
        return done.stdout.strip()

    git("init", "-q")
    (repo / "train.py").write_text("print('training')\n")
    git("add", "train.py")
    git("-c", "user.email=a@example.com", "-c", "user.name=a", "commit", "-qm", "train")
    head = git("rev-parse", "HEAD")
    with offline_wandb(monkeypatch, tmp_path / "home") as wandb:
        for folder, name in ((repo, "in-a-repo"), (tmp_path, "elsewhere")):
            monkeypatch.chdir(folder)
            run = wandb.init(mode="offline", dir=tmp_path, project="proj", name=name)
            run.log({"loss": 1.0})
            run.finish()
    results, failures = export_offline([tmp_path / "wandb"], tmp_path / "out")
    assert failures == []
    runs = pl.read_parquet(results[0].runs_path)
    assert dict(zip(runs["name"], runs["git_commit"], strict=True)) == {"in-a-repo": head, "elsewhere": None}


# --- entries that cannot be read, logs still being written ------------------------------------------


def test_a_run_folder_that_cannot_be_listed_is_named_and_counted_as_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A glob skipped it without a word (exit 0, 3 of 4 runs); now it is a run reported and failed."""
    samples = Path(__file__).resolve().parent.parent / "samples" / "wandb"
    shutil.copytree(samples, tmp_path / "wandb")
    hidden = sorted((tmp_path / "wandb").iterdir())[0]
    scandir = os.scandir

    def guarded(path=".", *args):  # as for a user without permission: root ignores file modes
        if Path(path) == hidden:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path, *args)

    monkeypatch.setattr(os, "scandir", guarded)
    logs, unreadable = locate_run_logs(tmp_path / "wandb")
    assert len(logs) == len(locate_run_logs(samples)[0]) - 1
    assert [str(entry) for entry in unreadable] == [f"{hidden}: cannot read (Permission denied)"]

    (result,), failures = export_offline([tmp_path / "wandb"], tmp_path / "out")
    assert result.shortfall and str(hidden) in result.shortfall and failures == [str(unreadable[0])]
    metadata = json.loads(result.metadata_path.read_text())
    assert (metadata["runs_reported"], metadata["runs_exported"]) == (len(logs) + 1, len(logs))
    assert list(metadata["failed_runs"]) == [str(hidden)]


@pytest.mark.parametrize(
    "size", [FILE_HEADER.size, FILE_HEADER.size + 7 + 77, FILE_HEADER.size + 7 + 77 + 40]
)
def test_a_log_that_holds_no_run_record_yet_is_in_progress(logs: Logs, tmp_path: Path, size: int):
    """wandb-core buffers its log: for a while it holds its header (record), or part of its run record."""
    copy = copy_of(logs.complete, tmp_path)
    os.truncate(copy, size)
    run = read_run_log(copy)
    assert run.in_progress and not run.run_recorded and run.lost_records == 0


def test_a_run_record_lost_to_damage_is_not_in_progress(logs: Logs, tmp_path: Path):
    copy = copy_of(logs.complete, tmp_path)
    data = bytearray(copy.read_bytes())
    data[FILE_HEADER.size + 7 + 77 + 7 + 50] ^= 0x01  # inside the run record, the log's second
    copy.write_bytes(bytes(data))
    run = read_run_log(copy)
    assert not run.run_recorded and run.lost_records and not run.in_progress  # exported by the file's id
