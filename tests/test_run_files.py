"""Everything a run holds (issue 21), item 5: each run's files listed in `*_files.parquet` by every source,
and `--include-files GLOB` keeping the matching ones under `files/<stem>/<run id>/`, checked, resumable and
counted. Runs are made by the real clients; the W&B API is the real client against the stand-in."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import polars as pl
import pytest

from shared.cli.progress import TerminalEvents
from tests.export_checks import ENTITY, cron_standin
from tests.test_run_streams import run_script
from tests.wandb_standin import HookResult, RequestInfo, StandinServer


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def export_offline(paths: list[Path], folder: Path, **options: object):
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs
    from shared.wandb.sources import OfflineSource

    events = TerminalEvents()
    return export_runs(
        [ExportTarget(OfflineSource(paths, events=events))], ExportOptions(folder, **options), events
    )


def files_table(folder: Path) -> pl.DataFrame:
    metadata = json.loads(next(folder.glob("*_metadata.json")).read_text())
    return pl.read_parquet(folder / metadata["files"]["files"])


# ------------------------------------------------------------------ W&B offline

WANDB_SCRIPT = """\
import wandb
from pathlib import Path
Path("model.txt").write_text("weights 1 2 3\\n")
Path("ckpt").mkdir()
Path("ckpt/last.bin").write_bytes(bytes(range(256)) * 10)
run = wandb.init(mode="offline", project="proj", settings=wandb.Settings(x_disable_stats=True))
run.log({"loss": 0.5})
wandb.save("model.txt", policy="now")
wandb.save("ckpt/last.bin", policy="now")
print("done")
run.finish()
"""


@pytest.fixture(scope="module")
def offline_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    job = tmp_path_factory.mktemp("job")
    run_script(job, WANDB_SCRIPT, WANDB_MODE="offline", WANDB_SILENT="true")
    return job


def test_an_offline_wandb_export_lists_the_run_files_and_keeps_the_matching_ones(
    offline_job: Path, tmp_path: Path, capsys
):
    """Each file of the run folder's files/ (saved ones are links there) with its size and md5; with
    --include-files, the matching ones copied byte for byte; a second export copies nothing again."""
    out = tmp_path / "out"
    outcome = export_offline([offline_job / "wandb"], out, include_files="*.txt")
    assert outcome.failures == [] and outcome.results[0].shortfall is None
    listed = files_table(out)
    run_id = listed["run_id"][0]
    rows = {row["path"]: row for row in listed.iter_rows(named=True)}
    saved = {"model.txt": b"weights 1 2 3\n", "ckpt/last.bin": bytes(range(256)) * 10}
    assert {"model.txt", "ckpt/last.bin", "output.log", "requirements.txt"} <= set(rows)
    for path, data in saved.items():
        assert (rows[path]["size"], rows[path]["md5"]) == (len(data), md5(data))
        assert rows[path]["updated_at"] is not None
    kept = out / "files" / "offline_proj" / run_id
    assert (kept / "model.txt").read_bytes() == saved["model.txt"]
    assert (kept / "requirements.txt").is_file() and not (kept / "ckpt").exists()  # not matched
    metadata = json.loads(next(out.glob("*_metadata.json")).read_text())
    assert metadata["files_rows"] == listed.height
    assert metadata["include_files"] == {
        "glob": "*.txt",
        "matched": 2,
        "fetched": 2,
        "already_there": 0,
        "failed": 0,
    }
    capsys.readouterr()
    export_offline([offline_job / "wandb"], out, include_files="*.txt")
    assert "2 of 2 matching file(s) already in" in capsys.readouterr().err
    metadata = json.loads(next(out.glob("*_metadata.json")).read_text())
    assert metadata["include_files"]["fetched"] == 0 and metadata["include_files"]["already_there"] == 2


def test_a_changed_copy_is_fetched_again(offline_job: Path, tmp_path: Path):
    """A kept file that no longer matches its listed md5 (edited, cut short) is replaced."""
    out = tmp_path / "out"
    export_offline([offline_job / "wandb"], out, include_files="model.txt")
    (kept,) = (out / "files").rglob("model.txt")
    kept.write_bytes(b"weights 9 9 9\n")  # same size, other bytes
    outcome = export_offline([offline_job / "wandb"], out, include_files="model.txt")
    assert outcome.results[0].shortfall is None
    assert kept.read_bytes() == b"weights 1 2 3\n"


BIG_SCRIPT = """\
import wandb
from pathlib import Path
Path("big.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB
run = wandb.init(mode="offline", project="proj", settings=wandb.Settings(x_disable_stats=True))
wandb.save("big.bin", policy="now")
run.finish()
"""


def test_a_large_files_md5_is_remembered_until_the_file_changes(tmp_path: Path, monkeypatch):
    """A nightly export does not read an unchanged checkpoint again: its md5 is kept in the user's cache
    (one entry per large file; small files are hashed each time) and answers while the file is unchanged.
    The entry is what answers: changed by hand, the listing shows it. Written to, the file is read again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    job = tmp_path / "job"
    run_script(job, BIG_SCRIPT, WANDB_MODE="offline", WANDB_SILENT="true")
    data = bytes(range(256)) * 8192

    def listed_md5(name: str) -> str:
        out = tmp_path / name
        assert export_offline([job / "wandb"], out).failures == []
        return files_table(out).filter(pl.col("path") == "big.bin")["md5"].item()

    assert listed_md5("first") == md5(data)
    (entry,) = (tmp_path / "cache" / "run-tools" / "file-md5").iterdir()  # the large file's alone
    assert entry.read_text() == md5(data)
    entry.write_text("0" * 32)
    assert listed_md5("second") == "0" * 32
    with open(job / "big.bin", "ab") as big:
        big.write(b"more")
    assert listed_md5("third") == md5(data + b"more")
    # An entry that is no regular file (a pipe would be waited on forever) is passed over.
    (entry,) = [e for e in entry.parent.iterdir() if e.read_text() == md5(data + b"more")]
    entry.unlink()
    os.mkfifo(entry)
    assert listed_md5("fourth") == md5(data + b"more")


RESUMED_SCRIPT = """\
import wandb
from pathlib import Path
for session in ("s1", "s2"):  # each session saves its own file as the run's big.bin
    Path(session).mkdir()
    Path(session, "big.bin").write_bytes(session.encode() * (1 << 20))  # 2 MiB
    run = wandb.init(mode="offline", project="proj", id="resumed1", resume="allow",
                     settings=wandb.Settings(x_disable_stats=True))
    wandb.save(f"{session}/big.bin", base_path=session, policy="now")
    run.finish()
"""


def test_a_resumed_run_lists_the_last_sessions_file_and_hashes_only_it(tmp_path: Path, monkeypatch):
    """A run resumed offline has a folder per session, each with its `files/`: the later session's file
    replaces the earlier one's in the listing, and only it is read (the md5 cache gets one entry). A
    session's folder numbered by the client (`…-resumed1-1`) is its run's folder too."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    job = tmp_path / "job"
    run_script(job, RESUMED_SCRIPT, WANDB_MODE="offline", WANDB_SILENT="true")
    first, second = sorted((job / "wandb").glob("offline-run-*"))  # by name: by time
    # Begun in the same second, the client names the second session's folder `<the first's>-1`: so here.
    if second.name != f"{first.name}-1":
        second.rename(first.with_name(f"{first.name}-1"))
    out = tmp_path / "out"
    assert export_offline([job / "wandb"], out).failures == []
    listed = files_table(out).filter(pl.col("path") == "big.bin")
    assert listed["md5"].to_list() == [md5(b"s2" * (1 << 20))]
    assert len(list((tmp_path / "cache" / "run-tools" / "file-md5").iterdir())) == 1


# ------------------------------------------------------------------ the W&B API (stand-in)


@pytest.fixture
def wandb_standin() -> Iterator[StandinServer]:
    with cron_standin() as server:
        yield server


MANY = {f"media/images/step_{i:03d}.png": f"png {i}".encode() * (i + 1) for i in range(60)}  # two pages


def api_export(tmp_path: Path, *flags: str) -> int:
    from shared.cli.main import run_main
    from tests.current_data import load_script

    export_runs = load_script("export_runs")
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: export_runs.main(["-e", ENTITY, "-p", "alpha", "-o", str(tmp_path), *flags]))
    return exit_info.value.code


def test_an_api_export_lists_every_run_file_in_batches_and_pages(wandb_env, tmp_path: Path):
    """Each run's files (wandb-metadata.json and its own) with size, md5 in hex (W&B sends base64) and
    updated time; a run with more files than one page is paged on its own; no URL is written; no file
    is downloaded without --include-files."""
    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    many, few = alpha.runs[0], alpha.runs[1]
    many.files = dict(MANY)
    few.files = {"model.ckpt": b"\x00\x01" * 1000}
    assert api_export(tmp_path) == 0
    listed = files_table(tmp_path)
    got = {(row["run_id"], row["path"]): row for row in listed.iter_rows(named=True)}
    for run, files in ((many, MANY), (few, few.files)):
        for path, data in files.items():
            assert (got[run.id, path]["size"], got[run.id, path]["md5"]) == (len(data), md5(data))
            assert got[run.id, path]["updated_at"] == (run.heartbeat_at or run.created_at).replace(tzinfo=UTC)
    for run in alpha.runs:  # every file of every run, its metadata file too
        held = set(run.files) | ({"wandb-metadata.json"} if run.metadata is not None else set())
        assert {path for run_id, path in got if run_id == run.id} == held
    assert "url" not in listed.columns and not listed["md5"].str.contains("=").any()
    batches = -(-len(alpha.runs) // 25)
    assert wandb_env.requests["RunFilesListing"] == batches + 1  # one more page of `many`'s files
    assert wandb_env.requests.get("GET /files/run-file", 0) == 0


def test_include_files_downloads_the_matches_and_a_rerun_fetches_nothing(wandb_env, tmp_path: Path, capsys):
    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    run = alpha.runs[0]
    run.files = dict(MANY) | {"model.ckpt": b"weights" * 100}
    assert api_export(tmp_path, "--include-files", "media/*") == 0
    kept = tmp_path / "files" / f"{ENTITY}_alpha" / run.id
    for path, data in MANY.items():
        assert (kept / path).read_bytes() == data
    assert not (kept / "model.ckpt").exists()
    assert wandb_env.requests["GET /files/run-file"] == len(MANY)
    wandb_env.reset_counts()
    capsys.readouterr()
    assert api_export(tmp_path, "--include-files", "media/*") == 0
    assert wandb_env.requests.get("GET /files/run-file", 0) == 0
    assert f"{len(MANY)} of {len(MANY)} matching file(s) already in" in capsys.readouterr().err


def test_a_file_whose_md5_differs_is_not_kept_and_the_run_is_named(wandb_env, tmp_path: Path, capsys):
    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    run = alpha.runs[0]
    run.files = {"good.bin": b"good" * 10, "model.bin": b"A" * 100}
    run.served_files = {"model.bin": b"B" * 100}  # what arrives is not what the server lists
    assert api_export(tmp_path, "--include-files", "*.bin") == 1
    err = capsys.readouterr().err
    assert f"run {run.id}: file model.bin: its md5 differs from the one the source lists" in err
    kept = tmp_path / "files" / f"{ENTITY}_alpha" / run.id
    assert (kept / "good.bin").read_bytes() == b"good" * 10
    assert not (kept / "model.bin").exists() and not list(kept.glob(".*.tmp"))
    metadata = json.loads(next(tmp_path.glob("*_metadata.json")).read_text())
    assert metadata["failed_files"] == {run.id: ["model.bin: its md5 differs from the one the source lists"]}
    state = json.loads(next(tmp_path.glob("*_state.json")).read_text())
    assert run.id not in state["runs"]  # an update fetches it again


def test_paths_that_leave_the_run_folder_are_refused(wandb_env, tmp_path: Path, capsys):
    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    run = alpha.runs[0]
    hostile = ["../escaped.txt", "/etc/absolute.txt", "a/../../up.txt", "bad\\name.txt", "ctl\x01.txt"]
    run.files = {name: b"x" for name in hostile} | {"fine.txt": b"ok"}
    assert api_export(tmp_path, "--include-files", "*") == 1
    err = capsys.readouterr().err
    for name in hostile[:3]:
        assert f"file {name}: " in err
    root = tmp_path / "files" / f"{ENTITY}_alpha"
    assert (root / run.id / "fine.txt").read_bytes() == b"ok"
    written = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file()}
    assert not [path for path in written if "escaped" in path or "absolute" in path or "up.txt" in path]
    assert wandb_env.requests["GET /files/run-file"] == 1  # the refused ones were never requested


def test_a_failing_download_is_named_with_exit_1(wandb_env, tmp_path: Path, capsys):
    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    run = alpha.runs[0]
    run.files = {"gone.bin": b"x" * 10}

    def hook(request: RequestInfo) -> HookResult | None:
        return HookResult(status=404) if request.path.endswith("gone.bin") else None

    wandb_env.request_hook = hook
    assert api_export(tmp_path, "--include-files", "*.bin") == 1
    err = capsys.readouterr().err
    assert f"run {run.id}: file gone.bin: download failed (HTTP 404)" in err
    assert "1 file(s) of run(s)" in err
    assert wandb_env.url not in err  # the file's URL is never shown


def test_the_standin_lists_md5_in_base64_as_w_and_b_does(wandb_env):
    """The stand-in answers as the server does: base64 md5 (so the hex conversion is exercised)."""
    import wandb

    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    alpha.runs[0].files = {"x.txt": b"hello"}
    run = wandb.Api().run(f"{ENTITY}/alpha/{alpha.runs[0].id}")
    (found,) = [file for file in run.files() if file.name == "x.txt"]
    assert found.md5 == base64.b64encode(hashlib.md5(b"hello").digest()).decode() and found.size == 5


# ------------------------------------------------------------------ Neptune

NEPTUNE_SCRIPT = """\
import neptune
from pathlib import Path
Path("weights.bin").write_bytes(bytes(range(200)))
run = neptune.init_run(
    project="ws/proj", mode="offline", source_files=["train.py"], capture_hardware_metrics=False
)
run["model/weights"].upload("weights.bin")
run["loss"].append(0.5)
run.stop()
"""


def export_neptune(source, folder: Path, **options: object):
    from shared.export.pipeline import ExportOptions, ExportTarget, export_runs

    return export_runs([ExportTarget(source, source.key)], ExportOptions(folder, **options), source.events)


def test_an_offline_neptune_export_lists_uploaded_and_source_files(tmp_path: Path):
    """The files an offline run's log uploads (source_files and an upload), where they are on this
    machine, with their size and md5; --include-files copies them."""
    from shared.neptune.offline import OfflineSource

    job = tmp_path / "job"
    run_script(job, NEPTUNE_SCRIPT, NEPTUNE_MODE="offline", NEPTUNE_DATA_DIRECTORY=str(job / ".neptune"))
    source = OfflineSource(job / ".neptune", "ws/proj", events=TerminalEvents())
    outcome = export_neptune(source, tmp_path / "out", include_files="*")
    assert outcome.failures == [] and outcome.results[0].shortfall is None
    listed = files_table(tmp_path / "out")
    expected = {
        "source_code/files/train.py": (job / "train.py").read_bytes(),
        "model/weights.bin": bytes(range(200)),
    }
    assert sorted(listed["path"]) == sorted(expected)
    for row in listed.iter_rows(named=True):
        data = expected[row["path"]]
        assert (row["size"], row["md5"]) == (len(data), md5(data))
        assert (tmp_path / "out" / "files" / "ws_proj" / row["run_id"] / row["path"]).read_bytes() == data


def test_an_archive_export_lists_the_files_neptune_exporter_downloaded(tmp_path: Path, capsys):
    """file, file_series and file_set attributes: each file where the exporter put it (files/<project
    folder>/, file_value.path), by its path in the run; a path that leaves the files folder is listed
    without size or md5 and is not kept: named, exit 1."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shared.neptune.archive import ArchiveSource
    from tests.neptune_fixtures import EXPORTER_SCHEMA, PROJECT, SPECS, exporter_name, write_archive

    root = write_archive(tmp_path / "exports" / "data", specs=SPECS[:1])
    files_root = tmp_path / "exports" / "files" / exporter_name(PROJECT)
    held = {
        "model/weights.pt": b"\x00weights" * 30,
        "media/sample/4.png": b"png four",
        "data/set/a.csv": b"a,b\n1,2\n",
        "data/set/sub/b.csv": b"b\n3\n",
    }
    for path, data in held.items():
        location = files_root / PROJECT / "TEST-1" / path
        location.parent.mkdir(parents=True, exist_ok=True)
        location.write_bytes(data)
    base = {"project_id": PROJECT, "run_id": "TEST-1"}
    where = f"{PROJECT}/TEST-1"
    added = [
        base | {"attribute_path": "model/weights", "attribute_type": "file",
                "file_value": {"path": f"{where}/model/weights.pt"}},
        base | {"attribute_path": "media/sample", "attribute_type": "file_series", "step": 4,
                "file_value": {"path": f"{where}/media/sample/4.png"}},
        base | {"attribute_path": "data/set", "attribute_type": "file_set",
                "file_value": {"path": f"{where}/data/set"}},
        base | {"attribute_path": "evil", "attribute_type": "file",
                "file_value": {"path": "../../../outside.txt"}},
    ]  # fmt: skip
    part = next(root.glob("*/*_part_0.parquet"))
    table = pa.concat_tables([pq.read_table(part), pa.Table.from_pylist(added, schema=EXPORTER_SCHEMA)])
    pq.write_table(table, part)
    (tmp_path / "outside.txt").write_bytes(b"not the archive's")

    source = ArchiveSource(root, PROJECT, cache=False, events=TerminalEvents())
    out = tmp_path / "out"
    outcome = export_neptune(source, out)
    assert outcome.results[0].shortfall is None  # listing alone: nothing to keep
    listed = {row["path"]: row for row in files_table(out).iter_rows(named=True)}
    assert set(listed) == set(held) | {"evil"}
    for path, data in held.items():
        assert (listed[path]["size"], listed[path]["md5"]) == (len(data), md5(data))
    assert listed["evil"]["size"] is None and listed["evil"]["md5"] is None

    source = ArchiveSource(root, PROJECT, cache=False, events=TerminalEvents())
    outcome = export_neptune(source, out, include_files="*")
    assert "1 file(s) of run(s) TEST-1 not kept" in (outcome.results[0].shortfall or "")
    assert "run TEST-1: file evil: the source cannot read it: not kept" in capsys.readouterr().err
    kept = out / "files" / "_".join(source.key) / "TEST-1"
    for path, data in held.items():
        assert (kept / path).read_bytes() == data
    assert not (kept / "evil").exists() and not (out / "outside.txt").exists()


# ------------------------------------------------------------------ incremental, lock, aggregate


def test_an_update_lists_the_changed_runs_files_and_carries_the_others(wandb_env, tmp_path: Path, capsys):
    """--incremental: the listing of a run not fetched again is kept from the stored file; a changed run's
    is listed anew (its new file appears, and is kept with --include-files)."""
    from tests.export_checks import advance_run, utc_now

    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    kept, changed = alpha.runs[0], alpha.runs[1]
    kept.files = {"kept.txt": b"kept"}
    changed.files = {"first.txt": b"first"}
    flags = ("--incremental", "--include-files", "*.txt")
    assert api_export(tmp_path, *flags) == 0
    changed.files["second.txt"] = b"second"
    kept.files["unseen.txt"] = b"not fetched: the run did not change"
    advance_run(changed, utc_now())
    wandb_env.clear_cache()
    wandb_env.reset_counts()
    assert api_export(tmp_path, *flags) == 0
    assert "1 new or changed run(s) merged into the files" in capsys.readouterr().err
    listed = files_table(tmp_path)
    paths = {run_id: set(group["path"]) for (run_id,), group in listed.group_by("run_id")}
    assert {"kept.txt"} <= paths[kept.id] and "unseen.txt" not in paths[kept.id]
    assert {"first.txt", "second.txt"} <= paths[changed.id]
    assert (tmp_path / "files" / f"{ENTITY}_alpha" / changed.id / "second.txt").read_bytes() == b"second"
    assert wandb_env.requests["GET /files/run-file"] == 1  # second.txt; first.txt is already there


def test_the_lock_removes_temp_files_of_run_files_an_export_left(offline_job: Path, tmp_path: Path):
    out = tmp_path / "out"
    export_offline([offline_job / "wandb"], out, include_files="model.txt")
    (kept,) = (out / "files").rglob("model.txt")
    leftover = kept.with_name(".model.txt.abcd1234.tmp")  # a killed export's, as AtomicFile names them
    leftover.write_bytes(b"half")
    export_offline([offline_job / "wandb"], out)
    assert not leftover.exists() and kept.read_bytes() == b"weights 1 2 3\n"


def test_aggregate_with_history_carries_the_files_listing(offline_job: Path, tmp_path: Path):
    from tests.current_data import load_script

    aggregate_runs = load_script("aggregate_runs")
    outcome = export_offline([offline_job / "wandb"], tmp_path / "export", include_history=True)
    output = tmp_path / "all.parquet"
    argv = [str(outcome.results[0].runs_path), "-o", str(output), "--include-history", "--protocol", "all"]
    assert aggregate_runs.main(argv) == 0
    merged = pl.read_parquet(tmp_path / "all_files.parquet")
    exported = files_table(tmp_path / "export")
    assert merged.select(exported.columns).sort("path").equals(exported.sort("path"))
    assert set(merged["project"]) == {"proj"}


def test_readers_of_a_folder_take_no_kept_run_file_for_an_export(offline_job: Path, tmp_path: Path):
    """A parquet a run saved (here a runs file's copy, the worst case) kept under files/ is neither found
    as a runs file of the folder nor taken as its newest export."""
    import shutil

    from shared.base.events import Events
    from shared.table.exports import find_runs_files, newest_export

    out = tmp_path / "out"
    outcome = export_offline([offline_job / "wandb"], out, include_files="*.txt")
    (kept,) = (out / "files").rglob("model.txt")
    shutil.copy(outcome.results[0].runs_path, kept.with_name("saved_runs.parquet"))
    assert find_runs_files([str(out)], Events()) == [outcome.results[0].runs_path]
    assert newest_export(out) == (outcome.results[0].runs_path, 1)


def test_a_file_cut_short_is_not_kept(wandb_env, tmp_path: Path, capsys):
    alpha = wandb_env.dataset.project(ENTITY, "alpha")
    run = alpha.runs[0]
    run.files = {"model.bin": b"A" * 100}
    run.served_files = {"model.bin": b"A" * 60}  # the transfer ends early
    assert api_export(tmp_path, "--include-files", "model.bin") == 1
    assert f"run {run.id}: file model.bin: 60 bytes arrived, the source lists 100" in capsys.readouterr().err
    assert not list((tmp_path / "files").rglob("model.bin")) and not list((tmp_path / "files").rglob("*.tmp"))
