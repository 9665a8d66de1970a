"""Case outcomes computed a batch at a time, a few cases at once, when a test first asks for one of them;
and the work units `pytest -n` hands out whole to one worker each (tests/conftest.py, `--dist loadgroup`).

A table-driven module (the bad-input corpus, the hostile sweep) runs each case's scripts as subprocesses,
mostly interpreter start-up and waiting on a server: its cases run a few at a time in threads, and each test
then checks one case's outcome. A batch is one work unit, so under `pytest -n` the batches spread over the
workers and no case runs twice; every other test module is one work unit, so that its module-scoped
fixtures are built once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import pytest

Case = TypeVar("Case")
Outcome = TypeVar("Outcome")

# A batched test (its node id without the parameters) -> the batch of a case, from the case's id.
BATCHED: dict[str, Callable[[str], str]] = {
    # A category (a..g): its cases' ids start with it.
    "tests/test_hostile_sweep.py::test_hostile_case": lambda case_id: case_id.split("-", 1)[0],
    # One batch: the cases share inputs, which each worker running a batch would build again.
    "tests/test_bad_input.py::test_bad_input": lambda case_id: "all",
}


def work_unit(nodeid: str) -> str:
    """What `pytest -n` runs whole on one worker: a batch of a batched test, or else a test module."""
    test, bracket, params = nodeid.partition("[")
    if bracket and test in BATCHED:
        return f"{test}[{BATCHED[test](params.removesuffix(']'))}]"
    return nodeid.split("::", 1)[0]


def selected_params(request: pytest.FixtureRequest, name: str = "case") -> list[Any]:
    """The values of parameter `name` of this module's tests that the session selected (-k, node ids)."""
    return [
        item.callspec.params[name]
        for item in request.session.items
        if item.module is request.module and name in getattr(getattr(item, "callspec", None), "params", {})
    ]


class Batches(Generic[Case, Outcome]):
    """`batches[case_id]`: that case's outcome; the first ask for a case runs its whole batch, `workers`
    cases at a time. `test` is the batched test's key in BATCHED."""

    def __init__(
        self,
        test: str,
        cases: Iterable[Case],
        *,
        case_id: Callable[[Case], str],
        attempt: Callable[[Case], Outcome],
        workers: int = 3,
    ) -> None:
        self._batch_of = BATCHED[test]
        self._cases = {case_id(case): case for case in cases}
        self._attempt = attempt
        self._workers = workers
        self._outcomes: dict[str, Outcome] = {}

    def __getitem__(self, wanted: str) -> Outcome:
        if wanted not in self._outcomes:
            batch = [one for one in self._cases if self._batch_of(one) == self._batch_of(wanted)]
            with ThreadPoolExecutor(max_workers=self._workers) as pool:
                futures = {one: pool.submit(self._attempt, self._cases[one]) for one in batch}
                self._outcomes |= {one: future.result() for one, future in futures.items()}
        return self._outcomes[wanted]
