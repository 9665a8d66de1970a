"""Concurrency helpers: a bounded thread-pool map, a prefetching iterator, batches of an iterable."""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from queue import Full, Queue
from typing import TYPE_CHECKING, Any, TypeVar

from shared.base.errors import Incomplete

if TYPE_CHECKING:
    pass


Item = TypeVar("Item")
FILES_PER_WORKER = 4  # a connection, a file, and room for what the libraries open beside them


Result = TypeVar("Result")


def bounded_map(
    function: Callable[[Item], Result],
    items: Iterable[Item],
    workers: int,
    stopping: threading.Event | None = None,
) -> Iterator[tuple[Item, Result]]:
    """Apply `function` on a thread pool, pulling items lazily with at most 2 x workers in flight.

    On a failure or a signal, what has not started is not started, `stopping` is set (for the running
    calls to end their retries) and the running calls are not waited for. Fewer workers run when the
    open-file limit leaves too few descriptors for them (workers_within_open_files).
    """
    workers = workers_within_open_files(workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="history")
    pending: dict[Future[Result], Item] = {}
    source = iter(items)
    exhausted = False
    try:
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
    except BaseException:
        if stopping is not None:
            stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def workers_within_open_files(workers: int) -> int:
    """`workers`, or as many as the descriptors the open-file limit (`ulimit -n`) leaves free can serve,
    FILES_PER_WORKER each, at least 1: with `ulimit -n 32`, 32 history downloads failed to connect (EMFILE)
    and were retried until --max-retry-time, then the runs were left out."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc (macOS): the limit alone
        in_use = 0
    return max(1, min(workers, (soft - in_use) // FILES_PER_WORKER))


def stoppable_sleep(stopping: threading.Event) -> Callable[[float], None]:
    """A Retry's sleep that ends, with a Incomplete, as soon as `stopping` is set."""

    def sleep(seconds: float) -> None:
        if stopping.wait(seconds):
            raise Incomplete("the export was interrupted")

    return sleep


def prefetched(items: Iterable[Item], depth: int) -> Iterator[Item]:
    """`items`, produced on a background thread up to `depth` ahead, so their waits (paging, lookups)
    overlap the consumer's work; an error in the producer is raised here, in order."""
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as error:  # handed to the consumer
            put((False, error))

    producer = threading.Thread(target=produce, name="prefetch", daemon=True)
    producer.start()
    try:
        while True:
            is_item, value = queue.get()
            if not is_item:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        producer.join()


def batched(
    items: Iterable[Item], size: int, *, weight: Callable[[Item], int] | None = None, max_weight: int = 0
) -> Iterator[list[Item]]:
    """`items` in lists of `size` (the last may be shorter), or shorter lists once their total `weight`
    reaches `max_weight`; itertools.batched from Python 3.12 on, plus that bound."""
    batch: list[Item] = []
    total = 0
    for item in items:
        batch.append(item)
        total += weight(item) if weight else 0
        if len(batch) == size or (weight and total >= max_weight):
            yield batch
            batch, total = [], 0
    if batch:
        yield batch
