"""A Neptune run's files. An archive's `file`, `file_set`, `file_series` and `artifact` attributes name
where neptune-exporter downloaded them (`file_value.path`, relative to its files folder: by default
`<exports>/files/<project folder>/` beside `<exports>/data/<project folder>/`, the files under
`<project id>/<run id>/<attribute path>`); an offline run's log names the files it uploads (`UploadFile`,
`UploadFileSet`: `source_code/files` among them) where they are on this machine."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

from shared.table.run_files import RunFile, folder_files, local_file

# The exporter's attribute types that hold files; a folder's (file_set, a file series' points, an artifact's
# files_list.json) are listed file by file.
FILE_TYPES = ("file", "file_set", "file_series", "artifact")


def archive_files_root(project_folder: Path) -> Path:
    """Where neptune-exporter put the files of the project whose parts are in `project_folder`, as its
    defaults lay them out (`--data-path ./exports/data`, `--files-path ./exports/files`)."""
    return project_folder.parent.parent / "files" / project_folder.name


def _run_relative(location: str, run_id: str, attribute_path: str) -> str:
    """A file's path in its run: what follows `<run id>/` in the exporter's path, else the attribute's."""
    parts = location.split("/")
    if run_id in parts[:-1]:
        return "/".join(parts[parts.index(run_id) + 1 :])
    return attribute_path


def _within(root: Path, location: str) -> Path | None:
    """`root/location`, None when that leaves `root` (an archive's path is not trusted)."""
    if not location or os.path.isabs(location):
        return None
    found = root / location
    return found if found.resolve().is_relative_to(root.resolve()) else None


def archive_run_files(root: Path, run_id: str, attribute_path: str, location: str) -> Iterator[RunFile]:
    """The file (or each file of the folder) an archive row names; listed with neither size nor md5 (and
    not keepable) when it is not under `root`."""
    path = _run_relative(location, run_id, attribute_path)
    found = _within(root, location)
    if found is not None and found.is_dir():
        for file in folder_files(found):
            yield file._replace(path=f"{path}/{file.path}")
    elif found is not None:
        yield local_file(path, found)
    else:
        yield RunFile(path, None, None, None)


def upload_files(attribute_path: str, globs: list[str]) -> list[tuple[str, Path]]:
    """The files an `UploadFileSet` names (globs on this machine), each as `<attribute path>/<name>`, a
    folder's files under its name."""
    found: list[tuple[str, Path]] = []
    for pattern in globs:
        for match in sorted(glob.glob(pattern, recursive=True)):
            location = Path(match)
            if location.is_dir():
                for parent, _, names in os.walk(location):
                    for name in sorted(names):
                        inside = Path(parent, name).relative_to(location.parent).as_posix()
                        found.append((f"{attribute_path}/{inside}", Path(parent, name)))
            else:
                found.append((f"{attribute_path}/{location.name}", location))
    return found
