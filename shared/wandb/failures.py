"""What a failed W&B request means for the user, in one line with the right error type: no W&B API at the
URL (exit 2), a key the server rejected or the client refused before sending it (2), a server error (1),
a server that cannot be reached (1)."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.base.errors import BadInput, Incomplete, RunToolsError, describe, is_bug
from shared.base.retry import PermanentFailure, is_transient
from shared.base.text import without_userinfo
from shared.wandb.auth import Credentials

PROBE_TIMEOUT_S = 10.0
# How wandb.Api() words a login check that reached (or tried to reach) the server; an error before it
# is mostly the client's own check of the key's form, made before any request.
_SERVER_CHECK = ("Failed to verify credentials with", "An error occurred while verifying credentials with")
_PROBE_QUERY = b'{"query": "query Viewer { viewer { id } }"}'


Item = TypeVar("Item")


@dataclass(frozen=True)
class Answer:
    """How the server's GraphQL endpoint answered: an HTTP status, or none (`unreachable` says why)."""

    status: int | None = None
    body: bytes = b""
    content_type: str = ""
    location: str = ""
    unreachable: str | None = None


def login_failure(error: Exception, credentials: Credentials, timeout_s: float) -> RunToolsError:
    """The error to raise for a failed `wandb.Api()` login check. wandb-core gives the HTTP status of a
    4xx; for a 5xx, an HTML page or a failed connection it gives at most text, or nothing after a timeout:
    then the endpoint is asked once more, directly, to tell those apart."""
    text, server = str(error), credentials.server
    if "wandb-core exited" in text:  # under `ulimit -v 1000000` it could not start its threads
        return Incomplete(f"the W&B client's service stopped before it checked the key ({describe(error)})")
    if not text.startswith(_SERVER_CHECK):
        if _refused_locally(credentials.api_key):
            return BadInput(
                f"the API key from {credentials.source} is malformed: {describe(error)} (checked locally by"
                f" the W&B client; nothing was sent to {server})"
            )
        return Incomplete(
            f"the W&B client failed before it checked the key with {server} ({describe(error)})"
        )
    status = _http_status(error.__cause__)
    answer = Answer(status=status) if status else probe(credentials, min(timeout_s, PROBE_TIMEOUT_S))
    return _login_verdict(answer, credentials, timeout_s)


_KINDS = {408: "request timeout", 429: "too many requests"}


def _refused_locally(api_key: str) -> bool:
    """Whether the client's own check of a key's form, made before any request, refuses it."""
    try:
        from wandb.sdk.lib.wbauth.validation import check_api_key
    except ImportError:  # another client release: its login raised no other error
        return True
    return check_api_key(api_key) is not None


def _login_verdict(answer: Answer, credentials: Credentials, timeout_s: float) -> RunToolsError:
    server, status = credentials.server, answer.status
    endpoint = f"{server}/graphql"
    if answer.unreachable:
        return Incomplete(f"W&B server {server} did not answer: {answer.unreachable}")
    assert status is not None
    if status in (401, 403):
        return BadInput(f"W&B rejected the API key from {credentials.source} for {server} (HTTP {status})")
    if status >= 500 or status in (408, 429):
        return Incomplete(
            f"W&B server {server} failed with HTTP {status} ({_KINDS.get(status, 'a server error')}):"
            " the key was not checked"
        )
    if 300 <= status < 400:
        target = without_userinfo(answer.location).split("?")[0].split("#")[0]  # a query may hold a token
        where = f" to {target}" if target else ""
        return BadInput(f"no W&B API at {server}: {endpoint} redirects{where} (check WANDB_BASE_URL)")
    if status != 200:
        return BadInput(f"no W&B API at {server}: {endpoint} answered HTTP {status} (check WANDB_BASE_URL)")
    try:
        reply = json.loads(answer.body)
    except ValueError:
        html = "html" in answer.content_type.lower() or answer.body.lstrip()[:1] == b"<"
        what = "an HTML page" if html else "an answer that is not JSON"
        return BadInput(
            f"no W&B API at {server}: {endpoint} answered with {what}, not W&B's (check WANDB_BASE_URL)"
        )
    data = reply.get("data") if isinstance(reply, dict) else None
    if isinstance(data, dict) and "viewer" in data and not data["viewer"] and not reply.get("errors"):
        return BadInput(f"W&B rejected the API key from {credentials.source} for {server} (no user for it)")
    if not (isinstance(data, dict) and data.get("viewer")):
        return BadInput(
            f"no W&B API at {server}: {endpoint} answered JSON that is not W&B's (check WANDB_BASE_URL)"
        )
    # The endpoint answers now: the client's check timed out or met a passing failure.
    return Incomplete(
        f"W&B server {server} did not answer the login check within {timeout_s:g} s (try again)"
    )


def probe(credentials: Credentials, timeout_s: float) -> Answer:
    """One request to the GraphQL endpoint, as the client sends it (the key as Basic auth), never following
    a redirect (the key would go along)."""
    token = base64.b64encode(f"api:{credentials.api_key}".encode()).decode()
    request = urllib.request.Request(
        f"{credentials.server}/graphql",
        data=_PROBE_QUERY,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout_s) as reply:
            return Answer(reply.status, reply.read(1 << 16), reply.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as error:
        return Answer(error.code, b"", "", error.headers.get("Location", "") if error.headers else "")
    except urllib.error.URLError as error:
        return Answer(unreachable=_network_reason(error.reason, timeout_s))
    except (TimeoutError, OSError) as error:
        return Answer(unreachable=_network_reason(error, timeout_s))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is raised as an HTTPError


def _network_reason(reason: object, timeout_s: float) -> str:
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"nothing within {timeout_s:g} s (too slow or unreachable)"
    if isinstance(reason, ConnectionRefusedError):
        detail = "connection refused"
    elif isinstance(reason, socket.gaierror):
        detail = "its host name does not resolve"
    elif isinstance(reason, OSError) and reason.strerror:
        detail = reason.strerror
    else:
        detail = describe(reason) if isinstance(reason, BaseException) else str(reason)
    return f"unreachable ({detail})"


def _http_status(error: BaseException | None) -> int | None:
    """The HTTP status wandb-core reported with a failed request (its WandbApiFailedError), if any."""
    status = getattr(getattr(error, "response", None), "http_status", None)
    return status if isinstance(status, int) and status else None


def request_failure(error: Exception, what: str, server: str | None) -> Exception:
    """The error to raise for a request that failed after the login: the user's (an unknown project, a key
    without access, a query the server refused: exit 2) or the server's or network's (exit 1)."""
    if is_bug(error) or (isinstance(error, RunToolsError) and not isinstance(error, PermanentFailure)):
        return error
    at = f"W&B server {server}" if server else "the W&B server"
    status = _http_status(error) or _http_status(error.__cause__)
    if isinstance(error, PermanentFailure) or str(error).startswith("input:"):
        return BadInput(f"{what}: {describe(error)}")
    if status in (401, 403):
        return BadInput(f"{what}: {at} refused it (HTTP {status}): the key has no access")
    if "did not respond in time" in str(error):  # the client stopped waiting; wandb-core may be retrying
        return Incomplete(f"{what}: {at} did not answer in time")
    if is_transient(error) or status:
        return Incomplete(f"{what}: {at} failed: {describe(error)}")
    return BadInput(f"{what}: {describe(error)}")


def reported(items: Iterable[Item], what: str, server: str | None) -> Iterator[Item]:
    """`items` as they come, a failure of the requests behind them said as `request_failure` says it."""
    try:
        yield from items
    except Exception as error:
        raise request_failure(error, what, server) from None
