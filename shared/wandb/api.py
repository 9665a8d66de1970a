"""W&B cloud source: projects and runs through the official `wandb.Api` client (history: wandb_history)."""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.base.concurrency import batched
from shared.base.errors import BadInput, Incomplete, describe, is_bug
from shared.base.events import Events
from shared.base.retry import NO_RETRY, PermanentFailure, Retry
from shared.base.text import without_userinfo
from shared.table.flatten import parse_object
from shared.table.schema import RunRecord
from shared.table.source import Changes
from shared.wandb.auth import Credentials
from shared.wandb.failures import login_failure, request_failure

if TYPE_CHECKING:
    import wandb

RUNS_PER_PAGE = 100
CORE_RETRIES = 3  # wandb-core's own attempts under each of ours


def connect(credentials: Credentials, timeout_s: float) -> wandb.Api:
    """A logged-in `wandb.Api`; a clear error for a bad key or an unreachable server."""
    os.environ.setdefault("WANDB_SILENT", "true")
    _private_client_logs()
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
        raise login_failure(error, credentials, timeout_s) from None


def _private_client_logs() -> None:
    """wandb-core logs each failed request with the server's error body (a server may echo the API key)
    to $WANDB_CACHE_DIR/wandb/logs, by default ~/.cache, readable by all; no setting turns that off.
    Unless the user chose that folder, it is a private one (mode 0700), removed when the script exits
    (after wandb's own exit hook, registered later, has stopped wandb-core)."""
    if os.environ.get("WANDB_CACHE_DIR"):
        return
    folder = tempfile.mkdtemp(prefix="run-tools-wandb-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["WANDB_CACHE_DIR"] = folder


def change_filter(filters: dict[str, Any], changes: Changes, unheld: int, events: Events) -> dict[str, Any]:
    """`filters` and "created or with a heartbeat since the cutoff", server-side; and, when the server has
    `unheld` runs the files do not hold complete (an offline run synced days later keeps its old times; a
    run that failed last time), the runs not among those too."""
    moment = changes.cutoff.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    wanted: list[dict[str, Any]] = [{"createdAt": {"$gte": moment}}, {"heartbeatAt": {"$gte": moment}}]
    if unheld:
        events.note(f"the server has {unheld} run(s) the files do not hold complete: fetching them too")
        wanted.append(not_held(changes))
    changed = {"$or": wanted}
    return {"$and": [filters, changed]} if filters else changed


def not_held(changes: Changes) -> dict[str, Any]:
    """The runs the files do not hold complete."""
    return {"name": {"$nin": sorted(changes.heartbeats)}}


def unheld_count(
    api: wandb.Api, entity: str, project: str, filters: dict[str, Any], changes: Changes, counted: int,
    retry: Retry = NO_RETRY,
) -> int:  # fmt: skip
    """How many runs of `filters` (`counted` in all) the files do not hold complete, as the server counts
    them by id: runs deleted on the server stay in the files, so comparing counts could pair a deleted
    run with a live one the files lack and never fetch it."""
    if not changes.heartbeats or not counted:
        return counted
    wanted = {"$and": [filters, not_held(changes)]} if filters else not_held(changes)
    return count_runs(api, entity, project, wanted, retry)


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
    except Incomplete:  # transient failures that outlasted the retries: not the user's fault
        raise
    except Exception as error:  # the client raises several types for an unknown entity
        if is_bug(error):
            raise
        failure = request_failure(error, f"projects of {entity}", server_of(api))
        if isinstance(failure, Incomplete):  # a server error or no answer (no retry left or asked for)
            raise failure from None
        raise BadInput(f"unknown W&B entity {entity!r} (or no access with this key): {error}") from None


def default_entity(api: wandb.Api) -> str:
    """The key's default entity, as the server names it (one request)."""
    try:
        return api.default_entity
    except Exception as error:
        raise request_failure(error, "the key's default entity", server_of(api)) from None


def server_of(api: wandb.Api) -> str:
    """The server `api` talks to, as it may be shown."""
    return without_userinfo(str(api.settings.get("base_url", "")))


def _utc(timestamp: Any) -> datetime | None:
    """A server time as UTC; None when there is none or it is not an ISO time."""
    if not isinstance(timestamp, str) or not timestamp:
        return None
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _runtime(summary: dict[str, Any]) -> float | None:
    runtime = summary.get("_runtime", (summary.get("_wandb") or {}).get("runtime"))
    return float(runtime) if isinstance(runtime, int | float) else None


def unwrap_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A run's config as logged: W&B wraps each top-level value once as {"value": ..., "desc": ...}.

    Exactly that wrapper is removed, nothing deeper (the client's own unwrapping also strips a logged
    {"value": 0.5, "scale": 2} to 0.5); W&B's internal keys are left out.
    """
    return {
        key: value["value"]
        if isinstance(value, dict) and "value" in value and value.keys() <= _WRAPPER
        else value
        for key, value in raw.items()
        if key not in INTERNAL_CONFIG_KEYS
    }


_WRAPPER = {"value", "desc"}
INTERNAL_CONFIG_KEYS = frozenset({"_wandb", "wandb_version"})


@dataclass
class PagedRun:
    """One run of a Runs page: the client's Run, the fields as the server sent them, and what could not be read.

    A config or summary that is not a JSON object of bounded depth is left out of `run` and listed in
    `problems`; the export keeps its raw text instead of flattening it.
    """

    run: Any
    node: dict[str, Any]
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    problems: list[str]


def run_record(paged: PagedRun, events: Events) -> RunRecord:
    """A paged run as the project's RunRecord (config and summary as the server sent them, unwrapped once)."""
    node, run = paged.node, paged.run
    summary = paged.summary or {}
    user = node.get("user") if isinstance(node.get("user"), dict) else {}
    tags = node.get("tags")
    tags = [tags] if isinstance(tags, str) else tags if isinstance(tags, list) else []
    # A field of an odd type costs that field at most, never the run or its project.
    times = {name: _utc(node.get(name)) for name in ("createdAt", "heartbeatAt")}
    for name, moment in times.items():
        if moment is None and node.get(name) not in (None, ""):
            events.warn(
                f"{run.entity}/{run.project}: run {run.id}: {name} {str(node.get(name))[:100]!r}"
                " is not a time; exported without it"
            )
    return RunRecord(
        id=run.id,
        entity=run.entity,
        project=run.project,
        name=_text(node.get("displayName")),
        state=_text(node.get("state")),
        created_at=times["createdAt"],
        heartbeat_at=times["heartbeatAt"],
        runtime_s=_runtime(summary),
        tags=[text for tag in tags if (text := _text(tag)) is not None],
        group=_text(node.get("group")),
        job_type=_text(node.get("jobType")),
        sweep=_text(node.get("sweepName")),
        user=_text(user.get("username") or user.get("name")),
        notes=_text(node.get("notes")),
        url=without_userinfo(run.url) if run.url else None,
        git_commit=_text(node.get("commit")) or None,
        config=unwrap_config(paged.config) if paged.config is not None else {},
        summary=summary,
        raw_config=None if paged.config is not None else _text(node.get("config")),
        raw_summary=None if paged.summary is not None else _text(node.get("summaryMetrics")),
    )


def _text(value: Any) -> str | None:
    """A field the server should send as text, as text (JSON for an object or a list)."""
    if isinstance(value, str) or value is None:
        return value
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


class RunPages:
    """The runs of one query, oldest first, through the client's own Runs query, one checked page at a time.

    Every reply is checked before it is used (the client trusts it): a page without its list of runs is
    fetched again, and so is one that brings no new run while the server says more follow, at most
    MAX_STALLED_PAGES times in a row; then the project fails. A run whose config or summary cannot be
    parsed costs only those fields; a run the client cannot take at all is named in `failed`.
    `reported` is the server's run count for the query, from the latest page.

    Pages are positions in a list: a run added or deleted while we page shifts the runs after it, so a
    live run can be skipped while the totals still agree. When the count changes between pages or the
    runs seen differ from it, the ids are listed again (the client's lightweight query) and the runs
    not seen are fetched by id (`recover`).
    """

    def __init__(
        self,
        api: wandb.Api,
        entity: str,
        project: str,
        filters: dict[str, Any],
        retry: Retry = NO_RETRY,
        *,
        recover: bool = True,
    ) -> None:
        self.api, self.entity, self.project, self.filters, self.retry = api, entity, project, filters, retry
        self.recover = recover
        self.changed = False  # the runs changed while we paged (then `reported` is the count after)
        self.deleted: list[str] = []  # runs seen, then deleted while we paged
        self.what = f"runs of {entity}/{project}"
        # Only the query text and variables are borrowed (the client may look up the default entity here).
        self._query = retry.call(
            self.what,
            lambda: api.runs(
                f"{entity}/{project}",
                filters=filters,
                order="+created_at",
                per_page=RUNS_PER_PAGE,
                lazy=False,
            ),
        )
        self.failed: dict[str, str] = {}
        self.reported, self._first = self._page(None)

    def _page(self, cursor: str | None) -> tuple[int, tuple[list[dict[str, Any]], str | None, bool]]:
        """(run count, (edges, next cursor, more follow)) of the page after `cursor`, retried while malformed."""
        return _checked_request(self._query, RUNS_PER_PAGE, cursor, self.what, self.retry)

    def __iter__(self) -> Iterator[PagedRun]:
        seen: set[str] = set()
        yield from self._pages(seen)
        if self.recover:
            yield from self._recovered(seen)

    def _pages(self, seen: set[str]) -> Iterator[PagedRun]:
        page, stalled, counts = self._first, 0, {self.reported}
        while True:
            edges, cursor, more = page
            fresh = 0
            for edge in edges:
                node = edge.get("node") if isinstance(edge, dict) else None
                name = node.get("name") if isinstance(node, dict) else None
                if not isinstance(name, str) or not name:
                    self.failed[f"#{len(seen) + len(self.failed) + 1}"] = (
                        "the server sent a run without an id"
                    )
                    continue
                if name in seen or name in self.failed:
                    continue
                seen.add(name)
                fresh += 1
                paged = self._paged(node)
                if paged is not None:
                    yield paged
            if not more:
                self.changed = len(counts) > 1
                return
            stalled = 0 if fresh else stalled + 1
            if stalled >= MAX_STALLED_PAGES:
                raise Incomplete(
                    f"{self.what}: the server sent {stalled} pages in a row without a new run although it"
                    f" said more follow (after {len(seen)} of {self.reported} runs)"
                )
            self.reported, page = self._page(cursor if cursor else None)
            counts.add(self.reported)

    def _recovered(self, seen: set[str]) -> Iterator[PagedRun]:
        """The runs the pages skipped, when the runs changed while we paged or those seen differ from the
        count: the ids listed again, and those not seen fetched by id (no position to shift). A listing
        is trusted once its count held while it paged; after MAX_LISTINGS that did not hold, the project
        is incomplete (`failed` says why), as is a run listed but not found by id."""
        if not self.changed and len(seen) + len(self.failed) == self.reported:
            return
        self.changed = True
        for _ in range(MAX_LISTINGS):
            listed, steady = self._listed_ids()
            self.deleted = sorted(seen - set(listed))
            missed = [run_id for run_id in listed if run_id not in seen and run_id not in self.failed]
            for names in batched(missed, RUNS_PER_PAGE):
                by_id = {"name": {"$in": names}}
                wanted = {"$and": [self.filters, by_id]} if self.filters else by_id
                again = RunPages(self.api, self.entity, self.project, wanted, self.retry, recover=False)
                for paged in again:
                    seen.add(paged.run.id)
                    yield paged
                self.failed |= again.failed
            for run_id in missed:
                if run_id not in seen and run_id not in self.failed:
                    self.failed[run_id] = "the server listed it, then did not find it by id"
            if steady:
                return
        self.failed[UNLISTED] = (
            f"the runs kept changing while they were listed ({MAX_LISTINGS} times): runs may be missing"
        )

    def _listed_ids(self) -> tuple[list[str], bool]:
        """Every run id of the query, in order, through the client's lightweight Runs query (no config or
        summary), and whether its run count held while it paged; `reported` becomes its last count."""
        query = self.retry.call(
            self.what,
            lambda: self.api.runs(
                f"{self.entity}/{self.project}",
                filters=self.filters,
                order="+created_at",
                per_page=ID_PAGE,
                lazy=True,
            ),
        )
        ids: dict[str, None] = {}
        cursor, counts, stalled = None, set(), 0
        while True:
            self.reported, (edges, cursor, more) = _checked_request(
                query, ID_PAGE, cursor, self.what, self.retry
            )
            counts.add(self.reported)
            before = len(ids)
            for edge in edges:
                node = edge.get("node") if isinstance(edge, dict) else None
                name = node.get("name") if isinstance(node, dict) else None
                if isinstance(name, str) and name:
                    ids[name] = None
            if not more:
                return list(ids), len(counts) == 1
            stalled = 0 if len(ids) > before else stalled + 1
            if stalled >= MAX_STALLED_PAGES:
                raise Incomplete(
                    f"{self.what}: listing the run ids again, the server sent {stalled} pages in a row"
                    " without a new run although it said more follow"
                )

    def _paged(self, node: dict[str, Any]) -> PagedRun | None:
        from wandb.apis.public import Run

        fields, parsed, problems = dict(node), {}, []
        for name in ("config", "summaryMetrics", "systemMetrics"):
            value, problem = parse_object(node.get(name))
            fields[name], parsed[name] = value or {}, value
            if problem:
                problems.append(f"{name}: {problem}")
        try:
            run = Run(self._query._service_api, self.entity, self.project, node["name"], fields, lazy=False)
        except Exception as error:  # the client's parsing of the other fields
            if is_bug(error):
                raise
            self.failed[node["name"]] = f"the W&B client could not read it ({describe(error)})"
            return None
        return PagedRun(run, node, parsed["config"], parsed["summaryMetrics"], problems)


MAX_STALLED_PAGES = 3
MAX_LISTINGS = 3  # listings of the ids when the runs change while we page
UNLISTED = "(unlisted)"  # in `failed`: runs the listings may have missed
ID_PAGE = 1000  # run ids per page of the lightweight listing


def _checked_page(response: Any) -> tuple[int, tuple[list[dict[str, Any]], str | None, bool]]:
    """A Runs reply's run count, edges, next cursor and whether more follow; MalformedReply when it lacks them."""
    project = response.get("project") if isinstance(response, dict) else None
    if project is None:
        raise PermanentFailure("the server knows no such project (or this key cannot see it)")
    connection = project.get("runs") if isinstance(project, dict) else None
    edges = connection.get("edges") if isinstance(connection, dict) else None
    page_info = connection.get("pageInfo") if isinstance(connection, dict) else None
    count = project.get("runCount")
    if not isinstance(edges, list) or not isinstance(page_info, dict) or not isinstance(count, int):
        raise MalformedReply("the server's page of runs lacks its runs, page info or run count")
    cursor = page_info.get("endCursor")
    if edges and isinstance(edges[-1], dict) and edges[-1].get("cursor"):
        cursor = edges[-1]["cursor"]  # as the client pages: after the last edge it was given
    return count, (edges, cursor if isinstance(cursor, str) else None, bool(page_info.get("hasNextPage")))


class MalformedReply(Incomplete):
    """A reply without the fields every reply of its kind has (a transient fault: retried)."""


def count_runs(
    api: wandb.Api, entity: str, project: str, filters: dict[str, Any], retry: Retry = NO_RETRY
) -> int:
    """The server's run count for `filters`: one request for a page of one run."""
    what = f"run count of {entity}/{project}"
    runs = retry.call(what, lambda: api.runs(f"{entity}/{project}", filters=filters, per_page=1))
    count, _ = _checked_request(runs, 1, None, what, retry)
    return count


def _checked_request(
    runs: Any, per_page: int, cursor: str | None, what: str, retry: Retry
) -> tuple[int, tuple[list[dict[str, Any]], str | None, bool]]:
    """One Runs request of the client's `runs` query (its text and variables), checked by `_checked_page`."""
    variables = {**runs.variables, "perPage": per_page, "cursor": cursor}
    return retry.call(what, lambda: _checked_page(runs._service_api.execute_graphql(runs.QUERY, variables)))


def reachable_entities(api: wandb.Api) -> list[tuple[str, str]]:
    """The key's own entity and its teams, as (name, kind) pairs."""
    try:
        viewer = api.viewer
    except Exception as error:
        raise request_failure(error, "the key's entities", server_of(api)) from None
    entities = [(viewer.entity or viewer.username, "user")]
    entities += [(team, "team") for team in viewer.teams if team != entities[0][0]]
    return entities


def project_stats(api: wandb.Api, entity: str, project: str) -> dict[str, Any]:
    """Run count, finished count and last run time of a project: two one-run requests."""
    try:
        newest = api.runs(f"{entity}/{project}", order="-created_at", per_page=1)
        total = len(newest)
        finished = (
            len(api.runs(f"{entity}/{project}", filters={"state": "finished"}, per_page=1)) if total else 0
        )
    except Exception as error:
        raise request_failure(error, f"runs of {entity}/{project}", server_of(api)) from None
    last = _utc(newest[0]._attrs.get("createdAt")) if total else None
    return {
        "project": project,
        "runs": total,
        "finished": finished,
        "last_run": last.isoformat() if last else None,
    }
