"""W&B export orchestration: cloud projects or offline run files → per-project export files."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from shared.cli import warn
from shared.exporter import ProjectExport, ProjectResult
from shared.progress import ItemProgress
from shared.storage import prepare_output_folder
from shared.wandb_api import fetch_history, iter_runs, run_record

Item = TypeVar("Item")
Result = TypeVar("Result")


def bounded_map(
    function: Callable[[Item], Result], items: Iterable[Item], workers: int
) -> Iterator[tuple[Item, Result]]:
    """Apply `function` on a thread pool, pulling items lazily with at most 2 x workers in flight."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="history") as pool:
        pending: dict[Future[Result], Item] = {}
        source = iter(items)
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < 2 * workers:
                item = next(source, None)
                if item is None:
                    exhausted = True
                else:
                    pending[pool.submit(function, item)] = item
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()


def export_api_project(
    api: Any,
    entity: str,
    project: str,
    folder: Path,
    *,
    filters: dict[str, Any],
    include_history: bool,
    history_keys: list[str] | None,
    workers: int,
    metadata: dict[str, Any],
) -> ProjectResult:
    """Export one cloud project; history fetches overlap with paging through the runs."""
    export = ProjectExport(folder, entity, project, include_history=include_history, metadata=metadata)
    total, runs = iter_runs(api, entity, project, filters)
    try:
        with ItemProgress("runs", total) as progress:

            def records_added() -> Iterator[Any]:
                for run in runs:
                    export.add_run(run_record(run))
                    if not include_history:
                        progress.advance()
                    yield run

            if include_history:
                for _run, (frame, skipped) in bounded_map(
                    lambda r: fetch_history(r, history_keys), records_added(), workers
                ):
                    export.add_history(frame, skipped)
                    progress.advance()
            else:
                for _run in records_added():
                    pass
        return export.finish()
    except BaseException:
        export.abort()
        raise


def export_offline(
    paths: list[Path],
    folder: Path,
    *,
    include_history: bool,
    history_keys: list[str] | None,
    since: datetime | None,
    metadata: dict[str, Any],
) -> list[ProjectResult]:
    """Read offline run logs and write one set of files per entity/project found in them."""
    from shared.wandb_offline import find_run_logs, read_run_log  # imports wandb's protobuf: only when needed

    logs = sorted({log for path in paths for log in find_run_logs(path)})
    prepare_output_folder(folder)
    exports: dict[tuple[str, str], ProjectExport] = {}
    try:
        with ItemProgress("run files", len(logs), verb="read") as progress:
            for log_path in logs:
                run = read_run_log(
                    log_path,
                    include_history=include_history,
                    history_keys=set(history_keys) if history_keys else None,
                )
                progress.advance()
                if run.lost_records:
                    warn(
                        f"{log_path}: skipped {run.lost_records} corrupt or truncated record(s), {run.lost_bytes} bytes"
                    )
                record = run.record
                if since is not None and record.created_at is not None and record.created_at < since:
                    continue
                key = (record.entity or "offline", record.project or "uncategorized")
                if key not in exports:
                    exports[key] = ProjectExport(
                        folder,
                        *key,
                        include_history=include_history,
                        metadata={**metadata, "corrupt_logs": {}},
                    )
                export = exports[key]
                if run.lost_records:
                    export.metadata["corrupt_logs"][str(log_path)] = {
                        "lost_records": run.lost_records,
                        "lost_bytes": run.lost_bytes,
                    }
                export.add_run(record)
                if include_history:
                    export.add_history(run.history, run.skipped_values)
        return [exports[key].finish() for key in sorted(exports)]
    except BaseException:
        for unfinished in exports.values():
            unfinished.abort()
        raise
