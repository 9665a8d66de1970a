"""Faults on the wire: export_runs.py retries them (with wandb-core's own retries underneath), or names what it lost."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from wandb.proto.wandb_api_pb2 import ApiErrorResponse
from wandb.sdk.lib.service.service_connection import WandbApiFailedError

from shared.base.errors import BadInput, Incomplete
from shared.base.retry import PermanentFailure, RetriesExhausted, Retry, is_transient
from tests.current_data import load_script
from tests.export_checks import ENTITY, assert_same_export, cron_standin, export_content
from tests.wandb_standin import HookResult, RandomFaults, RequestInfo, StandinServer

export_runs = load_script("export_runs")
BOTH = ["-e", ENTITY, "-p", "alpha,beta", "--include-history", "--workers", "4"]


@pytest.fixture
def wandb_standin() -> Iterator[StandinServer]:
    """Overrides the session server for `wandb_env`: these tests break the server on purpose."""
    with cron_standin() as server:
        yield server


def test_an_export_with_a_fifth_of_the_requests_failing_equals_a_clean_one(wandb_env, tmp_path, capsys):
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    assert export_runs.main([*BOTH, "-o", str(clean)]) == 0
    capsys.readouterr()
    # The login check is not retried by the export (an unreachable server stops it at once): spared.
    faults = RandomFaults(0.2, seed=7, stall_s=3, spare={"Viewer"})
    wandb_env.request_hook = faults
    try:
        argv = [*BOTH, "-o", str(faulty), "--timeout", "2", "--max-retry-time", "60", "--json"]
        assert export_runs.main(argv) == 0
    finally:
        wandb_env.request_hook = None
    captured = capsys.readouterr()
    assert json.loads(captured.out)["failed"] == []
    injected = sum(faults.injected.values())
    assert injected >= 5 and len(faults.injected) >= 4, faults.injected
    assert "; retrying in" in captured.err, "some faults outlast wandb-core's own retries"
    assert_same_export(export_content(faulty), export_content(clean))


def test_a_project_that_keeps_failing_is_named_and_the_others_are_complete(wandb_env, tmp_path, capsys):
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    assert export_runs.main([*BOTH, "-o", str(clean)]) == 0
    capsys.readouterr()
    listings: list[RequestInfo] = []

    def beta_is_down(request: RequestInfo) -> HookResult | None:
        """Projects are exported in order: every listing after cron/alpha's fails."""
        if request.operation == "Runs":
            listings.append(request)
            return HookResult(status=503) if len(listings) > 1 else None
        return None

    wandb_env.request_hook = beta_is_down
    try:
        with pytest.raises(Incomplete, match="not exported: cron/beta"):
            export_runs.main([*BOTH, "-o", str(faulty), "--timeout", "2", "--max-retry-time", "3"])
    finally:
        wandb_env.request_hook = None
    err = capsys.readouterr().err
    assert "error: cron/beta not exported: runs of cron/beta:" in err and "gave up after" in err
    got, want = export_content(faulty), export_content(clean)
    assert not any(name.startswith("cron_beta") for name in got), "nothing half-done at final paths"
    assert_same_export(got, {name: value for name, value in want.items() if name.startswith("cron_alpha")})


def test_permanent_errors_are_not_retried():
    def api_error(status: int) -> WandbApiFailedError:
        return WandbApiFailedError("failed", ApiErrorResponse(http_status=status))

    assert is_transient(api_error(500)) and is_transient(api_error(429)) and is_transient(api_error(0))
    assert not is_transient(api_error(404)) and not is_transient(api_error(401))
    assert not is_transient(WandbApiFailedError("input: entity nobody not found\n"))
    assert is_transient(WandbApiFailedError("unexpected EOF")) and is_transient(TimeoutError())
    assert not is_transient(BadInput("bad")) and not is_transient(PermanentFailure("gone"))
    assert is_transient(json.JSONDecodeError("Expecting value", "", 0))
    assert not is_transient(AttributeError("'HistoryFetcher' object has no attribute 'fetch'"))


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_backoff_grows_exponentially_with_jitter_and_stops_at_the_budget():
    clock = FakeTime()
    retry = Retry(
        max_retry_time=100, base_delay=1, max_delay=30, seed=3, sleep=clock.sleep, clock=lambda: clock.now
    )
    calls = []

    def always_down() -> None:
        calls.append(clock.now)
        raise ConnectionResetError("connection reset by peer")

    with pytest.raises(
        RetriesExhausted, match=r"listing: connection reset by peer \(gave up after"
    ) as caught:
        retry.call("listing", always_down)
    assert clock.now <= 100 and len(calls) == len(clock.sleeps) + 1
    for attempt, wait in enumerate(clock.sleeps):
        ceiling = min(30, 2**attempt)
        assert ceiling / 2 <= wait <= ceiling
    assert len(set(clock.sleeps[5:])) == len(clock.sleeps[5:]), "jittered, not in lockstep"
    assert f"after {len(calls)} attempts" in str(caught.value)


def test_retry_after_is_honoured_and_success_ends_the_retries():
    clock = FakeTime()
    retry = Retry(max_retry_time=60, base_delay=0.1, seed=1, sleep=clock.sleep, clock=lambda: clock.now)

    class RateLimited(Exception):
        response = type("Response", (), {"headers": {"Retry-After": "7"}, "status_code": 429})()

    outcomes = [RateLimited("429 Too Many Requests"), ConnectionError("dropped"), "done"]

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert retry.call("page", flaky) == "done"
    assert clock.sleeps[0] == 7 and clock.sleeps[1] < 1
