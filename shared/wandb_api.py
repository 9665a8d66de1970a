"""W&B cloud source: projects and runs through the official `wandb.Api` client (history: wandb_history)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from shared.auth import Credentials, without_userinfo
from shared.cli import ToolFailure, UsageError
from shared.retry import NO_RETRY, Retry
from shared.schema import RunRecord

if TYPE_CHECKING:
    import wandb

RUNS_PER_PAGE = 100
CORE_RETRIES = 3  # wandb-core's own attempts under each of ours


def add_timeout_argument(parser: argparse.ArgumentParser) -> None:
    """`--timeout S`: how long to wait for one W&B request."""
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds to wait for one W&B request (default: 60)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def connect(credentials: Credentials, timeout_s: float) -> wandb.Api:
    """A logged-in `wandb.Api`; a clear error for a bad key or an unreachable server."""
    os.environ.setdefault("WANDB_SILENT", "true")
    # wandb-core retries a failed request by itself for over 5 minutes, and goes on after this
    # process stopped waiting (`timeout_s`); bounded here, our Retry budget is what counts.
    os.environ.setdefault("WANDB__GRAPHQL_RETRY_MAX", str(CORE_RETRIES))
    os.environ.setdefault("WANDB_HTTP_TIMEOUT", str(math.ceil(timeout_s)))  # wandb reads it as int
    import wandb
    from wandb.errors import CommError

    try:
        return wandb.Api(
            api_key=credentials.api_key, overrides={"base_url": credentials.base_url}, timeout=timeout_s
        )
    except CommError as error:
        raise _connection_error(error, credentials) from None


def _connection_error(error: Exception, credentials: Credentials) -> Exception:
    text = str(error)
    if "did not respond in time" in text or "connection refused" in text.lower():
        return ToolFailure(f"W&B server {credentials.server} did not answer (unreachable or too slow)")
    return UsageError(f"W&B rejected the API key from {credentials.source} for {credentials.server}")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`7d`, `24h`, `2w`, `30m` before now, or an ISO date/time (UTC unless it says otherwise)."""
    now = now or datetime.now(UTC)
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    amount, unit = text[:-1], text[-1:].lower()
    if unit in units and amount.isdigit():
        try:
            return now - timedelta(**{units[unit]: int(amount)})
        except OverflowError:
            raise UsageError(f"bad --since {text!r}: that is before the year 1") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"bad --since {text!r}: use 7d, 24h, 2w, 30m or an ISO date like 2026-01-18"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def created_since_filter(since: datetime | None) -> dict[str, Any]:
    """The server-side Mongo-style filter on creation time (W&B stores naive UTC)."""
    if since is None:
        return {}
    naive_utc = since.astimezone(UTC).replace(tzinfo=None)
    return {"createdAt": {"$gte": naive_utc.isoformat(timespec="seconds")}}


def project_names(api: wandb.Api, entity: str, retry: Retry = NO_RETRY) -> list[str]:
    """Every project of `entity`, sorted; a clear error when the entity is unknown or not reachable."""
    try:
        return sorted(
            project.name
            for project in retry.call(f"projects of {entity}", lambda: list(api.projects(entity)))
        )
    except ToolFailure:  # transient failures that outlasted the retries: not the user's fault
        raise
    except Exception as error:  # the client raises several types for an unknown entity
        raise UsageError(f"unknown W&B entity {entity!r} (or no access with this key): {error}") from None


def _utc(timestamp: str | None) -> datetime | None:
    if not timestamp:
        return None
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _runtime(summary: dict[str, Any]) -> float | None:
    runtime = summary.get("_runtime", (summary.get("_wandb") or {}).get("runtime"))
    return float(runtime) if isinstance(runtime, int | float) else None


def run_record(run: Any) -> RunRecord:
    """A `wandb.apis.public.Run` (loaded with lazy=False) as the project's RunRecord."""
    attrs = run._attrs  # the page's GraphQL node; reading it costs no request
    summary = dict(run.summary_metrics)
    user = attrs.get("user") or {}
    return RunRecord(
        id=run.id,
        entity=run.entity,
        project=run.project,
        name=run.name,
        state=run.state,
        created_at=_utc(attrs.get("createdAt")),
        heartbeat_at=_utc(attrs.get("heartbeatAt")),
        runtime_s=_runtime(summary),
        tags=list(run.tags or []),
        group=attrs.get("group"),
        job_type=attrs.get("jobType"),
        sweep=run.sweep_name,
        user=user.get("username") or user.get("name"),
        notes=attrs.get("notes"),
        url=without_userinfo(run.url) if run.url else None,
        config=dict(run.config),
        summary=summary,
    )


def iter_runs(
    api: wandb.Api, entity: str, project: str, filters: dict[str, Any], retry: Retry = NO_RETRY
) -> tuple[int, Iterator[Any]]:
    """The project's matching run count and an iterator over its runs, oldest first, in full pages.

    A failed page is fetched again by `retry`; indexing, unlike `next()`, skips no run when a page fails.
    """
    what = f"runs of {entity}/{project}"
    runs = retry.call(  # the client may look up the key's default entity here
        what,
        lambda: api.runs(
            f"{entity}/{project}", filters=filters, order="+created_at", per_page=RUNS_PER_PAGE, lazy=False
        ),
    )

    def run_at(index: int) -> Any:
        try:
            return runs[index]
        except IndexError:
            return None

    def each_run() -> Iterator[Any]:
        index = 0
        while (run := retry.call(what, partial(run_at, index))) is not None:
            yield run
            index += 1

    return retry.call(what, lambda: len(runs)), each_run()


def reachable_entities(api: wandb.Api) -> list[tuple[str, str]]:
    """The key's own entity and its teams, as (name, kind) pairs."""
    viewer = api.viewer
    entities = [(viewer.entity or viewer.username, "user")]
    entities += [(team, "team") for team in viewer.teams if team != entities[0][0]]
    return entities


def project_stats(api: wandb.Api, entity: str, project: str) -> dict[str, Any]:
    """Run count, finished count and last run time of a project: two one-run requests."""
    newest = api.runs(f"{entity}/{project}", order="-created_at", per_page=1)
    total = len(newest)
    finished = len(api.runs(f"{entity}/{project}", filters={"state": "finished"}, per_page=1)) if total else 0
    last = _utc(newest[0]._attrs.get("createdAt")) if total else None
    return {
        "project": project,
        "runs": total,
        "finished": finished,
        "last_run": last.isoformat() if last else None,
    }
