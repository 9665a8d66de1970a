"""An archive's part files a batch of whole runs at a time: read ahead, two batches worked on at once."""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from shared.base.errors import Incomplete

# polars reads many small files faster from memory than by their paths (one read each instead of its
# reader's many small ones, handed between threads): 10k exporter parts summarise in ~20% less time.
BATCH_FILES = 250
BATCH_BYTES = 64 * 2**20  # at most this much in a batch (a larger run is read by its paths)
WORKERS = 2  # batches worked on at once: polars leaves a core idle as each query starts and ends
Result = TypeVar("Result")
PART = re.compile(r"^(?P<prefix>.*)_part_\d+\.parquet$")  # neptune-exporter's `<run>_part_<n>.parquet`


def run_prefix(file: str) -> str:
    """The run part of a part file's name (the whole name for a file not named like a part)."""
    name = os.path.basename(file)
    return match["prefix"] if (match := PART.match(name)) else name


def run_batches(files: Sequence[str], sizes: Sequence[int]) -> Iterator[tuple[list[str], int]]:
    """`files` (sorted by name, `sizes` their bytes) in batches of at most BATCH_FILES files and BATCH_BYTES
    bytes, with their size, never splitting the parts of one run (a larger run is a batch of its own)."""
    batch: list[str] = []
    size = 0
    for file, length in zip(files, sizes, strict=True):
        full = len(batch) >= BATCH_FILES or size + length > BATCH_BYTES
        if batch and full and run_prefix(batch[-1]) != run_prefix(file):
            yield batch, size
            batch, size = [], 0
        batch.append(file)
        size += length
    if batch:
        yield batch, size


def _contents(batch: list[str], size: int) -> list[str] | list[bytes]:
    """A batch as polars is to read it: the files' bytes, or their paths when they exceed BATCH_BYTES
    (polars then reads only the row groups a query needs)."""
    if size > BATCH_BYTES:
        return batch
    contents = []
    for file in batch:
        try:
            contents.append(Path(file).read_bytes())
        except OSError as error:
            raise Incomplete(f"cannot read archive part {file}: {error.strerror or error}") from None
    return contents


def read_ahead(files: Sequence[str], sizes: Sequence[int]) -> Iterator[list[str] | list[bytes]]:
    """Every batch of `files` as polars is to read it, the next one read in a thread meanwhile."""
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        pending = None
        for batch, size in run_batches(files, sizes):
            following = pool.submit(_contents, batch, size)
            if pending is not None:
                yield pending.result()
            pending = following
        if pending is not None:
            yield pending.result()


def map_batches(
    work: Callable[[list[str] | list[bytes]], Result], files: Sequence[str], sizes: Sequence[int]
) -> list[Result]:
    """`work` on every batch of `files` (see `read_ahead`), WORKERS batches at a time, results in order."""
    results: list[Result] = []
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="batch") as pool:
        pending: deque[Future[Result]] = deque()
        for contents in read_ahead(files, sizes):
            pending.append(pool.submit(work, contents))
            if len(pending) >= WORKERS:
                results.append(pending.popleft().result())
        results.extend(future.result() for future in pending)
    return results
