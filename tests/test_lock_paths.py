"""The lock file and an export's final paths: a symlink, folder or device there is refused, never followed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.base.errors import BadInput, FolderLocked
from shared.base.storage import check_final_paths
from shared.cli.main import run_main
from shared.export.lock import LOCK_NAME, FolderLock
from tests.current_data import load_script
from tests.test_bad_input import SAMPLES

ROOT = Path(__file__).resolve().parent.parent
export_runs = load_script("export_runs")
PRECIOUS = "a file the lock must never truncate\n"


def symlink_to_a_file(path: Path) -> Path:
    target = path.parent.parent / "precious.txt"
    target.write_text(PRECIOUS)
    path.symlink_to(target)
    return target


def dangling_symlink(path: Path) -> Path:
    target = path.parent.parent / "created-through-the-link"
    path.symlink_to(target)
    return target


def folder(path: Path) -> None:
    path.mkdir()


def fifo(path: Path) -> None:
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (symlink_to_a_file, "it is a symbolic link"),
        (dangling_symlink, "it is a symbolic link"),
        (folder, "it is a folder"),
        (fifo, "it is not a regular file"),
    ],
    ids=["symlink", "dangling-symlink", "folder", "fifo"],
)
def test_an_export_refuses_a_lock_file_that_is_not_a_regular_file_in_one_line(
    make: Callable[[Path], Path | None], reason: str, tmp_path, capsys
):
    output = tmp_path / "out"
    output.mkdir()
    lock = output / LOCK_NAME
    target = make(lock)
    with pytest.raises(SystemExit) as leaving:
        run_main(lambda: export_runs.main(["--offline", str(SAMPLES), "-o", str(output)]))
    assert leaving.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1:] == [f"error: cannot use lock file {lock}: {reason}"]
    if make is symlink_to_a_file:
        assert target.read_text() == PRECIOUS
    if make is dangling_symlink:
        assert not target.exists()
    assert [path.name for path in output.iterdir()] == [LOCK_NAME], "nothing was exported"


def test_final_paths_must_be_absent_or_regular_files(tmp_path):
    regular, absent = tmp_path / "a_runs.parquet", tmp_path / "a_history.parquet"
    regular.write_bytes(b"PAR1")
    check_final_paths([regular, absent])

    other = tmp_path / "b_runs.parquet"
    other.write_bytes(b"PAR1")
    link = tmp_path / "c_runs.parquet"
    link.symlink_to(other)
    made = tmp_path / "d_metadata.json"
    made.mkdir()
    pipe = tmp_path / "e_state.json"
    os.mkfifo(pipe)
    for path, reason in (
        (link, "it is a symbolic link"),
        (made, "it is a folder"),
        (pipe, "it is not a regular file"),
    ):
        with pytest.raises(BadInput) as refused:
            check_final_paths([regular, path, absent])
        assert str(refused.value) == f"refusing to write {path}: {reason}"
    assert other.read_bytes() == b"PAR1"


def test_an_export_that_ends_removes_its_lock_file_w_and_b_and_neptune(tmp_path):
    wandb_out, neptune_out = tmp_path / "wandb", tmp_path / "neptune"
    assert export_runs.main(["--offline", str(SAMPLES), "-o", str(wandb_out)]) == 0
    archive = str(ROOT / "samples" / "neptune" / "archive")
    assert (
        load_script("export_runs", "neptune-tools").main(["--source", archive, "-o", str(neptune_out)]) == 0
    )
    for out in (wandb_out, neptune_out):
        names = [path.name for path in out.iterdir()]
        assert any(name.endswith("_runs.parquet") for name in names) and LOCK_NAME not in names, names


class Latecomer(FolderLock):
    """An export that opened the lock file just before its holder removed it: its first `_open` returns
    the descriptor it opened then (the timing, not our code, is what is staged)."""

    def __init__(self, folder: Path, opened_before: int) -> None:
        super().__init__(folder)
        self.opened_before: int | None = opened_before

    def _open(self) -> int:
        fd, self.opened_before = self.opened_before, None
        return super()._open() if fd is None else fd


def test_a_lock_taken_on_a_removed_lock_file_is_taken_anew_on_the_folder(tmp_path):
    with FolderLock(tmp_path) as first:
        opened_before = os.open(first.path, os.O_RDWR)
    assert not (tmp_path / LOCK_NAME).exists()
    with Latecomer(tmp_path, opened_before) as latecomer:
        assert os.fstat(latecomer._fd).st_ino == os.stat(tmp_path / LOCK_NAME).st_ino
        with pytest.raises(FolderLocked):  # a third export sees the folder held
            FolderLock(tmp_path).__enter__()
    assert not (tmp_path / LOCK_NAME).exists()


def test_after_ctrl_c_the_lock_file_and_its_record_stay_to_resume_from(tmp_path):
    with pytest.raises(KeyboardInterrupt), FolderLock(tmp_path) as lock:
        lock.update(completed=["alpha"])
        raise KeyboardInterrupt
    assert json.loads((tmp_path / LOCK_NAME).read_text())["completed"] == ["alpha"]
