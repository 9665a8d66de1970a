"""NeptuneQuery: top-k and Pareto queries over Neptune runs (a server, a neptune-exporter archive or
.neptune offline runs), WandbQuery's twin. Public API of neptune-tools/query_topk.py (docs/topk.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.base.events import Events
from shared.neptune.runs import NeptuneSource
from shared.neptune.sources import open_source, parse_state, source_path
from shared.query.api import RunInfo, TopkQuery
from shared.table.schema import holds_export
from shared.table.vocabulary import parse_state as shared_state

if TYPE_CHECKING:
    from shared.table.export_folder import ExportFolderSource

__all__ = ["NeptuneQuery", "RunInfo"]


class NeptuneQuery(TopkQuery):
    """Query Neptune runs with metric constraints and top-k selection (read-only, cached per instance)."""

    def __init__(
        self,
        project: str | None = None,
        api_token: str | None = None,
        *,
        source: str | Path | None = None,
        workers: int = 8,
        cache: bool = True,
        events: Events | None = None,
        lineage: bool = True,
        experiments: bool = False,
    ) -> None:
        """`project` as workspace/project; `source` a neptune-exporter data folder, a .neptune folder or
        a folder written by export_runs.py (either tracker's).

        With `cache`, an archive keeps per-series summaries in the user's cache folder
        ($XDG_CACHE_HOME/run-tools, ~/.cache/run-tools): later queries on the unchanged archive answer
        from those, exactly as from the points (a mean_last_n window over 100 points reads the archive).
        What happened along the way is in `events` (shared.base.events).

        Neptune 3 runs (an archive of the neptune3 exporter): with `lineage` (the default, as Neptune
        answered) a forked run is answered over its ancestors' points up to its fork step and then its
        own; `experiments` ranks one run per experiment, its head (docs/topk.md).
        """
        super().__init__(events, lineage=lineage, experiments=experiments)
        self.project, self.api_token, self.source_path, self.workers = project, api_token, source, workers
        self.cache = cache

    def _open_source(self) -> NeptuneSource | ExportFolderSource:
        if self.source_path is not None and holds_export(source_path(self.source_path)):
            from shared.table.export_folder import ExportFolderSource  # pyarrow: only for an export folder

            return ExportFolderSource(source_path(self.source_path), self.project, events=self.events)
        return open_source(
            self.project,
            source=self.source_path,
            api_token=self.api_token,
            workers=self.workers,
            cache=self.cache,
            events=self.events,
        )

    def _run_lineage(self) -> dict[str, dict[str, Any]]:
        return self.source.lineage_attributes()  # an export folder's from its runs table

    def _run_forks(self) -> dict[str, dict[str, Any]]:
        if isinstance(self.source, NeptuneSource):  # an archive finds its forks in its summary pass
            return self.source.fork_attributes()
        return super()._run_forks()

    def _parse_state(self, state: str | None) -> str | None:
        if not isinstance(self.source, NeptuneSource):  # an export folder's states are the shared ones
            return None if state is None else shared_state(state)
        return parse_state(state)
