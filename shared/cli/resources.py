"""The process sized to its limits before polars and pyarrow load: under a virtual-memory limit (`ulimit -v`)
their allocators' up-front reservations, not the data, exhausted it, and a Rust or C++ allocation that
fails aborts the process (exit 134, no error line). Light to import: run_main calls it on every start."""

from __future__ import annotations

import contextlib
import os
import resource

from shared.base.errors import Incomplete

# Before a polars or pyarrow allocation, with a 13-run export and nothing reserved: 2.6 GB of address
# space, 0.2 GB resident. pyarrow's mimalloc reserves a 1 GiB arena at its first buffer; glibc reserves
# 128 MiB per thread that allocates (an arena each, up to 8 per core); polars' jemalloc starts a
# background thread per arena, each with an 8 MiB stack. With the settings below: 0.7 GB.
_GLIBC_ARENAS = 2
_UNDER_AN_ADDRESS_LIMIT = {
    "ARROW_DEFAULT_MEMORY_POOL": "system",  # read when pyarrow makes its default pool
    "_RJEM_MALLOC_CONF": "background_thread:false",  # polars' jemalloc reads it when it first allocates
    # Reading 1,000 export folders, polars started 512 threads for its blocking reads (and warned of a
    # deadlock): at 1.5 GB their stacks aborted it. With 64 it takes as long.
    "POLARS_MAX_BLOCKING_THREAD_COUNT": "64",
    # For the processes started later: wandb-core (Go) reserved 1.8 GB with glibc's arenas, 1.4 GB with two
    # (most of it the Go runtime's own), and under `ulimit -v 1500000` it could not always start its threads.
    "MALLOC_ARENA_MAX": str(_GLIBC_ARENAS),
}
_M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)
# Every tool completes with `ulimit -n 32`. With fewer, the wandb client waited forever for an event loop
# its thread could not make, a history download's polars call panicked, and a refused connection was
# retried for --max-retry-time: refused at the start instead.
MIN_OPEN_FILES = 32


def address_space_limit() -> int | None:
    """The soft RLIMIT_AS in bytes, None when there is none."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def fit_to_limits() -> None:
    """Under an address-space limit, make the allocators reserve what they use (a setting the user made
    in the environment is kept). Without one nothing changes: reservations cost nothing then, and the
    allocators as they are set are the faster ones. Incomplete when fewer than MIN_OPEN_FILES files may
    be open."""
    open_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if open_files < MIN_OPEN_FILES:
        raise Incomplete(
            f"too many open files: the limit is {open_files} (ulimit -n); the tools need {MIN_OPEN_FILES}"
        )
    if address_space_limit() is None:
        return
    arenas_chosen = "MALLOC_ARENA_MAX" in os.environ
    for name, value in _UNDER_AN_ADDRESS_LIMIT.items():
        os.environ.setdefault(name, value)
    if not arenas_chosen:  # this process's glibc read the variable at start; mallopt sets arenas to come
        import ctypes

        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no arenas to cap)
            ctypes.CDLL(None).mallopt(_M_ARENA_MAX, _GLIBC_ARENAS)
