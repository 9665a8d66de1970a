"""W&B runs for top-k queries (the API, offline run logs, export folders) and WandbQuery, NeptuneQuery's twin.

Every source lists its runs once with config and summary. `last` is the run summary's value when it is
a finite number (W&B sets it to the last value logged); other aggregations, and a `last` whose summary
value is NaN/inf or not a number, read the history of only the runs and keys they need.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from shared.cli import ToolFailure, UsageError, warn
from shared.constraints import ConstraintError
from shared.flatten import parse_object
from shared.history import is_internal_key
from shared.neptune_sources import POINTS_SCHEMA, RUNS_SCHEMA
from shared.progress import ItemProgress
from shared.retry import describe
from shared.runs_io import export_metadata, export_stem, history_file_of, name_list
from shared.schema import RAW_JSON_COLUMNS
from shared.storage import name_stems, safe_name
from shared.topk import RUN
from shared.topk_args import LAST_FROM
from shared.topk_args import WANDB_STATES as STATES
from shared.topk_query import TopkQuery

SUMMARY_SCHEMA = {RUN: pl.String, "key": pl.String, "value": pl.Float64}
SourceKind = Literal["offline", "export"]


def summary_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float | None]:
    """The metric keys of a run summary: numbers as floats (NaN/inf kept), nested dicts as `a.b` keys
    (as W&B names them in history) and the dict itself as None (its values live in the history: a
    define_metric summary). Text, booleans, lists, media and W&B's own `_` keys are left out."""
    found: dict[str, float | None] = {}
    for name, value in summary.items():
        key = f"{prefix}{name}"
        if is_internal_key(key):
            continue
        if isinstance(value, Mapping):
            if "_type" not in value:  # a histogram or other media is not a metric
                found[key] = None
                found |= summary_metrics(value, f"{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[key] = float(value)
    return found


def text_keys(summary: Mapping[str, Any]) -> set[str]:
    """Summary keys holding text, booleans or lists: present, but no metric."""
    return {key for key, value in summary.items() if isinstance(value, str | bool | list)}


def parse_state(state: str | None) -> str | None:
    """A user's --state as W&B spells it; anything else is a usage error."""
    if state is None:
        return None
    if state.strip().lower() not in STATES:
        raise UsageError(f"unknown run state {state!r} (W&B runs are {', '.join(STATES)})")
    return state.strip().lower()


@dataclass(frozen=True)
class ListedRun:
    """A run as a source lists it: what the runs table, RunInfo and the summary values need."""

    run_id: str
    name: str
    state: str
    config: dict[str, Any]
    summary: dict[str, Any]
    raw: Any


def _points(columns: dict[str, list[Any]]) -> pl.DataFrame:
    return pl.DataFrame(columns, schema=POINTS_SCHEMA)


class WandbSource:
    """What the W&B sources share: the runs table, summary values and points; history comes from
    `_history`, the runs from `_list`."""

    def __init__(self, *, last_from: str = "summary") -> None:
        self.last_from = last_from
        self._runs: pl.DataFrame | None = None
        self._listed: dict[str, ListedRun] = {}
        self._summary = pl.DataFrame(schema=SUMMARY_SCHEMA)

    def _list(self) -> Iterator[ListedRun]:
        raise NotImplementedError

    def _history(self, pairs: pl.DataFrame, *, needed: bool) -> pl.DataFrame:
        """Points (POINTS_SCHEMA) of these (run_id, key) pairs; `needed`: the query cannot do without."""
        raise NotImplementedError

    def _forget_history(self) -> None:
        """Drop cached history (the runs are listed again)."""

    def runs(self, *, refresh: bool = False) -> pl.DataFrame:
        if self._runs is None or refresh:
            self._forget_history()
            self._listed = {run.run_id: run for run in self._list()}
            listed = list(self._listed.values())
            self._runs = pl.DataFrame(
                {
                    RUN: list(self._listed),
                    "name": [r.name for r in listed],
                    "state": [r.state for r in listed],
                },
                schema=RUNS_SCHEMA,
            )
            values = [
                (r.run_id, key, value) for r in listed for key, value in summary_metrics(r.summary).items()
            ]
            self._summary = pl.DataFrame(values, schema=SUMMARY_SCHEMA, orient="row")
        return self._runs

    def run_ids(self) -> list[str]:
        return self.runs()[RUN].to_list()

    def points(
        self,
        keys: Sequence[str],
        run_ids: Sequence[str] | None = None,
        *,
        series: bool = True,
        required: Sequence[str] = (),
    ) -> pl.LazyFrame:
        """Summary values as single points, or history where a series is wanted; only runs whose
        summary names every `required` key have their history read (the others cannot rank)."""
        self.runs()
        summary = self._summary.filter(pl.col("key").is_in(list(keys)))
        if run_ids is not None:
            summary = summary.filter(pl.col(RUN).is_in(list(run_ids)))
        wanted = summary
        needed = list(dict.fromkeys(required))
        if needed:
            counts = summary.filter(pl.col("key").is_in(needed)).group_by(RUN).len()
            wanted = wanted.join(counts.filter(pl.col("len") == len(needed)), on=RUN, how="semi")
        from_history = series or self.last_from == "history"
        if not from_history:  # last: the summary value, unless it is NaN/inf or a dict
            wanted = wanted.filter(~pl.col("value").is_finite().fill_null(False))
        history = self._history(wanted.select(RUN, "key"), needed=from_history)
        single = summary.join(history.select(RUN, "key").unique(), on=[RUN, "key"], how="anti")
        single = single.filter(pl.col("value").is_not_null()).select(
            RUN, "key", pl.lit(None, pl.Float64).alias("step"), "value"
        )
        return pl.concat([history, single]).lazy()

    def describe(self, run_ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Name and config of each run."""
        self.runs()
        return {run_id: (self._listed[run_id].name, self._listed[run_id].config) for run_id in run_ids}

    def numeric_keys(self) -> list[str]:
        self.runs()
        return sorted(self._summary.filter(pl.col("value").is_not_null())["key"].unique().to_list())

    def text_keys(self) -> set[str]:
        """Summary keys that hold text, booleans or lists in some run."""
        self.runs()
        return {key for run in self._listed.values() for key in text_keys(run.summary)}

    def raw_run(self, run_id: str) -> Any:
        self.runs()
        return self._listed[run_id].raw

    def close(self) -> None:
        self._runs, self._listed = None, {}
        self._summary = pl.DataFrame(schema=SUMMARY_SCHEMA)
        self._forget_history()


# ---------------------------------------------------------------- the W&B API


class ApiSource(WandbSource):
    """One project through `wandb.Api`: runs listed once (config and summary come with each page), then
    only the needed history keys of the runs that can rank, `workers` at a time, each run's history once."""

    def __init__(
        self,
        project: str,
        api_key: str | None = None,
        *,
        workers: int = 8,
        timeout: float = 60,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.entity, _, self.project = project.rpartition("/")
        self.api_key, self.workers, self.timeout = api_key, max(1, workers), timeout
        self._api: Any = None
        self._series: dict[tuple[str, str], tuple[list[float], list[float]]] = {}

    def _connect(self) -> Any:
        if self._api is None:
            from shared.auth import wandb_credentials
            from shared.wandb_api import connect  # imports wandb: only when the API is queried

            self._api = connect(wandb_credentials(self.api_key), self.timeout)
        return self._api

    def _list(self) -> Iterator[ListedRun]:
        from shared.wandb_api import RunPages, run_record

        api = self._connect()
        entity = self.entity or api.default_entity
        path = f"{entity}/{self.project}"
        try:
            runs = RunPages(api, entity, self.project, {})
        except Exception as error:  # the client raises several types for an unknown project or entity
            raise UsageError(f"cannot list the runs of W&B project {path}: {error}") from None
        with ItemProgress("runs", runs.reported) as progress:
            for paged in runs:
                progress.advance()
                record = run_record(paged)
                if paged.problems:
                    warn(f"run {record.id} of {path}: {'; '.join(paged.problems)}; ranked without them")
                yield ListedRun(
                    record.id,
                    record.name or record.id,
                    record.state,
                    record.config,
                    record.summary,
                    paged.run,
                )
        for run_id, reason in runs.failed.items():
            warn(f"run {run_id} of {path} left out: {reason}")

    def _forget_history(self) -> None:
        self._series.clear()

    def _history(self, pairs: pl.DataFrame, *, needed: bool) -> pl.DataFrame:
        wanted = list(pairs.iter_rows())
        todo = [pair for pair in dict.fromkeys(wanted) if pair not in self._series]
        for pair in todo:
            if getattr(self._listed[pair[0]].raw, "historyLineCount", None) == 0:
                self._series[pair] = ([], [])  # no history at all: no request
        todo = [pair for pair in todo if pair not in self._series]
        if todo:
            runs, keys = list(dict.fromkeys(run for run, _ in todo)), sorted({key for _, key in todo})
            try:
                self._fetch_history(runs, keys)
            except Exception as error:  # network, permissions, server errors
                raise ToolFailure(
                    f"could not fetch the history series of {len(runs)} run(s) of {self.entity}/{self.project}"
                    f" ({describe(error)})"
                ) from None
        columns: dict[str, list[Any]] = {RUN: [], "key": [], "step": [], "value": []}
        for run_id, key in wanted:
            steps, values = self._series[run_id, key]
            columns[RUN] += [run_id] * len(values)
            columns["key"] += [key] * len(values)
            columns["step"] += steps
            columns["value"] += values
        return _points(columns)

    def _fetch_history(self, run_ids: list[str], keys: list[str]) -> None:
        """These keys of these runs, each run's history downloaded once (as the exporter does: parquet
        locations in batches, files over pooled HTTP, rows not exported yet through the client)."""
        from shared.wandb_export import bounded_map
        from shared.wandb_history import HistoryFetcher

        api = self._connect()
        entity = self.entity or api.default_entity
        runs = [self._listed[run_id].raw for run_id in run_ids]
        with (
            HistoryFetcher(
                api, entity, self.project, keys=keys, workers=self.workers, timeout_s=self.timeout
            ) as fetcher,
            ItemProgress("run histories", len(runs)) as progress,
        ):
            downloads = (
                downloaded
                for _, downloaded in bounded_map(fetcher.download, fetcher.locate(runs), self.workers)
            )
            for batch, table, _ in fetcher.tidy_batches(downloads):
                tidy = pl.from_arrow(table)
                assert isinstance(tidy, pl.DataFrame)
                series = tidy.partition_by("run_id", "key", as_dict=True)
                for downloaded in batch:
                    for key in keys:  # every key asked of any run: a later query may want it of this one
                        part = series.get((downloaded.run_id, key))
                        self._series[downloaded.run_id, key] = (
                            ([], [])
                            if part is None
                            else (part["step"].cast(pl.Float64).to_list(), part["value"].to_list())
                        )
                progress.advance(len(batch))


# ---------------------------------------------------------------- offline run logs


class OfflineSource(WandbSource):
    """Offline run logs (`wandb/`, `offline-run-*` folders, `.wandb` files): listed in one pass without
    history; the history of the needed keys is read from the logs of the runs that need it."""

    def __init__(self, path: Path, project: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        from shared.wandb_offline import OfflineLogError, find_run_logs  # imports wandb's protobuf

        try:
            self.logs = find_run_logs(path)
        except OfflineLogError as error:
            raise UsageError(str(error)) from None
        self.path, self.project = path, project
        self._logs_of: dict[str, list[Path]] = {}  # a run resumed offline has several
        self._loaded: set[tuple[str, str]] = set()
        self._frames: list[pl.DataFrame] = []

    def _belongs(self, entity: str, project: str) -> bool:
        if not self.project:
            return True
        wanted_entity, _, wanted_project = self.project.rpartition("/")
        return project == wanted_project and (not wanted_entity or entity == wanted_entity)

    def _list(self) -> Iterator[ListedRun]:
        from shared.wandb_offline import merged_runs, read_run_log, session_groups

        others: set[str] = set()
        with ItemProgress("run files", len(self.logs), verb="read") as progress:
            for group in session_groups(self.logs):
                sessions = []
                for log_path in group:
                    sessions.append(read_run_log(log_path, include_history=False))
                    progress.advance()
                    if sessions[-1].lost_records:
                        warn(
                            f"{log_path}: skipped {sessions[-1].lost_records} corrupt or truncated record(s)"
                        )
                for run, run_sessions in merged_runs(sessions):  # a run resumed offline is one run
                    record = run.record
                    if self._belongs(record.entity, record.project):
                        self._logs_of[record.id] = [session.path for session in run_sessions]
                        name = record.name or record.id
                        yield ListedRun(record.id, name, record.state, record.config, record.summary, run)
                    else:
                        others.add(f"{record.entity}/{record.project}")
        if others and not self._logs_of:
            warn(
                f"no offline run of {self.project} in {self.path} (projects there: {name_list(sorted(others))})"
            )

    def _forget_history(self) -> None:
        self._loaded.clear()
        self._frames.clear()

    def _history(self, pairs: pl.DataFrame, *, needed: bool) -> pl.DataFrame:
        from shared.wandb_offline import merged_runs, read_run_log

        todo: dict[str, set[str]] = {}
        for run_id, key in pairs.iter_rows():
            if (run_id, key) not in self._loaded:
                todo.setdefault(run_id, set()).add(key)
        for run_id, keys in todo.items():
            sessions = [read_run_log(log, history_keys=keys) for log in self._logs_of[run_id]]
            history = merged_runs(sessions)[0][0].history
            self._frames.append(history.select(RUN, "key", pl.col("step").cast(pl.Float64), "value"))
            self._loaded |= {(run_id, key) for key in keys}
        if not self._frames:
            return _points({})
        return pl.concat(self._frames).join(pairs, on=[RUN, "key"], how="semi")


# ---------------------------------------------------------------- export folders


def _exported_project(runs_file: Path) -> tuple[str, str] | None:
    """The (entity, project) a runs file's metadata records; None without readable metadata."""
    metadata = export_metadata(runs_file) or {}
    entity, project = metadata.get("entity"), metadata.get("project")
    return (entity, project) if isinstance(entity, str) and isinstance(project, str) else None


def _certainty(runs_file: Path, recorded: tuple[str, str] | None, entity: str, project: str) -> int:
    """How surely a runs file is the export of `project` (of `entity`, when given): 2 by its metadata or
    its digest name, 1 by its plain name (no metadata: older versions; `a b` and `a_b` share it), 0 not."""
    if recorded is not None:
        return 2 if recorded[1] == project and (not entity or recorded[0] == entity) else 0
    stem = export_stem(runs_file)
    if not entity:
        return int(stem.endswith(f"_{safe_name(project)}"))
    plain, tagged = name_stems(entity, project)
    return 2 if stem == tagged else int(stem == plain)


def find_export(path: Path, project: str | None) -> Path:
    """The `*_runs.parquet` of `project` (entity/project or project) in an export folder, or the file.

    Chosen by the entity/project each export's metadata records: names that collide (`a b`/`a_b`) are
    told apart by the exporter with a digest suffix, so a file's name alone can hold another project.
    """
    entity, _, name = (project or "").rpartition("/")
    if path.is_file():
        if not path.name.endswith("_runs.parquet"):
            raise UsageError(f"{path} is not a runs file written by export_runs.py (*_runs.parquet)")
        held = _exported_project(path)
        if project and held is not None and not _certainty(path, held, entity, name):
            raise UsageError(f"{path} holds the export of {'/'.join(held)}, not {project}")
        return path
    if not path.is_dir():
        raise UsageError(f"{path} does not exist")
    files = sorted(path.glob("*_runs.parquet"))
    if not files:
        raise UsageError(f"no *_runs.parquet in {path}: not a folder written by wandb-tools/export_runs.py")
    recorded = {file: _exported_project(file) for file in files}
    labels = name_list("/".join(held) if held else export_stem(file) for file, held in recorded.items())
    if not project:
        if len(files) > 1:
            raise UsageError(f"{path} holds several exports; name one as ENTITY/PROJECT: {labels}")
        return files[0]
    # A digest name is only given when the plain one holds another project: it wins over the plain name.
    certainty = {file: _certainty(file, held, entity, name) for file, held in recorded.items()}
    best = max(certainty.values())
    matches = [file for file, sure in certainty.items() if sure and sure == best]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = name_list(file.name for file in matches)
        raise UsageError(
            f"project {project!r} matches several exports in {path} ({names}): "
            "give ENTITY/PROJECT, or the *_runs.parquet itself"
        )
    raise UsageError(f"project {project!r} is not in {path} (exports there: {labels})")


class ExportSource(WandbSource):
    """A project written by export_runs.py: `…_runs.parquet` (config and summary as JSON) and, with
    --include-history, `…_history.parquet` (read for the needed runs and keys only)."""

    def __init__(self, path: Path, project: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.runs_file = find_export(path, project)
        metadata = export_metadata(self.runs_file) or {}
        self.history_file = history_file_of(self.runs_file, metadata)
        self.history_keys = self._exported_history_keys(metadata)

    @staticmethod
    def _exported_history_keys(metadata: dict[str, Any]) -> set[str] | None:
        """The keys an export limited its history to (--history-keys), None for all."""
        try:
            keys = metadata["filters"]["history_keys"]
        except (KeyError, TypeError):
            return None
        return set(keys) if isinstance(keys, list) else None

    def _list(self) -> Iterator[ListedRun]:
        columns = ("id", "name", "state", *RAW_JSON_COLUMNS)
        schema = pl.read_parquet_schema(self.runs_file)
        missing = [column for column in columns if column not in schema]
        if missing:
            raise UsageError(f"{self.runs_file} is not a runs export: no {', '.join(missing)} column")
        for row in pl.read_parquet(self.runs_file).iter_rows(named=True):
            config, summary = (parse_object(row[c])[0] or {} for c in RAW_JSON_COLUMNS)
            yield ListedRun(row["id"], row["name"] or row["id"], row["state"], config, summary, row)

    def _history(self, pairs: pl.DataFrame, *, needed: bool) -> pl.DataFrame:
        keys = pairs["key"].unique().to_list()
        history = self.history_file if self.history_file and self.history_file.is_file() else None
        if needed and keys and history is None:
            raise UsageError(
                f"{self.runs_file.name} was exported without its history: this query needs it "
                "(export with --include-history, or use --aggregation last)"
            )
        absent = sorted(set(keys) - self.history_keys) if self.history_keys is not None else []
        if needed and absent:
            raise UsageError(
                f"{self.runs_file.name} was exported with --history-keys {','.join(sorted(self.history_keys or []))}: "
                f"no history of {', '.join(absent)}"
            )
        if not keys or history is None:
            return _points({})
        try:
            missing = [c for c in (RUN, "key", "step", "value") if c not in pl.read_parquet_schema(history)]
            if missing:
                raise UsageError(f"{history} is not a history export: no {', '.join(missing)} column")
            return (
                pl.scan_parquet(history)
                .filter(pl.col(RUN).is_in(pairs[RUN].unique().to_list()) & pl.col("key").is_in(keys))
                .select(RUN, "key", pl.col("step").cast(pl.Float64), pl.col("value").cast(pl.Float64))
                .collect()
                .join(pairs, on=[RUN, "key"], how="semi")
            )
        except (pl.exceptions.PolarsError, OSError) as error:  # cut short, not parquet, odd column types
            raise UsageError(f"cannot read the history {history}: {describe(error)}") from None


# ---------------------------------------------------------------- the query API


def source_kind(path: Path) -> SourceKind:
    """`export` for a runs parquet or a folder holding one, `offline` for anything else."""
    if path.name.endswith("_runs.parquet") or (path.is_dir() and any(path.glob("*_runs.parquet"))):
        return "export"
    return "offline"


class WandbQuery(TopkQuery):
    """Query W&B runs with metric constraints, top-k selection and Pareto fronts (read-only, cached)."""

    def __init__(
        self,
        project: str | None = None,
        api_key: str | None = None,
        *,
        source: str | Path | None = None,
        kind: SourceKind | None = None,
        workers: int = 8,
        timeout: float = 60,
        last_from: str = "summary",
    ) -> None:
        """`project` as entity/project (the API, or the project inside `source`); `source` an offline
        `wandb/` folder, run folder or `.wandb` file, or an export folder or `*_runs.parquet`
        (`kind` says which; told apart by the files otherwise).

        `last_from="history"` answers `last` from the history's last finite point, not the summary.
        """
        super().__init__()
        if last_from not in LAST_FROM:
            raise UsageError(f"last_from must be one of {', '.join(LAST_FROM)} (got {last_from!r})")
        self.project, self.api_key, self.source_path, self.kind = project, api_key, source, kind
        self.workers, self.timeout, self.last_from = workers, timeout, last_from

    def _open_source(self) -> WandbSource:
        if self.source_path is None:
            if not self.project:
                raise UsageError("a W&B project (entity/project) or a source folder is needed")
            return ApiSource(
                self.project,
                self.api_key,
                workers=self.workers,
                timeout=self.timeout,
                last_from=self.last_from,
            )
        path = Path(self.source_path).expanduser()
        if (self.kind or source_kind(path)) == "export":
            return ExportSource(path, self.project, last_from=self.last_from)
        return OfflineSource(path, self.project, last_from=self.last_from)

    def _parse_state(self, state: str | None) -> str | None:
        return parse_state(state)

    def _describe(self, run_ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        return self.source.describe(run_ids)

    def _unknown_metrics(self, unknown: list[str], known: list[str], where: list[str]) -> Exception:
        text = sorted(set(unknown) & self.source.text_keys())
        if text:
            return ConstraintError(
                f"metric {', '.join(repr(k) for k in text)} holds text, booleans or lists, not numbers: "
                "it cannot be ranked, constrained or put on a Pareto axis"
            )
        error = super()._unknown_metrics(unknown, known, where)
        return ConstraintError(
            f"{error} (W&B metrics are found through the run summaries: a key logged with"
            ' define_metric(summary="none") is not in them)'
        )
