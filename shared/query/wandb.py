"""WandbQuery: top-k and Pareto queries over W&B runs (the API, offline run logs, export folders), NeptuneQuery's twin."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from shared.base.errors import BadInput, UnknownMetric
from shared.base.events import Events
from shared.query.api import TopkQuery
from shared.query.constraints import ConstraintError
from shared.table.record_source import RecordSource
from shared.table.schema import holds_export
from shared.table.vocabulary import LAST_FROM
from shared.wandb.sources import ApiSource, OfflineSource, parse_state

SourceKind = Literal["offline", "export"]


def source_kind(path: Path) -> SourceKind:
    """`export` for a runs parquet or a folder holding one, `offline` for anything else."""
    return "export" if holds_export(path) else "offline"


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
        events: Events | None = None,
    ) -> None:
        """`project` as entity/project (the API, or the project inside `source`); `source` an offline
        `wandb/` folder, run folder or `.wandb` file, or an export folder or `*_runs.parquet`
        (`kind` says which; told apart by the files otherwise).

        `last_from="history"` answers `last` from the history's last finite point, not the summary.
        What happened along the way is in `events` (shared.base.events).
        """
        super().__init__(events)
        if last_from not in LAST_FROM:
            raise BadInput(f"last_from must be one of {', '.join(LAST_FROM)} (got {last_from!r})")
        self.project, self.api_key, self.source_path, self.kind = project, api_key, source, kind
        self.workers, self.timeout, self.last_from = workers, timeout, last_from

    def _open_source(self) -> RecordSource:
        if self.source_path is None:
            if not self.project:
                raise BadInput("a W&B project (entity/project) or a source folder is needed")
            return ApiSource(
                self.project,
                self.api_key,
                workers=self.workers,
                timeout=self.timeout,
                last_from=self.last_from,
                events=self.events,
            )
        path = Path(self.source_path).expanduser()
        if (self.kind or source_kind(path)) == "export":
            from shared.table.export_folder import ExportFolderSource  # pyarrow: only for an export folder

            return ExportFolderSource(path, self.project, last_from=self.last_from, events=self.events)
        return OfflineSource(path, self.project, last_from=self.last_from, events=self.events)

    def _parse_state(self, state: str | None) -> str | None:
        return parse_state(state)

    def _unknown_metrics(self, unknown: list[str], known: list[str], where: list[str]) -> BadInput:
        assert isinstance(self.source, RecordSource)
        text = sorted(set(unknown) & self.source.text_keys())
        if text:
            return ConstraintError(
                f"metric {', '.join(repr(k) for k in text)} holds text, booleans or lists, not numbers: "
                "it cannot be ranked, constrained or put on a Pareto axis"
            )
        error = super()._unknown_metrics(unknown, known, where)
        return UnknownMetric(
            f"{error} (W&B metrics are found through the run summaries: a key logged with"
            ' define_metric(summary="none") is not in them)',
            unknown,
            known,
        )
