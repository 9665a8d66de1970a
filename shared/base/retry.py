"""Retrying transient failures: exponential backoff with jitter, bounded in time per operation."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from shared.base.errors import BadInput, Incomplete, describe

DEFAULT_MAX_RETRY_TIME = 300.0


# Client errors that are an answer, not a hiccup: retrying cannot change them.
_PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 409, 410, 422})


# Errors in the code itself: retrying cannot fix them either.
_BUGS = AttributeError | NameError | TypeError | AssertionError | NotImplementedError


Result = TypeVar("Result")


class PermanentFailure(Incomplete):
    """A failure that retrying cannot fix (the server answered; the answer is an error)."""


class RetriesExhausted(Incomplete):
    """A transient failure that outlasted the retry budget."""


def is_transient(error: BaseException) -> bool:
    """Whether trying again may succeed: transport failures, 5xx, 429, malformed answers.

    Not transient: bad input, HTTP 4xx other than 408/429, GraphQL errors (wandb-core reports those
    as `input: …`: the server understood the request and refused it) and errors in the code itself.
    """
    if isinstance(error, BadInput | PermanentFailure | _BUGS):
        return False
    status = getattr(getattr(error, "response", None), "http_status", None)  # wandb's WandbApiFailedError
    status = status or getattr(getattr(error, "response", None), "status_code", None)  # requests' errors
    if status in _PERMANENT_STATUSES:
        return False
    return not str(error).startswith("input:")


def _retry_after(error: BaseException) -> float | None:
    """Seconds from a `Retry-After: <seconds>` header on the error's response, if it has one."""
    headers = getattr(getattr(error, "response", None), "headers", None)
    try:
        return max(0.0, float(headers["Retry-After"])) if headers and "Retry-After" in headers else None
    except (TypeError, ValueError):
        return None


@dataclass
class Retry:
    """Calls an operation until it succeeds, a permanent error comes, or `max_retry_time` runs out.

    Waits grow exponentially from `base_delay` (capped at `max_delay`) with "equal jitter": half the
    wait is fixed, half random, so concurrent workers do not retry in lockstep. A `Retry-After` the
    server sent is honoured when it is longer. The budget counts from an operation's first failure.
    """

    max_retry_time: float = DEFAULT_MAX_RETRY_TIME
    base_delay: float = 1.0
    max_delay: float = 30.0
    seed: int | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    notify: Callable[[str], None] = lambda message: None  # told of each retry: Events.note
    _random: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        """The wait before retry number `attempt` (0-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2**attempt)
        with self._lock:
            wait = ceiling / 2 + self._random.uniform(0, ceiling / 2)
        server_wait = _retry_after(error) if error is not None else None
        return max(wait, server_wait or 0.0)

    def call(self, what: str, operation: Callable[[], Result]) -> Result:
        """`operation()`, retried on transient errors; RetriesExhausted (exit 1) names `what` when it gives up."""
        if self.max_retry_time <= 0:
            return operation()
        first_failure: float | None = None
        attempt = 0
        while True:
            try:
                return operation()
            except Exception as error:
                if not is_transient(error):
                    raise
                now = self.clock()
                detail = describe(error).removeprefix(f"{what}: ")  # errors may name the operation too
                first_failure = now if first_failure is None else first_failure
                wait = self.delay(attempt, error)
                if now + wait - first_failure > self.max_retry_time:
                    raise RetriesExhausted(
                        f"{what}: {detail} (gave up after {attempt + 1} attempts"
                        f" and {now - first_failure:.0f} s of retrying)"
                    ) from None
                self.notify(f"... {what}: {detail}; retrying in {wait:.1f} s")
                self.sleep(wait)
                attempt += 1


NO_RETRY = Retry(max_retry_time=0)
