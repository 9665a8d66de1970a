"""The run table's schema, defined once: the core columns of `*_runs.parquet`, the sections every run carries
(config and summary: flattened under a prefix, and kept whole as raw JSON), the tidy streams beside the runs
table (history), the export files' kinds, and the frames queries pass around.

Column types are named here in a few words (`text`, `time`, ...); their arrow and polars forms are derived on
first use (`CORE_COLUMNS`, `HISTORY_SCHEMA`, `HISTORY_COLUMNS`, `RUNS_SCHEMA`, `POINTS_SCHEMA`,
`SERIES_SCHEMA`), so that the
names can be imported while the scripts parse their flags, before pyarrow or polars loads. Adding a kind of
run data starts here: docs/architecture.md says where it goes next.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from datetime import datetime

    import polars as pl
    import pyarrow as pa

# A column's type, in the words this schema uses: its arrow form and its polars form (each made from its
# own library: deriving one from the other would load pyarrow, and through it pandas, where only polars is).
_TYPES: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "text": (lambda pa: pa.string(), lambda pl: pl.String()),
    "texts": (lambda pa: pa.list_(pa.string()), lambda pl: pl.List(pl.String())),
    "integer": (lambda pa: pa.int64(), lambda pl: pl.Int64()),
    "number": (lambda pa: pa.float64(), lambda pl: pl.Float64()),
    "time": (lambda pa: pa.timestamp("us", tz="UTC"), lambda pl: pl.Datetime("us", "UTC")),
    "flag": (lambda pa: pa.bool_(), lambda pl: pl.Boolean()),
}

# Core columns of `*_runs.parquet`, in order, before the sections' columns; RunRecord has a field for each.
CORE: dict[str, str] = {
    "id": "text",
    "name": "text",
    "entity": "text",
    "project": "text",
    "state": "text",
    "created_at": "time",
    "heartbeat_at": "time",
    "runtime_s": "number",
    "tags": "texts",
    "group": "text",
    "job_type": "text",
    "sweep": "text",
    "user": "text",
    "notes": "text",
    "url": "text",
    # Run metadata, each null where the source has none: where and what ran.
    "git_commit": "text",  # the commit of the code that ran
    "git_remote": "text",  # the repository's remote URL, without credentials
    "host": "text",
    "os": "text",
    "python": "text",  # the Python version
    "program": "text",  # the script or module that ran
    "args": "texts",  # its command-line arguments
    "cpu_count": "integer",
    "gpu": "text",  # the GPU model
    "gpu_count": "integer",
    # Summaries of the system metrics (shared.table.system_summary says of which keys), with
    # --include-system-metrics; null without, or where the tracker logged none.
    "cpu_mean": "number",  # mean CPU utilisation, percent
    "memory_peak_gb": "number",  # peak memory of the run's process (W&B) or host (Neptune), GB
    "gpu_mean": "number",  # mean GPU utilisation, percent, over every GPU's samples
    "gpu_memory_peak_gb": "number",  # peak GPU memory of any one GPU, GB
    # Experiments and forks (Neptune 3; docs/schema.md): null where the source has none. A fork's history
    # holds its own points; it inherits its parent's up to and including `fork_step`.
    "experiment": "text",  # the experiment the run belongs to (sys/experiment/name)
    "is_head": "flag",  # whether the run represents its experiment (sys/experiment/is_head)
    "parent_run_id": "text",  # the run it forked from (sys/forking/parent); null for a run never forked
    "fork_step": "number",  # the parent's last step it inherits (sys/forking/step), may be fractional
    "fork_depth": "integer",  # forks between it and its root run (sys/forking/depth)
}

LINEAGE = ("experiment", "is_head", "parent_run_id", "fork_step", "fork_depth")  # the columns a fork fills

INTERNAL_PREFIX = (
    "_"  # a column (`_config_json`, `_source_file`) or top-level key (`_runtime`) of bookkeeping
)
_HISTORY_BOOKKEEPING = {"_step", "_timestamp", "_runtime"}


def is_internal(name: str) -> bool:
    """A column or top-level key that is bookkeeping rather than data: it starts with INTERNAL_PREFIX."""
    return name.startswith(INTERNAL_PREFIX)


def is_internal_key(key: str) -> bool:
    """A tracker's own bookkeeping key in a run's history or summary (`_step`, `_timestamp`, `_runtime`,
    W&B's `_wandb…`), not a metric."""
    return key in _HISTORY_BOOKKEEPING or key.startswith("_wandb")


class Section(NamedTuple):
    """A nested dict every run carries, kept twice in the runs table: flattened into `{prefix}…` columns
    (shared.table.flatten) and whole, losslessly, as JSON text in the `raw` column."""

    field: str  # the RunRecord attribute; `raw_{field}` holds the source's text when it could not be parsed
    prefix: str
    raw: str
    skip_internal: bool  # top-level internal keys (W&B's `_runtime`, `_wandb`) are not flattened


CONFIG = Section("config", "config_", "_config_json", skip_internal=False)
SUMMARY = Section("summary", "metric_", "_summary_json", skip_internal=True)
SECTIONS = (CONFIG, SUMMARY)
CONFIG_PREFIX, METRIC_PREFIX = CONFIG.prefix, SUMMARY.prefix
RAW_JSON_COLUMNS = tuple(section.raw for section in SECTIONS)


class Stream(NamedTuple):
    """A tidy file beside the runs table, one row per logged value: `{stem}_{name}.parquet`."""

    name: str
    columns: Mapping[str, str]

    @property
    def suffix(self) -> str:
        return f"_{self.name}.parquet"


HISTORY = Stream(
    "history", {"run_id": "text", "step": "integer", "timestamp": "time", "key": "text", "value": "number"}
)
# History values that are not numbers: `type` is string, bool, histogram, media, table or object; `value`
# the value as text (a string as it is, anything else as JSON: a histogram's bins and counts, a media
# file's path and metadata).
HISTORY_OTHER = Stream(
    "history_other",
    {
        "run_id": "text",
        "step": "integer",
        "timestamp": "time",
        "key": "text",
        "type": "text",
        "value": "text",
    },
)
OTHER_TYPES = ("string", "bool", "histogram", "media", "table", "object")
# What a run printed, line after line (`line` counts from 0 per run); `stream` is stdout or stderr.
CONSOLE = Stream(
    "console", {"run_id": "text", "line": "integer", "timestamp": "time", "stream": "text", "text": "text"}
)
# System metrics (CPU, memory, GPU, ...) with the tracker's keys as logged.
SYSTEM = Stream("system", {"run_id": "text", "timestamp": "time", "key": "text", "value": "number"})
# The files each run holds, as the tracker lists them (every export writes it): `path` relative to the
# run, `md5` in hex (W&B's base64 converted; computed for local files), no URLs.
FILES = Stream(
    "files", {"run_id": "text", "path": "text", "size": "integer", "md5": "text", "updated_at": "time"}
)
STREAMS = (HISTORY, HISTORY_OTHER, CONSOLE, SYSTEM, FILES)
RUN_FILES_FOLDER = "files"  # beside a project's files: the run files --include-files keeps, by run
# The streams an export writes only when asked (`--include-console`, `--include-system-metrics`);
# history_other comes with history.
OPTIONAL_STREAMS = (CONSOLE, SYSTEM)

# A project's export files, `{stem}{suffix}`: in the order shared.export.project.ExportFiles names them.
FILE_KINDS = {
    "runs": "_runs.parquet",
    "history": HISTORY.suffix,
    "history_other": HISTORY_OTHER.suffix,
    "console": CONSOLE.suffix,
    "system": SYSTEM.suffix,
    "files": FILES.suffix,
    "metadata": "_metadata.json",
    "state": "_state.json",  # what --incremental needs
}
RUNS_FILE = FILE_KINDS["runs"]


def holds_export(path: Path) -> bool:
    """Whether `path` is a runs parquet written by export_runs.py or a folder holding one (a name test:
    telling a query's source apart costs no pyarrow import)."""
    return path.name.endswith(RUNS_FILE) or (path.is_dir() and any(path.glob(f"*{RUNS_FILE}")))


# One export's id, the same in its runs and history parquets' key-value metadata and its metadata JSON:
# readers tell files of one export from those of another that is replacing them (files of older
# versions have none: nothing to check).
GENERATION_KEY = "run_tools.generation"
HISTORY_FILE_KEY = "run_tools.history_file"  # a runs parquet's: the name of its history file, "" for none

# The frames queries pass around: a source's runs, and numeric points of the metrics a query needs.
RUNS_FRAME = {"run_id": "text", "name": "text", "state": "text"}
POINTS_FRAME = {"run_id": "text", "key": "text", "step": "number", "value": "number"}
# Points as a tracker reads a series for an export, before they become history rows (steps as logged).
SERIES_FRAME = {"run_id": "text", "key": "text", "step": "number", "timestamp": "time", "value": "number"}


@cache
def arrow_schema(columns: tuple[tuple[str, str], ...]) -> pa.Schema:
    """The arrow form of columns named in this schema's words."""
    import pyarrow as pa

    return pa.schema([(name, _TYPES[kind][0](pa)) for name, kind in columns])


@cache
def polars_schema(columns: tuple[tuple[str, str], ...]) -> dict[str, pl.DataType]:
    """The polars form of columns named in this schema's words (as polars reads their arrow form)."""
    import polars as pl

    return {name: _TYPES[kind][1](pl) for name, kind in columns}


_DERIVED: dict[str, Callable[[], Any]] = {
    "CORE_COLUMNS": lambda: dict(zip(CORE, arrow_schema(tuple(CORE.items())).types, strict=True)),
    "HISTORY_SCHEMA": lambda: arrow_schema(tuple(HISTORY.columns.items())),
    "HISTORY_COLUMNS": lambda: polars_schema(tuple(HISTORY.columns.items())),
    "RUNS_SCHEMA": lambda: polars_schema(tuple(RUNS_FRAME.items())),
    "POINTS_SCHEMA": lambda: polars_schema(tuple(POINTS_FRAME.items())),
    "SERIES_SCHEMA": lambda: polars_schema(tuple(SERIES_FRAME.items())),
}


def __getattr__(name: str) -> Any:
    """The arrow and polars forms (CORE_COLUMNS, HISTORY_SCHEMA, ...), made on first use."""
    if name in _DERIVED:
        value = globals()[name] = _DERIVED[name]()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class RunRecord:
    """One run as every source (W&B API, W&B offline log, Neptune) hands it to the writers: a field per
    core column, then the sections."""

    id: str
    entity: str
    project: str
    name: str | None = None
    state: str | None = None
    created_at: datetime | None = None
    heartbeat_at: datetime | None = None
    runtime_s: float | None = None
    tags: list[str] = field(default_factory=list)
    group: str | None = None
    job_type: str | None = None
    sweep: str | None = None
    user: str | None = None
    notes: str | None = None
    url: str | None = None
    git_commit: str | None = None
    git_remote: str | None = None
    host: str | None = None
    os: str | None = None
    python: str | None = None
    program: str | None = None
    args: list[str] | None = None
    cpu_count: int | None = None
    gpu: str | None = None
    gpu_count: int | None = None
    cpu_mean: float | None = None
    memory_peak_gb: float | None = None
    gpu_mean: float | None = None
    gpu_memory_peak_gb: float | None = None
    experiment: str | None = None
    is_head: bool | None = None
    parent_run_id: str | None = None
    fork_step: float | None = None
    fork_depth: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    # The source's text of a config or summary that could not be parsed (then `config`/`summary` is empty):
    # written as it is to `_config_json`/`_summary_json`, with no flattened columns.
    raw_config: str | None = None
    raw_summary: str | None = None

    def core_values(self) -> dict[str, Any]:
        """The core columns of this run, keyed by column name."""
        return {name: getattr(self, name) for name in CORE}


_FIELDS = {item.name for item in fields(RunRecord)}
assert set(CORE) | {s.field for s in SECTIONS} | {f"raw_{s.field}" for s in SECTIONS} == _FIELDS, (
    "RunRecord has a field per core column and per section, and nothing else"
)
