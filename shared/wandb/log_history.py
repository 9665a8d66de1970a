"""The history of an offline W&B run log as tidy frames: numbers to history, every other value (strings,
booleans, histograms, media, tables, lists) to history_other. The items arrive decoded from the log's
history records (shared.wandb.offline), as names and JSON values."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import polars as pl

from shared.table.history import empty_history, epoch_seconds_to_utc
from shared.table.schema import HISTORY_COLUMNS, HISTORY_OTHER, is_internal_key, polars_schema

VALUES_PER_BATCH = 100_000  # history values held as Python strings before they become a frame
HISTORY_OTHER_COLUMNS = polars_schema(tuple(HISTORY_OTHER.columns.items()))


def empty_history_other() -> pl.DataFrame:
    return pl.DataFrame(schema=HISTORY_OTHER_COLUMNS)


def _item_per_row(items: pl.DataFrame, name: str, rows: int) -> pl.Series:
    """The numeric value of item `name` in each of `rows` rows (null where a row has none)."""
    found = items.filter(pl.col("name") == name)
    column = pl.repeat(None, rows, dtype=pl.Float64, eager=True)
    return column.scatter(found["row"], found["value_json"].cast(pl.Float64, strict=False))


def value_type(value: Any) -> str:
    """The history_other `type` of a decoded JSON value that is not a number."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "object"


def object_type(wandb_type: Any) -> str:
    """The history_other `type` of a logged W&B object by its `_type` (`histogram`, `table-file`, …)."""
    name = str(wandb_type)
    if name.startswith("histogram"):
        return "histogram"
    if "table" in name:
        return "table"
    if name.endswith("-file") or name.split("/")[0] in _MEDIA:
        return "media"
    return "object"


_MEDIA = {"image", "images", "audio", "video", "html", "object3D", "molecule", "plotly", "bokeh-file"}


def _other_value(value_json: str) -> tuple[str, str]:
    """(type, value) of one item that is not a number: a string as it is, anything else as JSON."""
    try:
        value = json.loads(value_json)
    except ValueError:  # not JSON after all: kept as the log holds it
        return "object", value_json
    return value_type(value), value if isinstance(value, str) else value_json


def _object_value(parts: list[tuple[str, str]]) -> tuple[str, str]:
    """(type, JSON) of a W&B object logged as items `<name>._type`, `<name>.bins`, … (sub-names, JSON)."""
    tree: dict[str, Any] = {}
    for sub_name, value_json in parts:
        *parents, leaf = sub_name.split(".")
        node = tree
        for name in parents:
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        try:
            node[leaf] = json.loads(value_json)
        except ValueError:
            node[leaf] = value_json
    return object_type(tree.get("_type")), json.dumps(tree, sort_keys=True)


class HistoryColumns:
    """History items gathered as flat string columns, turned into tidy frames a batch at a time."""

    def __init__(self, history_keys: set[str] | None) -> None:
        self.history_keys = history_keys
        self._frames: list[pl.DataFrame] = []
        self._others: list[pl.DataFrame] = []
        self._rows_before = 0  # history rows already in frames (the fallback step of a row without one)
        self._names: list[str] = []
        self._values: list[str] = []
        self._items_per_row: list[int] = []
        self._steps: list[int | None] = []

    def add(
        self, names: list[str], values: list[str], items_per_row: list[int], steps: list[int | None]
    ) -> None:
        """Rows of history items: names and JSON values of every item, each row's item count and step."""
        self._names += names
        self._values += values
        self._items_per_row += items_per_row
        self._steps += steps
        if len(self._values) >= VALUES_PER_BATCH:
            self._flush()

    def frame(self, run_id: str) -> pl.DataFrame:
        """The numeric history (schema.HISTORY)."""
        return self._run_frame(run_id, self._frames, empty_history, HISTORY_COLUMNS)

    def other_frame(self, run_id: str) -> pl.DataFrame:
        """The values that are not numbers (schema.HISTORY_OTHER)."""
        return self._run_frame(run_id, self._others, empty_history_other, HISTORY_OTHER_COLUMNS)

    def _run_frame(
        self,
        run_id: str,
        parts: list[pl.DataFrame],
        empty: Callable[[], pl.DataFrame],
        columns: dict[str, pl.DataType],
    ) -> pl.DataFrame:
        """One run's rows of `parts` (one of this builder's lists, which the flush fills first)."""
        self._flush()
        if not parts:
            return empty()
        tidy = pl.concat(parts)
        return tidy.select(pl.lit(run_id).alias("run_id"), *tidy.columns).cast(columns)

    def _flush(self) -> None:
        if not self._items_per_row:
            return
        rows = len(self._items_per_row)
        items = pl.DataFrame({"name": self._names, "value_json": self._values}).with_columns(
            pl.int_range(rows, dtype=pl.UInt32)
            .repeat_by(pl.Series(self._items_per_row))
            .explode()
            .alias("row")
        )
        per_row = self._per_row_step_and_time(items, rows)
        metrics, objects = self._values_kept(items)
        if metrics.height:
            metrics = metrics.with_columns(value=pl.col("value_json").cast(pl.Float64, strict=False))
            numbers = metrics.drop_nulls("value")
            self._frames.append(
                pl.DataFrame(
                    {
                        "step": per_row["step"].gather(numbers["row"]),
                        "timestamp": per_row["timestamp"].gather(numbers["row"]),
                        "key": numbers["name"],
                        "value": numbers["value"],
                    }
                )
            )
            others = metrics.filter(pl.col("value").is_null())
            typed = [_other_value(value_json) for value_json in others["value_json"]]
            self._add_others(per_row, others["row"], others["name"], typed)
        if objects.height:
            grouped = objects.group_by("row", "object", maintain_order=True).agg("sub", "value_json")
            typed = [
                _object_value(list(zip(subs, values, strict=True)))
                for subs, values in zip(grouped["sub"], grouped["value_json"], strict=True)
            ]
            self._add_others(per_row, grouped["row"], grouped["object"], typed)
        self._rows_before += rows
        self._names, self._values, self._items_per_row, self._steps = [], [], [], []

    def _add_others(
        self, per_row: pl.DataFrame, row: pl.Series, key: pl.Series, typed: list[tuple[str, str]]
    ) -> None:
        if not typed:
            return
        kinds, values = zip(*typed, strict=True)
        self._others.append(
            pl.DataFrame(
                {
                    "step": per_row["step"].gather(row),
                    "timestamp": per_row["timestamp"].gather(row),
                    "key": key,
                    "type": list(kinds),
                    "value": list(values),
                }
            )
        )

    def _per_row_step_and_time(self, items: pl.DataFrame, rows: int) -> pl.DataFrame:
        """Each row's step (the record's step, else its `_step` item, else its ordinal) and `_timestamp`."""
        ordinal = pl.int_range(self._rows_before, self._rows_before + rows, dtype=pl.Int64)
        return pl.DataFrame(
            {
                "record_step": pl.Series(self._steps, dtype=pl.Int64),
                "item_step": _item_per_row(items, "_step", rows),
                "seconds": _item_per_row(items, "_timestamp", rows),
            }
        ).select(
            pl.coalesce("record_step", pl.col("item_step").cast(pl.Int64), ordinal).alias("step"),
            epoch_seconds_to_utc(pl.col("seconds")).alias("timestamp"),
        )

    def _values_kept(self, items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Items that are values (not W&B internals, not `null`, wanted), and the parts of W&B objects
        (row, object, sub, value_json).

        Objects (histograms, images, tables) arrive as several items `<name>._type`, `<name>.values`, …;
        each becomes one value, as it is one in a history row from the API.
        """
        names = items["name"].unique().to_list()
        internal = [name for name in names if is_internal_key(name)]
        kept = items.filter(~pl.col("name").is_in(internal) & (pl.col("value_json") != "null"))
        media = kept.filter(pl.col("name").str.ends_with("._type")).select(
            "row", object=pl.col("name").str.strip_suffix("._type")
        )
        parts = pl.DataFrame(
            schema={"row": pl.UInt32, "object": pl.String, "sub": pl.String, "value_json": pl.String}
        )
        if media.height:
            joined = kept.join(media, on="row").filter(pl.col("name").str.starts_with(pl.col("object") + "."))
            kept = kept.join(joined.select("row", "name"), on=["row", "name"], how="anti")
            parts = joined.select(
                "row",
                "object",
                sub=pl.col("name").str.slice(pl.col("object").str.len_chars() + 1),
                value_json="value_json",
            )
            if self.history_keys is not None:
                parts = parts.filter(pl.col("object").is_in(self.history_keys))
        if self.history_keys is not None:
            kept = kept.filter(pl.col("name").is_in(self.history_keys))
        return kept, parts
