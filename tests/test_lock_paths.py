"""The lock file and an export's final paths: a symlink, folder or device there is refused, never followed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.base.errors import BadInput
from shared.base.storage import check_final_paths
from shared.cli.main import run_main
from shared.export.lock import LOCK_NAME
from tests.current_data import load_script
from tests.test_bad_input import SAMPLES

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
