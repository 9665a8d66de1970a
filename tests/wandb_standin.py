"""A local stand-in for the W&B GraphQL backend and history-file storage that the real `wandb.Api()` talks to."""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import math
import random
import re
import socket
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeAlias
from urllib.parse import quote, unquote, urlsplit

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

FAKE_API_KEY = "5ca1ab1e" * 5
"""The 40-character key the stand-in accepts unless told otherwise."""

DEFAULT_NOW = datetime(2026, 11, 30, 12, 0, 0)
"""The fixed "now" (naive UTC, as W&B stores times) the default dataset's dates are relative to."""

HistoryRows: TypeAlias = list[dict[str, Any]]
HistorySource: TypeAlias = HistoryRows | pl.DataFrame | Callable[[], HistoryRows | pl.DataFrame]
"""Run history: row dicts as logged (each with `_step`), a wide frame, or a callable producing either lazily."""

# Operations whose shapes were checked against wandb 0.31.0 (Python sources and the wandb-core binary).
# Anything else is answered with a GraphQL error and recorded in `StandinServer.unknown_operations`.
KNOWN_OPERATIONS = frozenset(
    {
        # wandb-core
        "Viewer",
        "ServerFeaturesQuery",
        "RunParquetHistory",
        "HistoryPage",
        "SampledHistoryPage",
        "QueryRunInfo",
        "RunState",
        # Python public API
        "GetDefaultEntity",
        "GetViewer",
        "GetProjects",
        "GetProject",
        "GetTeamEntity",
        "IsProjectReadOnly",
        "Runs",
        "Run",
        "RunHistoryKeys",
        "RunFullHistory",
        "RunSampledHistory",
        "RunFiles",  # Run.files()
        # this project's own: the Run.files and Run.eventsLineCount fields of the server's schema
        "RunContents",  # shared.wandb.run_contents
        "RunEvents",  # shared.wandb.run_contents: the Run.events field for many runs
        "RunFilesListing",  # shared.wandb.run_files
    }
)

_TELEMETRY_PATHS = ("/sdk/otel/",)
_INTERNAL_HISTORY_KEYS = ("_step", "_timestamp", "_runtime")


# --------------------------------------------------------------------------------------------- dataset


@dataclass
class HistoryMeta:
    """What `historyKeys`/`historyLineCount` report, given up front so a lazy history need not be built."""

    last_step: int
    line_count: int
    key_types: dict[str, dict[str, int]]  # key -> {"number" | "string" | "histogram" | ...: row count}


@dataclass
class StandinRun:
    """One run as the backend knows it; `id` is W&B's run id (the GraphQL `name`)."""

    id: str
    display_name: str
    created_at: datetime  # naive UTC
    state: str = "finished"
    heartbeat_at: datetime | None = None
    tags: list[str] = field(default_factory=list)
    group: str | None = None
    job_type: str | None = None
    sweep_name: str | None = None
    user: str = "alice"
    notes: str | None = None
    commit: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # plain (unwrapped) values
    summary: dict[str, Any] = field(default_factory=dict)
    system_metrics: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None  # its wandb-metadata.json; None: the run has no such file
    files: dict[str, bytes] = field(default_factory=dict)  # its other files, by name (path in the run)
    served_files: dict[str, bytes] = field(default_factory=dict)  # a fault: bytes sent instead of `files`'
    # Its events stream (system metrics) as wandb-core sends it: rows of "system.<key>" samples, each with
    # `_timestamp`, `_runtime` and `_wandb: true` (or those rows as JSON lines, encoded once).
    events: list[dict[str, Any] | str] = field(default_factory=list)
    history: HistorySource | None = None
    live_from_step: int | None = None  # steps >= this are "live": not yet exported to parquet
    export_files: int = 1  # exported rows are split over this many parquet files
    history_meta: HistoryMeta | None = None
    # Faults: the text sent as the run's config / summaryMetrics instead of their JSON (bad JSON, deep
    # nesting, an unwrapped config), and columns left out of its exported history files (a wrong schema).
    raw_config: str | None = None
    raw_summary: str | None = None
    export_drop: tuple[str, ...] = ()
    # GraphQL fields of the run sent as given instead of its own (odd types: tags that are not a list,
    # a createdAt that is no time, a displayName that is a number, a null name).
    raw_fields: dict[str, Any] = field(default_factory=dict)

    def history_table(self) -> HistoryTable:
        """The run's history, built now (not cached here; the server keeps a small cache)."""
        source = self.history() if callable(self.history) else self.history
        if source is None:
            return HistoryTable.from_rows([])
        if isinstance(source, pl.DataFrame):
            return HistoryTable.from_frame(source)
        return HistoryTable.from_rows(source)


@dataclass
class StandinProject:
    name: str
    runs: list[StandinRun] = field(default_factory=list)
    created_at: datetime = DEFAULT_NOW - timedelta(days=90)
    user: str = "alice"
    read_only: bool = False
    internal_id: int = 0  # assigned by StandinDataset when 0
    _index: dict[str, StandinRun] = field(default_factory=dict, repr=False)
    _index_size: int = field(default=-1, repr=False)

    def run(self, run_id: str) -> StandinRun | None:
        if self._index_size != len(self.runs):
            self._index = {run.id: run for run in self.runs}
            self._index_size = len(self.runs)
        return self._index.get(run_id)


@dataclass
class StandinEntity:
    name: str
    is_team: bool = False
    projects: dict[str, StandinProject] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)


@dataclass
class StandinViewer:
    username: str = "alice"
    entity: str = "alice"
    name: str = "Alice Example"
    email: str = "alice@example.com"
    teams: list[str] = field(default_factory=list)
    admin: bool = False


@dataclass
class StandinDataset:
    """Entities → projects → runs, plus the key's viewer. Mutable: tests may add entities/projects/runs."""

    viewer: StandinViewer = field(default_factory=StandinViewer)
    entities: dict[str, StandinEntity] = field(default_factory=dict)
    now: datetime = DEFAULT_NOW

    def project(self, entity: str, name: str) -> StandinProject | None:
        owner = self.entities.get(entity)
        return owner.projects.get(name) if owner else None

    def add_project(
        self,
        entity: str,
        project: str | StandinProject,
        runs: Iterable[StandinRun] = (),
        *,
        is_team: bool = False,
    ) -> StandinProject:
        """Add (or extend) a project, creating its entity when new."""
        owner = self.entities.setdefault(entity, StandinEntity(entity, is_team=is_team))
        if isinstance(project, str):
            project = owner.projects.get(project) or StandinProject(
                project, created_at=self.now - timedelta(days=60)
            )
        owner.projects[project.name] = project
        project.runs.extend(runs)
        if not project.internal_id:
            project.internal_id = 1000 + sum(len(e.projects) for e in self.entities.values())
        return project


# --------------------------------------------------------------------------------------------- history


def _value_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return str(value.get("_type") or "map")
    if isinstance(value, list):
        return "list"
    return "unknown"


@dataclass
class HistoryTable:
    """A run's history as sparse rows (what `history`/`HistoryPage` serve) and as a wide export frame."""

    _rows: HistoryRows | None = None
    _frame: pl.DataFrame | None = None

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> HistoryTable:
        ordered: HistoryRows = []
        for i, row in enumerate(rows):
            row = dict(row)
            row.setdefault("_step", i)
            ordered.append(row)
        ordered.sort(key=lambda r: r["_step"])
        return cls(_rows=ordered)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> HistoryTable:
        if "_step" not in frame.columns:
            frame = frame.with_row_index("_step").with_columns(pl.col("_step").cast(pl.Int64))
        return cls(_frame=frame.sort("_step"))

    @property
    def rows(self) -> HistoryRows:
        if self._rows is None:
            assert self._frame is not None
            self._rows = [
                {key: _decode_cell(value) for key, value in row.items() if value is not None}
                for row in self._frame.iter_rows(named=True)
            ]
        return self._rows

    @property
    def frame(self) -> pl.DataFrame:
        """One row per step: `_step` int64, `_timestamp`/`_runtime` float64, numbers float64, else JSON strings."""
        if self._frame is None:
            self._frame = _rows_to_frame(self.rows)
        return self._frame

    @property
    def steps(self) -> list[int]:
        if self._rows is not None:
            return [int(row["_step"]) for row in self._rows]
        return self.frame["_step"].cast(pl.Int64).to_list()

    def meta(self) -> HistoryMeta:
        counts: dict[str, Counter[str]] = {}
        for row in self.rows:
            for key, value in row.items():
                counts.setdefault(key, Counter())[_value_type(value)] += 1
        steps = self.steps
        types = {key: dict(counter) for key, counter in counts.items()}
        return HistoryMeta(last_step=max(steps) if steps else -1, line_count=len(steps), key_types=types)


def _decode_cell(value: Any) -> Any:
    """Frame cells that hold JSON (media dicts, lists) back to Python values for the JSON-line history."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _rows_to_frame(rows: HistoryRows) -> pl.DataFrame:
    keys: dict[str, None] = dict.fromkeys(_INTERNAL_HISTORY_KEYS)
    for row in rows:
        keys.update(dict.fromkeys(row))
    columns: dict[str, pl.Series] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        present = [v for v in values if v is not None]
        if key == "_step":
            columns[key] = pl.Series(key, [int(row["_step"]) for row in rows], dtype=pl.Int64)
        elif key in _INTERNAL_HISTORY_KEYS:
            if present:
                columns[key] = pl.Series(
                    key, [None if v is None else float(v) for v in values], dtype=pl.Float64
                )
        elif present and all(isinstance(v, bool) for v in present):
            columns[key] = pl.Series(key, values, dtype=pl.Boolean)
        elif present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
            columns[key] = pl.Series(key, [None if v is None else float(v) for v in values], dtype=pl.Float64)
        else:
            columns[key] = pl.Series(
                key,
                [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values],
                dtype=pl.String,
            )
    return pl.DataFrame(list(columns.values())) if rows else pl.DataFrame(schema={"_step": pl.Int64})


def _frame_to_parquet(frame: pl.DataFrame) -> bytes:
    """Parquet bytes with plain arrow types: wandb-core's reader panics on large/view strings (polars' default)."""
    table = frame.to_arrow()
    fields = [
        pa.field(
            f.name,
            pa.string() if pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type) else f.type,
        )
        for f in table.schema
    ]
    buffer = io.BytesIO()
    pq.write_table(table.cast(pa.schema(fields)), buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------- filters


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()

_RUN_FIELDS: dict[str, str] = {
    "createdAt": "created_at",
    "created_at": "created_at",
    "heartbeatAt": "heartbeat_at",
    "heartbeat_at": "heartbeat_at",
    "updatedAt": "heartbeat_at",
    "state": "state",
    "name": "id",
    "id": "id",
    "displayName": "display_name",
    "display_name": "display_name",
    "tags": "tags",
    "group": "group",
    "jobType": "job_type",
    "job_type": "job_type",
    "sweep": "sweep_name",
    "sweepName": "sweep_name",
    "username": "user",
    "user": "user",
    "notes": "notes",
    "description": "notes",
    "commit": "commit",
}
_DATETIME_FIELDS = {"created_at", "heartbeat_at"}


class UnsupportedFilter(ValueError):
    """A filter field or operator the stand-in does not implement (reported loudly, never ignored)."""


def _lookup_path(value: Any, parts: list[str]) -> Any:
    """Nested lookup that also accepts dotted keys (`a.b` as a literal key or as a path)."""
    if not parts:
        return value
    if not isinstance(value, dict):
        return MISSING
    for size in range(len(parts), 0, -1):
        head = ".".join(parts[:size])
        if head in value:
            found = _lookup_path(value[head], parts[size:])
            if found is not MISSING:
                return found
    return MISSING


def _wrapped_config(config: dict[str, Any]) -> dict[str, Any]:
    return {key: {"desc": None, "value": value} for key, value in config.items()}


def run_field(run: StandinRun, path: str) -> Any:
    """A run's value for a filter/order path (`state`, `config.model.k`, `summary_metrics.loss`, ...)."""
    if path in _RUN_FIELDS:
        return getattr(run, _RUN_FIELDS[path])
    head, _, rest = path.partition(".")
    parts = rest.split(".") if rest else []
    if head == "config":
        # W&B's canonical form is `config.<key>.value`; `config.<key>` (plain values) is accepted too.
        lookups = [_wrapped_config(run.config), run.config]
        if parts and parts[-1] != "value":
            lookups.reverse()
        for source in lookups:
            found = _lookup_path(source, parts)
            if found is not MISSING:
                return found
        return MISSING
    if head in ("summary_metrics", "summaryMetrics", "summary"):
        return _lookup_path(run.summary, parts)
    if head in ("system_metrics", "systemMetrics"):
        return _lookup_path(run.system_metrics, parts)
    raise UnsupportedFilter(f"unsupported run field {path!r}")


def _as_naive_utc(value: Any) -> Any:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    return value


def _compare(left: Any, right: Any) -> int | None:
    """-1/0/1, or None when the two cannot be ordered (no match, as in Mongo)."""
    numeric = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        return None if type(left) is not type(right) else (left > right) - (left < right)
    if isinstance(left, numeric) and isinstance(right, numeric):
        if (isinstance(left, float) and math.isnan(left)) or (isinstance(right, float) and math.isnan(right)):
            return None
        return (left > right) - (left < right)
    if isinstance(left, str) and isinstance(right, str):
        return (left > right) - (left < right)
    if isinstance(left, datetime) and isinstance(right, datetime):
        return (left > right) - (left < right)
    return None


def _equal(left: Any, right: Any) -> bool:
    if left is MISSING:
        return right is None
    if isinstance(left, list) and not isinstance(right, list):
        return any(_equal(item, right) for item in left)
    return _compare(left, right) == 0 if _compare(left, right) is not None else left == right


def _operator(value: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return _equal(value, arg)
    if op == "$ne":
        return not _equal(value, arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if value is MISSING or value is None:
            return False
        candidates = value if isinstance(value, list) else [value]
        for candidate in candidates:
            order = _compare(candidate, arg)
            if (
                order is not None
                and {"$gt": order > 0, "$gte": order >= 0, "$lt": order < 0, "$lte": order <= 0}[op]
            ):
                return True
        return False
    if op == "$in":
        return any(_equal(value, item) for item in arg)
    if op == "$nin":
        return not any(_equal(value, item) for item in arg)
    if op == "$regex":
        candidates = value if isinstance(value, list) else [value]
        return any(isinstance(c, str) and re.search(arg, c) is not None for c in candidates)
    if op == "$exists":
        return (value is not MISSING and value is not None) == bool(arg)
    if op == "$not":
        return not _condition(value, arg, is_datetime=False)
    raise UnsupportedFilter(f"unsupported filter operator {op!r}")


def _condition(value: Any, condition: Any, *, is_datetime: bool) -> bool:
    if isinstance(condition, dict) and condition and all(key.startswith("$") for key in condition):
        return all(
            _operator(value, op, _as_naive_utc(arg) if is_datetime else arg) for op, arg in condition.items()
        )
    return _equal(value, _as_naive_utc(condition) if is_datetime else condition)


def run_matches(run: StandinRun, filters: Mapping[str, Any]) -> bool:
    """Mongo-style filters as W&B's `runs(filters:)` takes them."""
    for key, condition in filters.items():
        if key == "$and":
            if not all(run_matches(run, sub) for sub in condition):
                return False
        elif key == "$or":
            if not any(run_matches(run, sub) for sub in condition):
                return False
        elif key == "$nor":
            if any(run_matches(run, sub) for sub in condition):
                return False
        elif key.startswith("$"):
            raise UnsupportedFilter(f"unsupported top-level filter operator {key!r}")
        else:
            is_datetime = _RUN_FIELDS.get(key) in _DATETIME_FIELDS
            if not _condition(run_field(run, key), condition, is_datetime=is_datetime):
                return False
    return True


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is MISSING or value is None or (isinstance(value, float) and math.isnan(value)):
        return (3, 0)
    if isinstance(value, bool | int | float):
        return (0, float(value))
    if isinstance(value, datetime | str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True, default=str))


def sorted_runs(runs: list[StandinRun], order: str | None) -> list[StandinRun]:
    """`+created_at` (default), `-heartbeat_at`, `+config.lr.value`, `-summary_metrics.loss`, ..."""
    order = order or "+created_at"
    descending = order.startswith("-")
    path = order.lstrip("+-")
    keyed = [(_sort_key(run_field(run, path)), i, run) for i, run in enumerate(runs)]
    present = sorted((k for k in keyed if k[0][0] < 3), key=lambda k: (k[0], k[1]), reverse=descending)
    absent = [k for k in keyed if k[0][0] == 3]  # missing values last, either way
    return [run for _, _, run in present + absent]


# --------------------------------------------------------------------------------------------- GraphQL


_TOKEN = re.compile(
    r"""
    (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<spread>\.\.\.)
  | (?P<block>\"\"\"(?:\\\"\"\"|[^"]|"(?!""))*\"\"\")
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<punct>[!$&()\:=@\[\]{}|])
    """,
    re.VERBOSE,
)


@dataclass
class _Field:
    name: str
    alias: str | None
    args: dict[str, Any]  # value nodes
    selections: list[Any] | None


@dataclass
class _Spread:
    name: str


@dataclass
class _Inline:
    selections: list[Any]


@dataclass
class _Operation:
    kind: str
    name: str | None
    defaults: dict[str, Any]
    selections: list[Any]


@dataclass
class _Document:
    operations: list[_Operation]
    fragments: dict[str, list[Any]]


class GraphQLSyntaxError(ValueError):
    pass


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match:
                raise GraphQLSyntaxError(f"unexpected character {text[pos]!r} at {pos}")
            pos = match.end()
            kind = match.lastgroup or ""
            if kind != "skip":
                self.tokens.append((kind, match.group()))
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("eof", "")

    def take(self, value: str | None = None) -> str:
        kind, text = self.peek()
        if kind == "eof" or (value is not None and text != value):
            raise GraphQLSyntaxError(f"expected {value or 'token'}, got {text or 'end of query'!r}")
        self.pos += 1
        return text

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value and self.peek()[0] in ("punct", "spread", "name"):
            self.pos += 1
            return True
        return False

    def document(self) -> _Document:
        operations: list[_Operation] = []
        fragments: dict[str, list[Any]] = {}
        while self.peek()[0] != "eof":
            text = self.peek()[1]
            if text == "{":
                operations.append(_Operation("query", None, {}, self.selection_set()))
            elif text == "fragment":
                self.take()
                fragment = self.take()
                self.take("on")
                self.take()
                self.directives()
                fragments[fragment] = self.selection_set()
            elif text in ("query", "mutation", "subscription"):
                self.take()
                name = self.take() if self.peek()[0] == "name" else None
                defaults = self.variable_definitions()
                self.directives()
                operations.append(_Operation(text, name, defaults, self.selection_set()))
            else:
                raise GraphQLSyntaxError(f"unexpected {text!r}")
        return _Document(operations, fragments)

    def variable_definitions(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {}
        if not self.accept("("):
            return defaults
        while not self.accept(")"):
            self.take("$")
            name = self.take()
            self.take(":")
            self.type_ref()
            if self.accept("="):
                defaults[name] = _evaluate(self.value(), {})
            self.directives()
        return defaults

    def type_ref(self) -> None:
        if self.accept("["):
            self.type_ref()
            self.take("]")
        else:
            self.take()
        self.accept("!")

    def directives(self) -> None:
        while self.accept("@"):
            self.take()
            self.arguments()

    def arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.accept("("):
            while not self.accept(")"):
                name = self.take()
                self.take(":")
                args[name] = self.value()
        return args

    def value(self) -> Any:
        kind, text = self.peek()
        if text == "$" and kind == "punct":
            self.take()
            return ("var", self.take())
        if text == "[" and kind == "punct":
            self.take()
            items = []
            while not self.accept("]"):
                items.append(self.value())
            return ("list", items)
        if text == "{" and kind == "punct":
            self.take()
            fields = {}
            while not self.accept("}"):
                name = self.take()
                self.take(":")
                fields[name] = self.value()
            return ("object", fields)
        self.take()
        if kind == "number":
            return ("const", float(text) if any(c in text for c in ".eE") else int(text))
        if kind == "string":
            return ("const", json.loads(text))
        if kind == "block":
            return ("const", text[3:-3])
        return ("const", {"true": True, "false": False, "null": None}.get(text, text))

    def selection_set(self) -> list[Any]:
        self.take("{")
        selections: list[Any] = []
        while not self.accept("}"):
            if self.peek()[0] == "spread":
                self.take()
                if self.peek()[1] == "on" or self.peek()[1] in ("{", "@"):
                    if self.accept("on"):
                        self.take()
                    self.directives()
                    selections.append(_Inline(self.selection_set()))
                else:
                    selections.append(_Spread(self.take()))
                    self.directives()
                continue
            name = self.take()
            alias = None
            if self.accept(":"):
                alias, name = name, self.take()
            args = self.arguments()
            self.directives()
            sub = self.selection_set() if self.peek()[1] == "{" else None
            selections.append(_Field(name, alias, args, sub))
        return selections


def _evaluate(node: Any, variables: Mapping[str, Any]) -> Any:
    kind, payload = node
    if kind == "var":
        return variables.get(payload)
    if kind == "list":
        return [_evaluate(item, variables) for item in payload]
    if kind == "object":
        return {key: _evaluate(item, variables) for key, item in payload.items()}
    return payload


_OPERATION_NAME = re.compile(r"\b(query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)")


def operation_name(query: str) -> str | None:
    """The first named operation in a query text (wandb often sends an empty operationName)."""
    match = _OPERATION_NAME.search(re.sub(r"#[^\n\r]*", "", query))
    return match.group(2) if match else None


class GraphQLError(Exception):
    """Raised by resolvers; becomes an entry of the response's `errors`."""


Resolved: TypeAlias = Any  # dict[str, value | Callable[[dict], value]] | list | scalar


@dataclass
class _Execution:
    operation: str
    fragments: dict[str, list[Any]]
    variables: Mapping[str, Any]
    missing: list[str]

    def fields(self, selections: list[Any]) -> OrderedDict[str, list[_Field]]:
        grouped: OrderedDict[str, list[_Field]] = OrderedDict()
        for selection in selections:
            if isinstance(selection, _Field):
                grouped.setdefault(selection.alias or selection.name, []).append(selection)
            elif isinstance(selection, _Spread):
                if selection.name not in self.fragments:
                    raise GraphQLError(f"unknown fragment {selection.name}")
                for key, fields in self.fields(self.fragments[selection.name]).items():
                    grouped.setdefault(key, []).extend(fields)
            else:
                for key, fields in self.fields(selection.selections).items():
                    grouped.setdefault(key, []).extend(fields)
        return grouped

    def object(self, value: Mapping[str, Any], selections: list[Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, fields in self.fields(selections).items():
            first = fields[0]
            if first.name == "__typename":
                out[key] = value.get("__typename")
                continue
            if first.name not in value:
                self.missing.append(f"{self.operation}: {path}{first.name}")
                out[key] = None
                continue
            resolved = value[first.name]
            if callable(resolved):
                resolved = resolved(
                    {name: _evaluate(node, self.variables) for name, node in first.args.items()}
                )
            subselections = (
                [s for f in fields if f.selections for s in f.selections] if first.selections else None
            )
            out[key] = self.complete(resolved, subselections, f"{path}{first.name}.")
        return out

    def complete(self, value: Any, selections: list[Any] | None, path: str) -> Any:
        if value is None or selections is None:
            return value
        if isinstance(value, list):
            return [self.complete(item, selections, path) for item in value]
        if isinstance(value, Mapping):
            return self.object(value, selections, path)
        raise GraphQLError(f"{path.rstrip('.')} is a scalar but has a selection set")


# --------------------------------------------------------------------------------------------- server


@dataclass(frozen=True)
class RequestInfo:
    """What the per-request hook sees."""

    method: str
    path: str
    operation: str | None  # GraphQL operation name, or None for file requests


@dataclass(frozen=True)
class HookResult:
    """A hook's verdict: wait `delay_s`, then answer normally, or with `status` (an error body) if given.

    `headers` go out with that status (e.g. `Retry-After`); `body` replaces the error body (with
    `status` 200 when none is given: a malformed answer), sent as `content_type`; `drop` closes the
    connection unanswered.
    """

    delay_s: float = 0.0
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str = "application/json"
    drop: bool = False


RequestHook: TypeAlias = Callable[[RequestInfo], HookResult | None]


class RandomFaults:
    """A request hook failing a `rate` of the requests (seeded), each with a fault drawn at random.

    Faults: HTTP 500/502/503, 429 with `Retry-After`, a stall of `stall_s` (past the client's timeout),
    a dropped connection, and a malformed body (cut-off JSON, or a parquet file's first bytes).
    Operations named in `spare` are never failed. `injected` counts the faults by kind.
    """

    KINDS = ("500", "502", "503", "429", "stall", "drop", "malformed")

    def __init__(self, rate: float, seed: int, *, stall_s: float, spare: Iterable[str] = ()) -> None:
        self.rate, self.stall_s, self.spare = rate, stall_s, set(spare)
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def __call__(self, request: RequestInfo) -> HookResult | None:
        if request.operation in self.spare:
            return None
        with self._lock:
            if self._random.random() >= self.rate:
                return None
            kind = self._random.choice(self.KINDS)
            self.injected[kind] += 1
        if kind == "429":
            return HookResult(status=429, headers={"Retry-After": "1"})
        if kind == "stall":
            return HookResult(delay_s=self.stall_s)
        if kind == "drop":
            return HookResult(drop=True)
        if kind == "malformed":
            return HookResult(body=b'{"data": {"project": {"runs' if request.operation else b"PAR1\x15\x04")
        return HookResult(status=int(kind))


def _gql_id(*parts: object) -> str:
    return base64.b64encode(":".join(str(p) for p in parts).encode()).decode()


def _timestamp(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") if moment else None


def _encode_cursor(position: int) -> str:
    return base64.b64encode(f"standin-cursor:{position}".encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    """Position of the last item already returned (-1 when starting)."""
    if not cursor:
        return -1
    try:
        text = base64.b64decode(cursor).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise GraphQLError(f"invalid cursor {cursor!r}") from None
    prefix, _, position = text.partition(":")
    if prefix != "standin-cursor" or not position.isdigit():
        raise GraphQLError(f"invalid cursor {cursor!r}")
    return int(position)


def _connection(
    items: list[Any], after: str | None, first: int | None, node: Callable[[Any], Any]
) -> dict[str, Any]:
    start = _decode_cursor(after) + 1
    size = 50 if first is None else max(first, 0)
    page = items[start : start + size]
    edges = [{"node": node(item), "cursor": _encode_cursor(start + i)} for i, item in enumerate(page)]
    return {
        "edges": edges,
        "pageInfo": {
            "__typename": "PageInfo",
            "endCursor": edges[-1]["cursor"] if edges else None,
            "hasNextPage": start + size < len(items),
            "hasPreviousPage": start > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
        },
        "totalCount": len(items),
    }


def _json_line(row: Mapping[str, Any]) -> str:
    return json.dumps(row)  # NaN/Infinity as bare tokens, as W&B sends them inside JSON strings


def _finite(value: Any) -> Any:
    """JSON-typed (not string) fields cannot carry NaN/Infinity in strict JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class _HTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (it timed out on a stalled answer, or the hook dropped it) is no error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class StandinServer:
    """The stand-in backend: `POST /graphql`, parquet history files under `/files/`, telemetry sink.

    Attributes a test may read or set:
        requests: count of GraphQL operations (by name) and file requests (`GET /files`, `HEAD /files`; a
            run's metadata file as `GET /files/wandb-metadata.json`, any other run file as
            `GET /files/run-file`).
        operations: every received GraphQL operation name, in order.
        unknown_operations: operations (and other requests) the stand-in does not know; never empty in a
            healthy test run. Unsupported filter fields/operators are recorded here too.
        unknown_fields: fields a known operation selected that the stand-in cannot resolve.
        latency_s: sleep before answering each GraphQL or file request.
        request_hook: called per request (not telemetry) with a RequestInfo; may return a HookResult.
        runs_page_faults: faults for the next pages of runs, one each, in order: `edges_null` (a reply with
            `"edges": null`), `empty_more` (no runs, yet `hasNextPage: true`).
        runs_count_extra: added to every run count the server reports (runs it counts but never lists).
        not_wandb: a server that is not W&B's API (a wrong WANDB_BASE_URL, a proxy's error page): every
            request, the key unlooked at, is answered with this (`html_page(404)`, `HookResult(status=500)`).

    Data that changes while a client pages: `change_at(operation, nth, change)`.
    """

    def __init__(
        self, dataset: StandinDataset, *, api_key: str = FAKE_API_KEY, host: str = "127.0.0.1"
    ) -> None:
        self.dataset = dataset
        self.api_key = api_key
        self.requests: Counter[str] = Counter()
        self.operations: list[str] = []
        self.unknown_operations: list[str] = []
        self.unknown_fields: list[str] = []
        self.rejected_auth = 0
        self.telemetry_posts = 0
        self.latency_s = 0.0
        self.request_hook: RequestHook | None = None
        self.runs_page_faults: list[str] = []  # faults of the next pages of runs, one each
        self.runs_count_extra = 0  # added to every runCount: a server that counts runs it does not list
        self.not_wandb: HookResult | None = None
        self._changes: list[tuple[str, int, Callable[[StandinDataset], None]]] = []
        self._lock = threading.Lock()
        self._documents: OrderedDict[str, _Document] = OrderedDict()
        self._histories: OrderedDict[int, tuple[StandinRun, HistoryTable]] = OrderedDict()
        self._parquet: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._run_lists: OrderedDict[tuple[int, int, str, str], list[StandinRun]] = OrderedDict()
        self._httpd = _HTTPServer((host, 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle and bookkeeping

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StandinServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, name="wandb-standin", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.operations.clear()

    def clear_cache(self) -> None:
        """Forget built histories, parquet bytes and run lists (call after mutating the dataset's runs)."""
        with self._lock:
            self._histories.clear()
            self._parquet.clear()
            self._run_lists.clear()

    def change_at(self, operation: str, nth: int, change: Callable[[StandinDataset], None]) -> None:
        """Run `change(dataset)` just before the `nth` request (1: the first) of GraphQL `operation` is
        answered, and forget what was cached: runs added or deleted while a client pages, say."""
        with self._lock:
            self._changes.append((operation, nth, change))

    def problems(self) -> list[str]:
        return [*self.unknown_operations, *(f"unknown field {f}" for f in self.unknown_fields)]

    def assert_clean(self) -> None:
        """Fail when the client sent anything the stand-in does not implement."""
        problems = self.problems()
        assert not problems, "the W&B stand-in received requests it does not implement:\n" + "\n".join(
            problems
        )

    def _count(self, name: str, *, graphql: bool) -> None:
        with self._lock:
            self.requests[name] += 1
            if graphql:
                self.operations.append(name)
            count = self.requests[name]
            due = [change for operation, nth, change in self._changes if (operation, nth) == (name, count)]
        for change in due:
            change(self.dataset)
        if due:
            self.clear_cache()

    def _record_unknown(self, text: str) -> None:
        with self._lock:
            self.unknown_operations.append(text)

    # ------------------------------------------------------------------ caches

    def history(self, run: StandinRun) -> HistoryTable:
        key = id(run)
        with self._lock:
            if key in self._histories:
                self._histories.move_to_end(key)
                return self._histories[key][1]
        table = run.history_table()
        with self._lock:
            self._histories[key] = (run, table)
            while len(self._histories) > 64:
                self._histories.popitem(last=False)
        return table

    def history_meta(self, run: StandinRun) -> HistoryMeta:
        if run.history_meta is not None:
            return run.history_meta
        if run.history is None:
            return HistoryMeta(-1, 0, {})
        return self.history(run).meta()

    def _exported_parts(self, run: StandinRun) -> list[pl.DataFrame]:
        if run.history is None:
            return []
        frame = self.history(run).frame
        if run.live_from_step is not None:
            frame = frame.filter(pl.col("_step") < run.live_from_step)
        if frame.height == 0:
            return []
        frame = frame.drop(run.export_drop)
        parts = max(1, min(run.export_files, frame.height))
        bounds = [frame.height * i // parts for i in range(parts + 1)]
        return [frame.slice(bounds[i], bounds[i + 1] - bounds[i]) for i in range(parts)]

    def parquet_file_count(self, run: StandinRun) -> int:
        if run.history is None:
            return 0
        if run.live_from_step is None and run.history_meta is not None:
            return (
                max(1, min(run.export_files, run.history_meta.line_count))
                if run.history_meta.line_count
                else 0
            )
        return len(self._exported_parts(run))

    def parquet_bytes(self, run: StandinRun, index: int) -> bytes | None:
        key = (id(run), index)
        with self._lock:
            if key in self._parquet:
                self._parquet.move_to_end(key)
                return self._parquet[key]
        parts = self._exported_parts(run)
        if not 0 <= index < len(parts):
            return None
        data = _frame_to_parquet(parts[index])
        with self._lock:
            self._parquet[key] = data
            while len(self._parquet) > 32:
                self._parquet.popitem(last=False)
        return data

    def parquet_url(self, entity: str, project: str, run_id: str, index: int) -> str:
        return f"{self.url}/files/{quote(entity, safe='')}/{quote(project, safe='')}/{quote(run_id, safe='')}/history_{index}.parquet"

    def run_file_url(self, entity: str, project: str, run_id: str, name: str) -> str:
        return f"{self.url}/files/{quote(entity, safe='')}/{quote(project, safe='')}/{quote(run_id, safe='')}/{quote(name, safe='')}"

    @staticmethod
    def metadata_bytes(run: StandinRun) -> bytes:
        return json.dumps(run.metadata, indent=2).encode()

    def _live_rows(self, run: StandinRun) -> HistoryRows:
        """Rows not yet exported to parquet (all rows of a run that has no export)."""
        if run.history is None or (run.live_from_step is None and self.parquet_file_count(run)):
            return []
        rows = self.history(run).rows
        if run.live_from_step is None:
            return rows
        return [row for row in rows if row["_step"] >= run.live_from_step]

    def matching_runs(self, project: StandinProject, filters: Any, order: str | None) -> list[StandinRun]:
        if isinstance(filters, str):
            filters = json.loads(filters) if filters.strip() else {}
        filters = filters or {}
        key = (id(project), len(project.runs), json.dumps(filters, sort_keys=True), order or "+created_at")
        with self._lock:
            if key in self._run_lists:
                return self._run_lists[key]
        try:
            runs = sorted_runs([run for run in project.runs if run_matches(run, filters)], order)
        except UnsupportedFilter as error:
            self._record_unknown(f"Runs filter/order: {error}")
            raise GraphQLError(f"stand-in: {error}") from None
        with self._lock:
            self._run_lists[key] = runs
            while len(self._run_lists) > 64:
                self._run_lists.popitem(last=False)
        return runs

    # ------------------------------------------------------------------ GraphQL objects

    def _user(self, username: str | None) -> dict[str, Any] | None:
        if username is None:
            return None
        viewer = self.dataset.viewer
        me = username == viewer.username
        return {
            "__typename": "User",
            "id": _gql_id("User", username),
            "name": viewer.name if me else username.title(),
            "username": username,
            "email": viewer.email if me else f"{username}@example.com",
            "admin": viewer.admin if me else False,
            "flags": "{}",
            "entity": viewer.entity if me else username,
            "deletedAt": None,
            "photoUrl": None,
            "accountType": "USER",
            "apiKeys": {
                "edges": [
                    {"node": {"id": _gql_id("ApiKey", 1), "name": self.api_key[-8:], "description": None}}
                ]
            }
            if me
            else {"edges": []},
            "teams": {"edges": [{"node": {"name": team}} for team in viewer.teams]} if me else {"edges": []},
        }

    def _viewer(self) -> dict[str, Any] | None:
        return self._user(self.dataset.viewer.username)

    def _entity(self, name: str) -> dict[str, Any] | None:
        owner = self.dataset.entities.get(name)
        if owner is None:
            return None
        members = owner.members or ([self.dataset.viewer.username] if owner.is_team else [name])
        return {
            "__typename": "Entity",
            "id": _gql_id("Entity", name),
            "name": name,
            "available": False,
            "photoUrl": None,
            "readOnly": False,
            "readOnlyAdmin": False,
            "isTeam": owner.is_team,
            "entityType": "TEAM" if owner.is_team else "USER",
            "privateOnly": False,
            "storageBytes": "0",
            "codeSavingEnabled": False,
            "defaultAccess": "MEMBERS",
            "isPaid": False,
            "members": [
                {
                    "id": _gql_id("User", member),
                    "admin": member == self.dataset.viewer.username,
                    "pending": False,
                    "email": f"{member}@example.com",
                    "username": member,
                    "name": member.title(),
                    "photoUrl": None,
                    "accountType": "USER",
                    "apiKey": None,
                }
                for member in members
            ],
        }

    def _models(self, args: dict[str, Any]) -> dict[str, Any]:
        entity = args.get("entityName") or self.dataset.viewer.entity
        owner = self.dataset.entities.get(entity)
        if owner is None:
            raise GraphQLError(f"entity {entity} not found")
        projects = sorted(owner.projects.values(), key=lambda p: (p.created_at, p.name), reverse=True)
        return _connection(projects, args.get("after"), args.get("first"), lambda p: self._project(entity, p))

    def _project_lookup(self, args: dict[str, Any]) -> dict[str, Any] | None:
        entity = args.get("entityName") or self.dataset.viewer.entity
        project = self.dataset.project(entity, args.get("name") or "uncategorized")
        return self._project(entity, project) if project else None

    def _project(self, entity: str, project: StandinProject) -> dict[str, Any]:
        def runs(args: dict[str, Any]) -> dict[str, Any]:
            matching = self.matching_runs(project, args.get("filters"), args.get("order"))
            page = _connection(
                matching, args.get("after"), args.get("first"), lambda r: self._run(entity, project, r)
            )
            with self._lock:
                fault = self.runs_page_faults.pop(0) if self.runs_page_faults else None
            if fault == "edges_null":
                page["edges"] = None
            elif fault == "empty_more":
                page["edges"], page["pageInfo"]["hasNextPage"] = [], True
            elif fault is not None:
                raise ValueError(f"unknown runs page fault {fault!r}")
            return page

        def run(args: dict[str, Any]) -> dict[str, Any] | None:
            found = project.run(str(args.get("name")))
            return self._run(entity, project, found) if found else None

        return {
            "__typename": "Project",
            "id": _gql_id("Project", project.internal_id),
            "internalId": str(project.internal_id),
            "name": project.name,
            "entityName": entity,
            "entity": {"id": _gql_id("Entity", entity), "name": entity},
            "createdAt": _timestamp(project.created_at),
            "isBenchmark": False,
            "readOnly": project.read_only,
            "description": None,
            "access": "PRIVATE",
            "views": "{}",
            "user": self._user(project.user),
            "runCount": lambda args: (
                len(self.matching_runs(project, args.get("filters"), None)) + self.runs_count_extra
            ),
            "runs": runs,
            "run": run,
        }

    def _run(self, entity: str, project: StandinProject, run: StandinRun) -> dict[str, Any]:
        def history_keys(_: dict[str, Any]) -> dict[str, Any]:
            meta = self.history_meta(run)
            return {
                "lastStep": meta.last_step,
                "keys": {
                    key: {"typeCounts": [{"type": kind, "count": count} for kind, count in kinds.items()]}
                    for key, kinds in meta.key_types.items()
                },
            }

        def history(args: dict[str, Any]) -> list[str]:
            live_only = args.get("minStep") is not None or args.get("maxStep") is not None
            rows = self._live_rows(run) if live_only else (self.history(run).rows if run.history else [])
            low, high = args.get("minStep"), args.get("maxStep")
            rows = [
                r for r in rows if (low is None or r["_step"] >= low) and (high is None or r["_step"] < high)
            ]
            return [_json_line(row) for row in _sample(rows, args.get("samples"))]

        def sampled_history(args: dict[str, Any]) -> list[list[dict[str, Any]]]:
            pages = []
            for spec in args.get("specs") or []:
                spec = json.loads(spec) if isinstance(spec, str) else spec
                keys = list(spec.get("keys") or [])
                low, high = spec.get("minStep"), spec.get("maxStep")  # maxStep inclusive here
                live_only = low is not None or high is not None
                rows = self._live_rows(run) if live_only else (self.history(run).rows if run.history else [])
                picked = [
                    {key: row[key] for key in keys}
                    for row in rows
                    if all(key in row for key in keys)
                    and (low is None or row["_step"] >= low)
                    and (high is None or row["_step"] <= high)
                ]
                pages.append(_finite(_sample(picked, spec.get("samples"))))
            return pages

        def parquet_history(args: dict[str, Any]) -> dict[str, Any]:
            live_keys = list(args.get("liveKeys") or ["_step"])
            live = [{k: row[k] for k in live_keys if k in row} for row in self._live_rows(run)]
            return {
                "parquetUrls": [
                    self.parquet_url(entity, project.name, run.id, i)
                    for i in range(self.parquet_file_count(run))
                ],
                "liveData": _finite(live),
            }

        def files(args: dict[str, Any]) -> dict[str, Any]:
            held = {METADATA_FILE: self.metadata_bytes(run)} if run.metadata is not None else {}
            held |= run.files
            names = [name for name in held if not args.get("names") or name in args["names"]]
            return _connection(names, args.get("after"), args.get("first"), lambda name: {
                "__typename": "File", "id": _gql_id("File", run.id, name), "name": name,
                "url": self.run_file_url(entity, project.name, run.id, name),
                "directUrl": self.run_file_url(entity, project.name, run.id, name),
                "sizeBytes": len(held[name]), "mimetype": "application/octet-stream", "md5": base64.b64encode(hashlib.md5(held[name]).digest()).decode(),
                "updatedAt": _timestamp(run.heartbeat_at or run.created_at),
            })  # fmt: skip

        wrapped_config = {key: {"desc": None, "value": value} for key, value in run.config.items()}
        return {
            "__typename": "Run",
            "id": _gql_id("Run", "v1", run.id, project.name, entity),
            "name": run.id,
            "displayName": run.display_name,
            "projectId": str(project.internal_id),
            "project": {
                "id": _gql_id("Project", project.internal_id),
                "name": project.name,
                "entityName": entity,
            },
            "tags": list(run.tags),
            "sweepName": run.sweep_name,
            "state": run.state,
            "group": run.group,
            "jobType": run.job_type,
            "commit": run.commit,
            "readOnly": project.read_only,
            "createdAt": _timestamp(run.created_at),
            "heartbeatAt": _timestamp(run.heartbeat_at or run.created_at),
            "updatedAt": _timestamp(run.heartbeat_at or run.created_at),
            "description": run.notes,
            "notes": run.notes,
            "user": {"name": run.user.title(), "username": run.user},
            "config": lambda _: json.dumps(wrapped_config) if run.raw_config is None else run.raw_config,
            "summaryMetrics": lambda _: (
                json.dumps(run.summary) if run.raw_summary is None else run.raw_summary
            ),
            "systemMetrics": lambda _: json.dumps(run.system_metrics),
            "historyLineCount": lambda _: self.history_meta(run).line_count,
            "eventsLineCount": len(run.events),
            "events": lambda args: [
                row if isinstance(row, str) else _json_line(row)
                for row in _sample(run.events, args.get("samples"))
            ],
            "historyKeys": history_keys,
            "history": history,
            "sampledHistory": sampled_history,
            "parquetHistory": parquet_history,
            "files": files,
            "fileCount": len(run.files) + (run.metadata is not None),
            **run.raw_fields,
        }

    def _root(self) -> dict[str, Any]:
        return {
            "viewer": lambda _: self._viewer(),
            "models": self._models,
            "project": self._project_lookup,
            "entity": lambda args: self._entity(str(args.get("name"))),
            "serverInfo": {"features": [], "cliVersionInfo": "{}", "latestLocalVersionInfo": None},
        }

    # ------------------------------------------------------------------ request handling

    def _document(self, query: str) -> _Document:
        with self._lock:
            if query in self._documents:
                self._documents.move_to_end(query)
                return self._documents[query]
        document = _Parser(query).document()
        with self._lock:
            self._documents[query] = document
            while len(self._documents) > 256:
                self._documents.popitem(last=False)
        return document

    def graphql_name(self, body: Mapping[str, Any]) -> str:
        return (
            operation_name(str(body.get("query") or ""))
            or str(body.get("operationName") or "")
            or "<anonymous>"
        )

    def execute(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one GraphQL request body ({"query", "variables", "operationName"})."""
        query = str(body.get("query") or "")
        name = self.graphql_name(body)
        if name not in KNOWN_OPERATIONS:
            self._record_unknown(f"GraphQL operation {name}: {' '.join(query.split())[:300]}")
            return {"errors": [{"message": f"wandb stand-in: unknown operation {name!r}"}], "data": None}
        try:
            document = self._document(query)
            operations = [op for op in document.operations if op.name == name] or document.operations
            operation = operations[0]
            if operation.kind != "query":
                raise GraphQLError(f"{operation.kind} is not supported")
            variables = {**operation.defaults, **(body.get("variables") or {})}
            missing: list[str] = []
            execution = _Execution(name, document.fragments, variables, missing)
            data = execution.object(self._root(), operation.selections, "")
        except (GraphQLError, GraphQLSyntaxError) as error:
            return {"errors": [{"message": str(error)}], "data": None}
        if missing:
            with self._lock:
                self.unknown_fields.extend(missing)
            return {
                "errors": [{"message": f"wandb stand-in cannot resolve {m}"} for m in missing],
                "data": data,
            }
        return {"data": data}

    def authorized(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            _user, _, key = base64.b64decode(header.split(None, 1)[1]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, IndexError):
            return False
        return key == self.api_key

    def find_run(self, entity: str, project: str, run_id: str) -> StandinRun | None:
        found = self.dataset.project(entity, project)
        return found.run(run_id) if found else None


def _sample(rows: list[Any], samples: Any) -> list[Any]:
    """At most `samples` rows, evenly spread, first and last kept (W&B-style downsampling)."""
    if samples is None or len(rows) <= int(samples):
        return rows
    count = int(samples)
    if count <= 0:
        return []
    if count == 1:
        return rows[:1]
    picks = sorted({round(i * (len(rows) - 1) / (count - 1)) for i in range(count)})
    return [rows[i] for i in picks]


_FILE_PATH = re.compile(r"^/files/([^/]+)/([^/]+)/([^/]+)/(?:history_(\d+)\.parquet|([^/]+))$")
METADATA_FILE = "wandb-metadata.json"


def _make_handler(server: StandinServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "wandb-standin/1"
        # Headers and body go out as two writes: without TCP_NODELAY, Nagle's algorithm and the client's
        # delayed ACK hold every small response back ~40 ms (real servers set TCP_NODELAY).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _read_body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            return body

        def _send(
            self, status: int, body: bytes, content_type: str = "application/json", **headers: str
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _send_json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode())

        def _hook(self, operation: str | None) -> bool:
            """Apply latency and the request hook; True when the hook answered the request itself."""
            if server.latency_s:
                time.sleep(server.latency_s)
            if server.request_hook is None:
                return False
            verdict = server.request_hook(RequestInfo(self.command, self.path, operation))
            if verdict is None:
                return False
            if verdict.delay_s:
                time.sleep(verdict.delay_s)
            if verdict.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return True
            if verdict.status is None and verdict.body is None:
                return False
            self._answer(verdict)
            return True

        def _answer(self, verdict: HookResult) -> None:
            error = {"errors": [{"message": f"stand-in hook: HTTP {verdict.status}"}]}
            body = json.dumps(error).encode() if verdict.body is None else verdict.body
            headers = {name.replace("-", "_"): value for name, value in verdict.headers.items()}
            self._send(verdict.status or 200, body, verdict.content_type, **headers)

        def do_POST(self) -> None:
            body = self._read_body()
            if server.not_wandb is not None:
                self._answer(server.not_wandb)
                return
            path = urlsplit(self.path).path
            if path.startswith(_TELEMETRY_PATHS):
                with server._lock:
                    server.telemetry_posts += 1
                self._send(200, b"{}")
                return
            if path != "/graphql":
                server._record_unknown(f"POST {self.path}")
                self._send_json(404, {"errors": [{"message": f"wandb stand-in: no route POST {path}"}]})
                return
            if not server.authorized(self.headers.get("Authorization")):
                with server._lock:
                    server.rejected_auth += 1
                self._send_json(401, {"errors": [{"message": "invalid API key"}]})
                return
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                self._send_json(400, {"errors": [{"message": "request body is not JSON"}]})
                return
            name = server.graphql_name(request)
            server._count(name, graphql=True)
            if self._hook(name):
                return
            self._send(200, json.dumps(server.execute(request)).encode())

        def _file(self) -> None:
            match = _FILE_PATH.match(urlsplit(self.path).path)
            if not match:
                server._record_unknown(f"{self.command} {self.path}")
                self._send_json(404, {"errors": [{"message": "not found"}]})
                return
            entity, project, run_id = (unquote(part) for part in match.groups()[:3])
            name = unquote(match.group(5) or "")
            shown = {"": "", METADATA_FILE: f"/{METADATA_FILE}"}.get(name, "/run-file")
            server._count(f"{self.command} /files{shown}", graphql=False)
            if self._hook(None):
                return
            run = server.find_run(entity, project, run_id)
            if run is None:
                data = None
            elif name == METADATA_FILE:
                data = server.metadata_bytes(run) if run.metadata is not None else None
            elif name:
                data = run.served_files.get(name, run.files.get(name))
            else:
                data = server.parquet_bytes(run, int(match.group(4)))
            if data is None:
                self._send(404, b"not found", "text/plain")
                return
            ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
            if ranged and self.command == "GET" and ranged.group(0) != "bytes=-":
                first, last = ranged.groups()
                if first:
                    start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
                else:
                    start, end = max(len(data) - int(last), 0), len(data) - 1
                if start >= len(data) or start > end:
                    self._send(416, b"", "application/octet-stream", Content_Range=f"bytes */{len(data)}")
                    return
                self._send(
                    206,
                    data[start : end + 1],
                    "application/octet-stream",
                    Content_Range=f"bytes {start}-{end}/{len(data)}",
                    Accept_Ranges="bytes",
                )
                return
            self._send(200, data, "application/octet-stream", Accept_Ranges="bytes")

        def do_GET(self) -> None:
            if server.not_wandb is not None:
                self._answer(server.not_wandb)
                return
            self._file()

        def do_HEAD(self) -> None:
            self._file()

    return Handler


def html_page(status: int = 200) -> HookResult:
    """What a web server that is not W&B's API sends for /graphql: an HTML page, with `status`."""
    page = b"<!DOCTYPE html><html><head><title>Welcome</title></head><body>It works!</body></html>"
    return HookResult(status=status, body=page, content_type="text/html; charset=utf-8")


# --------------------------------------------------------------------------------------------- datasets

_ADJECTIVES = [
    "brisk",
    "calm",
    "dainty",
    "eager",
    "fancy",
    "gentle",
    "happy",
    "icy",
    "jolly",
    "keen",
    "lively",
]
_NOUNS = ["sun", "moon", "river", "forest", "meadow", "storm", "breeze", "glade", "comet", "harbor", "pine"]
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _run_id(rng: random.Random, taken: set[str]) -> str:
    while True:
        candidate = "".join(rng.choice(_ID_ALPHABET) for _ in range(8))
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def _histogram(rng: random.Random, size: int = 8) -> dict[str, Any]:
    values = [rng.randint(0, 20) for _ in range(size)]
    edges = [round(-1 + 2 * i / size, 3) for i in range(size + 1)]
    return {"_type": "histogram", "values": values, "bins": edges}


def _history_rows(rng: random.Random, steps: int, start: datetime, nan_at: int | None) -> HistoryRows:
    rows: HistoryRows = []
    t0 = start.replace(tzinfo=UTC).timestamp()
    loss, accuracy = 1.0 + rng.random(), 0.3 + 0.2 * rng.random()
    for step in range(steps):
        loss *= 0.97 + 0.02 * rng.random()
        accuracy = min(0.999, accuracy + 0.004 * rng.random())
        runtime = round(step * 1.5 + rng.random(), 3)
        row: dict[str, Any] = {
            "_step": step,
            "_timestamp": round(t0 + runtime, 3),
            "_runtime": runtime,
            "train/loss": float("nan") if step == nan_at else round(loss, 6),
            "lr": 0.001 * 0.99**step,
            "epoch": step // 10,
        }
        if step % 5 == 4:
            row["test/accuracy"] = round(accuracy, 6)
            row["test/mse"] = round(loss / 2, 6)
        if step % 10 == 9:
            row["predictions"] = _histogram(rng)
        rows.append(row)
    return rows


def _run_metadata(index: int, commit: str | None) -> dict[str, Any]:
    """A wandb-metadata.json as wandb 0.31 writes it (the EnvironmentRecord in its JSON names), cut short;
    the remote with a user and token, as a careless clone URL has them."""
    gpus = index % 3
    return {
        "os": "Linux-6.8.0-45-generic-x86_64-with-glibc2.39",
        "python": "CPython 3.11.7",
        "startedAt": "2026-11-01T10:00:00.000000Z",
        "args": ["--seed", str(index), "--name", f"run {index}"],
        "program": "/home/alice/graph/train.py",
        "codePath": "train.py",
        "git": {"remote": "https://alice:ghp_secret@github.com/team/graph.git", "commit": commit},
        "email": "alice@example.com",
        "root": "/home/alice/graph",
        "host": f"node-{index % 4}",
        "username": "alice",
        "executable": "/usr/bin/python3",
        "cpu_count": 16,
        "cpu_count_logical": 32,
        **({"gpu": "NVIDIA A100-SXM4-80GB", "gpu_count": gpus} if gpus else {}),
        "disk": {"/": {"total": "1000000000000", "used": "400000000000"}},
        "memory": {"total": "270000000000"},
    }


def _make_run(
    rng: random.Random,
    taken: set[str],
    now: datetime,
    index: int,
    *,
    user: str,
    history_steps: int | None,
) -> StandinRun:
    created = now - timedelta(days=30 * rng.random(), seconds=index)  # unique, spread over the last 30 days
    state = rng.choices(["finished", "failed", "crashed", "killed", "running"], weights=[70, 10, 8, 4, 8])[0]
    runtime = round(60 + 7200 * rng.random(), 3)
    heartbeat = min(created + timedelta(seconds=runtime), now)
    model_type = rng.choice(["gcn", "gat", "cheb"])
    graph_type = rng.choice(["sbm", "er", "grid"])
    k = rng.randint(1, 6)
    lr = rng.choice([1e-4, 3e-4, 1e-3, 3e-3])
    mixed: int | str = index if index % 3 else f"v{index}"  # int in some runs, string in others
    config: dict[str, Any] = {
        "model": {"type": model_type, "k": k, "hidden": rng.choice([32, 64, 128]), "dropout": 0.1},
        "data": {"graph_type": graph_type, "noise": round(rng.random(), 3), "n_nodes": 256},
        "optimizer": {"name": "adam", "lr": lr, "betas": [0.9, 0.999]},
        "seed": index,
        "epochs": rng.choice([10, 20, 50]),
        "batch_size": rng.choice([32, 64]),
        "mixed": mixed,
        "a.b": 1,  # a dotted key ...
        "a": {"b": 2},  # ... next to a nested one ...
        "a_b": 3,  # ... and the underscore form both flatten to
        "weird key!": "yes",
        "λ": 0.5,
        "optional": None,
    }
    final_loss = round(0.05 + rng.random(), 6)
    summary: dict[str, Any] = {
        "train/loss": final_loss,
        "test/accuracy": round(0.5 + rng.random() / 2, 6),
        "test/mse": round(final_loss / 2, 6),
        "best/val": float("nan") if index % 7 == 0 else round(rng.random(), 6),
        "ratio": float("inf") if index % 11 == 0 else (float("-inf") if index % 13 == 0 else rng.random()),
        "status": rng.choice(["ok", "diverged", "early-stopped"]),
        "mixed": mixed,
        "a.b": 10,
        "a": {"b": 20},
        "a_b": 30,
        "weird key!": 1,
        "λ": 2.0,
        "test/weights": _histogram(rng),
        "_runtime": runtime,
        "_timestamp": round(heartbeat.replace(tzinfo=UTC).timestamp(), 3),
        "_step": (history_steps - 1) if history_steps else 0,
        "_wandb": {"runtime": int(runtime)},
    }
    run_id = _run_id(rng, taken)
    run = StandinRun(
        id=run_id,
        display_name=f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{index + 1}",
        created_at=created.replace(microsecond=0),
        state=state,
        heartbeat_at=heartbeat.replace(microsecond=0),
        tags=sorted(rng.sample(["baseline", "ablation", "sweep", "debug", "λ-test"], rng.randint(0, 3))),
        group=rng.choice([None, f"{model_type}-{graph_type}", "sweep-group"]),
        job_type=rng.choice([None, "train", "eval"]),
        sweep_name=rng.choice([None, None, "sw33p0ne", "sw33ptwo"]),
        user=user,
        notes=rng.choice([None, "baseline run", "tried a larger k; see λ-test"]),
        commit=f"{rng.getrandbits(40):010x}",
        config=config,
        summary=summary,
        system_metrics={"system.gpu.0.gpu": round(100 * rng.random(), 1), "system.memory": 42.0},
    )
    if index % 5:  # the rest ran before the client wrote the file; made without `rng`, which sets the rest
        run.metadata = _run_metadata(index, run.commit)
    if history_steps:
        nan_at = history_steps // 2 if index % 4 == 0 else None
        run.history = _history_rows(rng, history_steps, run.created_at, nan_at)
        if state == "running":
            run.live_from_step = history_steps - max(3, history_steps // 5)
        run.export_files = 2 if history_steps >= 100 else 1
    return run


def default_dataset(seed: int = 0, now: datetime = DEFAULT_NOW) -> StandinDataset:
    """A few hundred deterministic runs across two teams and a personal entity.

    - graph_denoise_team/spectral_denoising: 250 runs, every 10th with 20-200 steps of history
      (running ones partly live, long ones exported in two parquet files); at least one running run
      with history, with live data.
    - graph_denoise_team/empty_project: no runs.
    - alice/scratch: 12 runs, all with history.
    - vision-lab/segmentation: 5 runs, no history.
    """
    rng = random.Random(seed)
    taken: set[str] = set()
    dataset = StandinDataset(
        viewer=StandinViewer(username="alice", entity="alice", teams=["graph_denoise_team", "vision-lab"]),
        now=now,
    )
    forced_steps = {0: 150, 10: 80}  # a long exported run (two parquet files) and a running one
    spectral = [
        _make_run(
            rng,
            taken,
            now,
            i,
            user=rng.choice(["alice", "bob"]),
            history_steps=forced_steps.get(i, rng.randint(20, 200) if i % 10 == 0 else None),
        )
        for i in range(250)
    ]
    spectral[0].state, spectral[0].live_from_step = "finished", None
    spectral[10].state, spectral[10].live_from_step = "running", 64  # steps 64..79 not yet exported
    dataset.add_project("graph_denoise_team", "spectral_denoising", spectral, is_team=True)
    dataset.add_project("graph_denoise_team", "empty_project", [], is_team=True)
    dataset.entities["graph_denoise_team"].members = ["alice", "bob"]
    scratch = [
        _make_run(rng, taken, now, i, user="alice", history_steps=rng.randint(20, 60)) for i in range(12)
    ]
    dataset.add_project("alice", "scratch", scratch)
    vision = [_make_run(rng, taken, now, i, user="carol", history_steps=None) for i in range(5)]
    dataset.add_project("vision-lab", "segmentation", vision, is_team=True)
    dataset.entities["vision-lab"].members = ["alice", "carol"]
    return dataset


def synthetic_dataset(
    n_runs: int,
    steps: int,
    keys: int,
    *,
    entity: str = "bench",
    project: str = "synthetic",
    seed: int = 0,
    now: datetime = DEFAULT_NOW,
    export_files: int = 1,
) -> StandinDataset:
    """N runs x S steps x K float keys, cheap to hold: each history is built only when requested."""
    dataset = StandinDataset(viewer=StandinViewer(username="alice", entity="alice", teams=[entity]), now=now)
    key_names = [f"metric_{k:03d}" for k in range(keys)]

    def history_for(index: int, start: datetime) -> Callable[[], pl.DataFrame]:
        def build() -> pl.DataFrame:
            step = pl.int_range(0, steps, dtype=pl.Int64, eager=True).alias("_step")
            base = start.replace(tzinfo=UTC).timestamp()
            frame = pl.DataFrame(step).with_columns(
                (pl.col("_step").cast(pl.Float64) + base).alias("_timestamp"),
                pl.col("_step").cast(pl.Float64).alias("_runtime"),
            )
            return frame.with_columns(
                ((pl.col("_step") * (k + 1) + index * 7919 + seed).cast(pl.Float64) * 0.001).sin().alias(name)
                for k, name in enumerate(key_names)
            )

        return build

    runs = []
    meta = HistoryMeta(
        steps - 1, steps, {key: {"number": steps} for key in ["_step", "_timestamp", "_runtime", *key_names]}
    )
    for i in range(n_runs):
        created = (now - timedelta(seconds=(n_runs - i) * 60)).replace(microsecond=0)
        runs.append(
            StandinRun(
                id=f"r{seed % 100:02d}{i:05d}",
                display_name=f"synthetic-{i}",
                created_at=created,
                heartbeat_at=created + timedelta(seconds=steps),
                config={"index": i, "lr": 0.001 * (1 + i % 5)},
                summary={"_step": steps - 1, "_runtime": float(steps), **dict.fromkeys(key_names[:3], 0.5)},
                history=history_for(i, created) if steps else None,
                history_meta=meta if steps else None,
                export_files=export_files,
            )
        )
    dataset.add_project(entity, project, runs, is_team=True)
    return dataset


def iter_all_runs(dataset: StandinDataset) -> Iterator[tuple[str, str, StandinRun]]:
    for entity in dataset.entities.values():
        for project in entity.projects.values():
            for run in project.runs:
                yield entity.name, project.name, run
