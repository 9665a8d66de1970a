"""NeptuneQuery: top-k and Pareto queries over Neptune runs (a server, a neptune-exporter archive or
.neptune offline runs), WandbQuery's twin. Public API of neptune-tools/query_topk.py (docs/topk.md)."""

from __future__ import annotations

from pathlib import Path

from shared.base.events import Events
from shared.neptune.runs import NeptuneSource
from shared.neptune.sources import open_source, parse_state
from shared.query.api import RunInfo, TopkQuery

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
    ) -> None:
        """`project` as workspace/project; `source` a neptune-exporter data folder or a .neptune folder.

        With `cache`, an archive keeps per-series summaries in the user's cache folder
        ($XDG_CACHE_HOME/run-tools, ~/.cache/run-tools): later queries on the unchanged archive answer
        from those, exactly as from the points (a mean_last_n window over 100 points reads the archive).
        What happened along the way is in `events` (shared.base.events).
        """
        super().__init__(events)
        self.project, self.api_token, self.source_path, self.workers = project, api_token, source, workers
        self.cache = cache

    def _open_source(self) -> NeptuneSource:
        return open_source(
            self.project,
            source=self.source_path,
            api_token=self.api_token,
            workers=self.workers,
            cache=self.cache,
            events=self.events,
        )

    def _parse_state(self, state: str | None) -> str | None:
        return parse_state(state)
