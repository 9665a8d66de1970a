"""The source contract: what every run source (W&B API or offline, Neptune archive, offline or live) gives queries and exports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import polars as pl


class RunSource(Protocol):
    """What NeptuneQuery needs from a source; every frame uses plain run ids and attribute paths."""

    def runs(self, *, refresh: bool = False) -> pl.DataFrame:
        """Every run: run_id, name, state (`active`/`inactive`), cached until `refresh`."""
        ...

    def run_ids(self) -> list[str]:
        """Every run id (cheap once points were read: an archive notes them during that pass)."""
        ...

    def points(
        self,
        keys: Sequence[str],
        run_ids: Sequence[str] | None = None,
        *,
        series: bool = True,
        required: Sequence[str] = (),
    ) -> pl.LazyFrame:
        """Numeric points (run_id, key, step, value) of these paths; a single number has step null.

        Without `series` a source may give only each series' last value (the live runs table has it);
        runs lacking one of the `required` paths may be left out (they cannot be ranked anyway).
        """
        ...

    def attributes(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Every simple (non-series) attribute of these runs, by path."""
        ...

    def numeric_keys(self) -> list[str]:
        """Attribute paths that hold numbers in some run (for suggestions when a name is unknown)."""
        ...

    def raw_run(self, run_id: str) -> Any:
        """The closest thing to the run object this source has."""
        ...

    def close(self) -> None:
        """Release whatever the source opened."""
        ...
