"""W&B run sources: a project through the API and offline run logs, listed once with config and summary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from shared.base.errors import ToolFailure, UsageError, describe
from shared.base.text import name_list
from shared.cli.terminal import ItemProgress, warn
from shared.table.record_source import ListedRun, WandbSource, _points
from shared.table.series import RUN
from shared.table.vocabulary import WANDB_STATES as STATES


def parse_state(state: str | None) -> str | None:
    """A user's --state as W&B spells it; anything else is a usage error."""
    if state is None:
        return None
    if state.strip().lower() not in STATES:
        raise UsageError(f"unknown run state {state!r} (W&B runs are {', '.join(STATES)})")
    return state.strip().lower()


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
            from shared.wandb.api import connect  # imports wandb: only when the API is queried
            from shared.wandb.auth import wandb_credentials

            self._api = connect(wandb_credentials(self.api_key), self.timeout)
        return self._api

    def _list(self) -> Iterator[ListedRun]:
        from shared.wandb.api import RunPages, run_record

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
        from shared.base.concurrency import bounded_map
        from shared.wandb.history import HistoryFetcher

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


class OfflineSource(WandbSource):
    """Offline run logs (`wandb/`, `offline-run-*` folders, `.wandb` files): listed in one pass without
    history; the history of the needed keys is read from the logs of the runs that need it."""

    def __init__(self, path: Path, project: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        from shared.wandb.offline import OfflineLogError, find_run_logs  # imports wandb's protobuf

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
        from shared.wandb.offline import merged_runs, read_run_log, session_groups

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
        from shared.wandb.offline import merged_runs, read_run_log

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
