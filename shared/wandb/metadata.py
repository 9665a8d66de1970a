"""A W&B run's metadata (git, host, OS, Python, program, arguments, CPUs, GPU) as the runs table's core
columns. Offline logs hold it as environment records, the server as the run's `wandb-metadata.json`; both
are the client's EnvironmentRecord in its JSON names (`gpu` for `gpu_type`, `git.remote` for its URL).

Over the API, `MetadataFetcher` looks the files' URLs up for URL_BATCH runs per GraphQL request (as the
history's are) and downloads them `workers` at a time."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from shared.base.concurrency import batched
from shared.base.errors import Incomplete, describe, is_bug
from shared.base.retry import NO_RETRY, PermanentFailure, Retry
from shared.base.text import without_userinfo
from shared.wandb.transfers import Transfers, project_of_batch, runs_query

if TYPE_CHECKING:
    import wandb

METADATA_FILE = "wandb-metadata.json"
URL_BATCH = 25  # runs whose file URLs one GraphQL request asks for
BATCHES_AHEAD = 4  # such batches looked up and downloaded at once


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    # JSON protobuf writes 64-bit integers as strings; a count of 0 is the field left unset.
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def run_metadata(environment: Mapping[str, Any]) -> dict[str, Any]:
    """The RunRecord's metadata fields from an environment in JSON names; None where it has no value."""
    git = environment.get("git")
    git = git if isinstance(git, Mapping) else {}
    remote = _text(git.get("remote"))
    args = environment.get("args")
    return {
        "git_commit": _text(git.get("commit")),
        "git_remote": without_userinfo(remote) if remote else None,  # wandb blanks a password, not the user
        "host": _text(environment.get("host")),
        "os": _text(environment.get("os")),
        "python": _text(environment.get("python")),
        "program": _text(environment.get("program")),
        # The client leaves an empty list out (protobuf's JSON): a recorded program ran with no arguments.
        "args": [str(arg) for arg in args]
        if isinstance(args, list)
        else []
        if environment.get("program")
        else None,
        "cpu_count": _count(environment.get("cpu_count")),
        "gpu": _text(environment.get("gpu")),
        "gpu_count": _count(environment.get("gpu_count")),
    }


def metadata_files_query(count: int) -> str:
    """The Run.files lookup of the metadata file for `count` runs at once."""
    selection = "files(names: $names) { edges { node { name url } } }"
    return runs_query("RunMetadataFiles", "$names: [String]", selection, count)


class MetadataFetcher:
    """Each run's metadata fields from its `wandb-metadata.json` (empty for a run without one), or why
    they could not be had. GraphQL goes through the wandb client; the files as history's are (shared.wandb.transfers)."""

    def __init__(
        self,
        api: wandb.Api,
        entity: str,
        project: str,
        *,
        workers: int,
        timeout_s: float,
        retry: Retry = NO_RETRY,
    ) -> None:
        self.api, self.entity, self.project = api, entity, project
        self.workers, self.timeout_s, self.retry = workers, timeout_s, retry
        self._transfers = Transfers(workers)

    def complete(self, runs: Iterable[Any]) -> Iterator[tuple[Any, dict[str, Any] | str]]:
        """Each item of `runs` (with a `.run.id`) and its metadata fields or a failure, in order; up to
        BATCHES_AHEAD batches looked up and downloaded at once (their latencies overlap)."""
        try:
            with (
                ThreadPoolExecutor(self.workers, thread_name_prefix="metadata") as downloads,
                ThreadPoolExecutor(BATCHES_AHEAD, thread_name_prefix="metadata-lookup") as lookups,
            ):

                def fetched(batch: list[Any]) -> list[dict[str, Any] | str]:
                    return list(downloads.map(self._fetch, self._locate([item.run.id for item in batch])))

                pending: deque[tuple[list[Any], Future[list[dict[str, Any] | str]]]] = deque()
                for batch in batched(runs, URL_BATCH):
                    pending.append((batch, lookups.submit(fetched, batch)))
                    while pending and (pending[0][1].done() or len(pending) > BATCHES_AHEAD):
                        done, results = pending.popleft()
                        yield from zip(done, results.result(), strict=True)
                while pending:
                    done, results = pending.popleft()
                    yield from zip(done, results.result(), strict=True)
        finally:
            self._transfers.close()

    def _locate(self, run_ids: list[str]) -> list[str | Exception | None]:
        """Each run's metadata file URL, None without one, or the failure to look it up."""
        variables = {"entity": self.entity, "project": self.project, "names": [METADATA_FILE]}
        variables |= {f"run{i}": run_id for i, run_id in enumerate(run_ids)}
        what = f"metadata files of runs {run_ids[0]}..{run_ids[-1]}"
        query = metadata_files_query(len(run_ids))
        project = project_of_batch(self.api, self.retry, query, variables, what, self.timeout_s)
        if isinstance(project, Exception):
            return [project] * len(run_ids)
        urls: list[str | Exception | None] = []
        for i in range(len(run_ids)):
            files = ((project.get(f"run{i}") or {}).get("files") or {}).get("edges") or []
            found = [
                edge["node"].get("url")
                for edge in files
                if (edge.get("node") or {}).get("name") == METADATA_FILE
            ]
            urls.append(found[0] if found and isinstance(found[0], str) else None)
        return urls

    def _fetch(self, url: str | Exception | None) -> dict[str, Any] | str:
        """The metadata fields from the file at `url`, downloaded again while the transfer fails."""
        if isinstance(url, Exception):
            return f"could not be looked up ({describe(url)})"
        if url is None:
            return {}
        try:
            return run_metadata(self.retry.call(METADATA_FILE, lambda: self._download(url)))
        except Exception as error:
            if is_bug(error):
                raise
            return describe(error).removeprefix(f"{METADATA_FILE}: ")

    def _download(self, url: str) -> dict[str, Any]:
        import urllib3

        try:
            response = self._transfers.pool(url).request("GET", url, timeout=self.timeout_s)
        except urllib3.exceptions.HTTPError as error:  # the URL is signed: never named
            raise Incomplete(
                f"download failed ({type(getattr(error, 'reason', None) or error).__name__})"
            ) from None
        if 400 <= response.status < 500 and response.status not in (408, 429):
            raise PermanentFailure(f"download failed (HTTP {response.status})")
        if response.status != 200:
            raise Incomplete(f"download failed (HTTP {response.status})")
        try:
            environment = json.loads(response.data)
        except ValueError:  # cut short in transfer
            raise Incomplete("the downloaded file is not JSON") from None
        if not isinstance(environment, dict):
            raise PermanentFailure("the file is not a JSON object")
        return environment
