"""A W&B run's files: over the API, the Run.files listing (name, size, md5, updated) for RUNS_BATCH runs per
GraphQL request, a run with more than one page of files paged on its own, and each file's bytes streamed
from its URL (only when files are kept: the URLs are signed and never written); offline, the `files/`
folder beside the run's log."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from shared.base.concurrency import batched
from shared.base.errors import describe
from shared.base.retry import NO_RETRY, Retry
from shared.table.run_files import RunFile, folder_paths, local_file, md5_hex
from shared.table.source import ProjectKey, RunFailed, RunFiles
from shared.wandb.transfers import Transfers, runs_of_batch, runs_query

if TYPE_CHECKING:
    import wandb

FILES_PAGE = 50  # files per run per request, as the client asks for them
RUNS_BATCH = 25  # runs whose files one request lists
BATCHES_AHEAD = 4  # such requests under way at once


def run_files_query(count: int, *, with_url: bool) -> str:
    """The Run.files listing of `count` runs at once (`$after`: the cursor of a run paged on its own)."""
    node = "name sizeBytes md5 updatedAt" + (" url" if with_url else "")
    selection = (
        f"files(first: $first, after: $after) {{ edges {{ node {{ {node} }} }}"
        " pageInfo { endCursor hasNextPage } }"
    )
    return runs_query("RunFilesListing", "$first: Int, $after: String", selection, count)


def offline_run_files(logs: Sequence[Path]) -> list[RunFile]:
    """The files of an offline run: the `files/` folder beside each of its logs (`offline-run-…/run-<id>.wandb`;
    a run resumed offline has several, a later one's file replaces an earlier one's). A log that is not in
    its run folder has none."""
    found: dict[str, Path] = {}  # a later session's file replaces an earlier one's: only it is hashed
    for log in logs:
        if _in_run_folder(log):
            found |= dict(folder_paths(log.parent / "files"))
    return [local_file(path, location) for path, location in found.items()]


def _in_run_folder(log: Path) -> bool:
    """Whether `run-<id>.wandb` is in its run's folder, `…-<id>`; a second session begun in the same
    second as the first gets `…-<id>-1` (the client numbers a folder that exists)."""
    run_id = re.escape(log.stem.removeprefix("run-"))
    return re.fullmatch(rf".*-{run_id}(-\d+)?", log.parent.name) is not None


def _time(text: Any) -> datetime | None:
    """W&B's `updatedAt` (ISO, UTC without a zone) as a time; None for anything else."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class RunFilesLister:
    """Each run's files (RunFile, readable through pooled HTTP when `with_url`), or why they could not be
    listed."""

    def __init__(
        self,
        api: wandb.Api,
        entity: str,
        project: str,
        *,
        workers: int,
        timeout_s: float,
        retry: Retry = NO_RETRY,
        with_url: bool = False,
    ) -> None:
        self.api, self.entity, self.project = api, entity, project
        self.timeout_s, self.retry, self.with_url = timeout_s, retry, with_url
        self._transfers = Transfers(workers) if with_url else None
        # run id -> the listing of its batch (its files, or why not: a future) and its place there
        self._found: dict[str, tuple[Future[list[list[RunFile] | str]], int]] = {}

    def listed(self, runs: Iterable[Any]) -> Iterator[Any]:
        """`runs` (each with a `.run.id`), passed on as they come while each batch's files are listed
        meanwhile (RUNS_BATCH runs per request, BATCHES_AHEAD at once: off the listing's critical path);
        `take` waits for a run's listing."""
        with ThreadPoolExecutor(BATCHES_AHEAD, thread_name_prefix="run-files") as lookups:
            for batch in batched(runs, RUNS_BATCH):
                ids = [paged.run.id for paged in batch]
                listing = lookups.submit(self._list, ids)
                self._found |= {run_id: (listing, index) for index, run_id in enumerate(ids)}
                yield from batch

    def take(self, key: ProjectKey, run_id: str) -> RunFiles | RunFailed:
        """The files of a run passed on by `listed`, or why they could not be listed."""
        listing, index = self._found.pop(run_id, (None, 0))
        files = listing.result()[index] if listing is not None else "were not listed"
        return (
            RunFiles(key, run_id, files)
            if isinstance(files, list)
            else RunFailed(key, run_id, f"files {files}", "files listing")
        )

    def close(self) -> None:
        if self._transfers is not None:
            self._transfers.close()

    def _page(self, run_ids: list[str], after: str | None) -> list[dict[str, Any] | Exception]:
        """One page of each run's `files` connection."""
        variables = {"entity": self.entity, "project": self.project, "first": FILES_PAGE, "after": after}
        what = f"files of runs {run_ids[0]}..{run_ids[-1]}"
        query = run_files_query(len(run_ids), with_url=self.with_url)
        replies = runs_of_batch(self.api, self.retry, query, variables, run_ids, what, self.timeout_s)
        if isinstance(replies, Exception):
            return [replies] * len(run_ids)
        return [reply.get("files") or {} for reply in replies]

    def _list(self, run_ids: list[str]) -> list[list[RunFile] | str]:
        listed: list[list[RunFile] | str] = []
        for run_id, page in zip(run_ids, self._page(run_ids, None), strict=True):
            files: list[RunFile] = []
            while True:
                if isinstance(page, Exception):
                    listed.append(f"could not be listed ({describe(page)})")
                    break
                files += [self._file(edge.get("node") or {}) for edge in page.get("edges") or []]
                info = page.get("pageInfo") or {}
                if not info.get("hasNextPage"):
                    listed.append(files)
                    break
                if not info.get("endCursor"):
                    listed.append("the server says more files follow but gives no cursor")
                    break
                page = self._page([run_id], info["endCursor"])[0]  # more than a page: this run alone
        return listed

    def _file(self, node: dict[str, Any]) -> RunFile:
        size = node.get("sizeBytes")
        url = node.get("url")
        return RunFile(
            path=str(node.get("name") or ""),
            size=int(size) if isinstance(size, int | float) and not isinstance(size, bool) else None,
            md5=md5_hex(node.get("md5") if isinstance(node.get("md5"), str) else None),
            updated_at=_time(node.get("updatedAt")),
            read=(lambda: self._open(url)) if self.with_url and isinstance(url, str) and url else None,
        )

    def _open(self, url: str) -> AbstractContextManager[BinaryIO]:
        """The file's bytes as they arrive (its URL is signed: never named in an error)."""
        assert self._transfers is not None
        return self._transfers.stream(url, self.timeout_s)  # type: ignore[return-value]  # reads like a binary file
