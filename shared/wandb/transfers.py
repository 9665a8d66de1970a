"""Requests about many runs: GraphQL queries that ask about a batch of runs at once, and plain GETs of a
run's file URLs (history parquet, run files; signed where the server signs them) as wandb-core does them:
urllib3 connection pools, the environment's proxies honoured (https_proxy, no_proxy, …) as requests and
wandb-core do, a transfer retried on 429 and 5xx."""

from __future__ import annotations

import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from shared.base.concurrency import batched
from shared.base.errors import Incomplete, is_bug
from shared.base.retry import PermanentFailure, Retry

if TYPE_CHECKING:
    import urllib3

RETRY_STATUSES = (429, 500, 502, 503, 504)
Item, Result = TypeVar("Item"), TypeVar("Result")


class Transfers:
    """Connection pools for `workers` threads: one direct, one per proxied scheme."""

    def __init__(self, workers: int) -> None:
        import urllib3

        retry = urllib3.Retry(total=5, backoff_factor=0.5, status_forcelist=RETRY_STATUSES)
        self._direct = urllib3.PoolManager(maxsize=workers, retries=retry)
        self._proxies = {
            scheme: urllib3.ProxyManager(proxy, maxsize=workers, retries=retry)
            for scheme, proxy in urllib.request.getproxies().items()
            if scheme in ("http", "https")
        }

    def pool(self, url: str) -> urllib3.PoolManager:
        """The pool `url` goes through: its scheme's proxy, unless the host bypasses it."""
        parts = urlsplit(url)
        proxied = self._proxies.get(parts.scheme)
        if proxied is None or urllib.request.proxy_bypass(parts.hostname or ""):
            return self._direct
        return proxied

    def get(self, url: str, timeout_s: float, *, stream: bool = False) -> urllib3.BaseHTTPResponse:
        """The answer to a GET of `url` (`stream`: its body not read yet; the caller releases it), or why
        not: a 4xx other than 408 and 429 is permanent, anything else a transfer to retry. The URL may be
        signed: never named."""
        import urllib3

        try:
            response = self.pool(url).request("GET", url, timeout=timeout_s, preload_content=not stream)
        except urllib3.exceptions.HTTPError as error:
            raise Incomplete(
                f"download failed ({type(getattr(error, 'reason', None) or error).__name__})"
            ) from None
        if response.status != 200:
            response.release_conn()
            if 400 <= response.status < 500 and response.status not in (408, 429):
                raise PermanentFailure(f"download failed (HTTP {response.status})")
            raise Incomplete(f"download failed (HTTP {response.status})")
        return response

    @contextmanager
    def stream(self, url: str, timeout_s: float) -> Iterator[urllib3.BaseHTTPResponse]:
        """`get`'s answer with its body to read as it arrives, released after; a transfer cut short while
        it is read is one to retry."""
        import urllib3

        response = self.get(url, timeout_s, stream=True)
        try:
            yield response
        except urllib3.exceptions.HTTPError as error:  # cut short, timed out
            raise Incomplete(f"download cut short ({type(error).__name__})") from None
        finally:
            response.release_conn()

    def close(self) -> None:
        for pool in (self._direct, *self._proxies.values()):
            pool.clear()


def runs_of_batch(
    api: Any,
    retry: Retry,
    query: str,
    variables: dict[str, Any],
    run_ids: Sequence[str],
    what: str,
    timeout_s: float,
) -> list[dict[str, Any]] | Exception:
    """Each run's part of a GraphQL query that asks about many runs at once (runs_query's aliases run0,
    run1, …, given `run_ids` here), or the error that kept them all (a bug is raised): the caller makes that
    each run's failure."""
    variables = variables | {f"run{i}": run_id for i, run_id in enumerate(run_ids)}
    try:
        data = retry.call(what, lambda: api._service_api.execute_graphql(query, variables, timeout=timeout_s))
    except Exception as error:  # wandb raises its own error types for transport and GraphQL errors
        if is_bug(error):
            raise
        return error
    project = (data.get("project") if isinstance(data, dict) else None) or {}
    return [project.get(f"run{i}") or {} for i in range(len(run_ids))]


def runs_query(operation: str, parameters: str, selection: str, count: int) -> str:
    """The GraphQL query `operation` that asks `selection` of `count` runs of a project at once, one aliased
    `run` field each (run0, run1, …: each a `$runN` variable), with the query's own `parameters`."""
    names = "".join(f", $run{i}: String!" for i in range(count))
    fields = " ".join(f"run{i}: run(name: $run{i}) {{ {selection} }}" for i in range(count))
    return (
        f"query {operation}($entity: String!, $project: String!, {parameters}{names}) "
        f"{{ project(name: $project, entityName: $entity) {{ {fields} }} }}"
    )


def in_batches(
    pool: ThreadPoolExecutor,
    work: Callable[[list[Item]], list[Result]],
    items: Iterable[Item],
    size: int,
    ahead: int,
) -> Iterator[tuple[Item, Result]]:
    """Each of `items` with its result, in order: `work` (one result per item) applied on `pool` to
    batches of `size`, up to `ahead` batches under way at once while the caller's thread pulls `items`; a
    batch is passed on once it and those before it are done."""
    pending: deque[tuple[list[Item], Future[list[Result]]]] = deque()
    for batch in batched(items, size):
        pending.append((batch, pool.submit(work, batch)))
        while pending and (pending[0][1].done() or len(pending) > ahead):
            done, results = pending.popleft()
            yield from zip(done, results.result(), strict=True)
    while pending:
        done, results = pending.popleft()
        yield from zip(done, results.result(), strict=True)
