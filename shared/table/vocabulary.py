"""The words the tools share, light to import: aggregations, run states, where a W&B `last` comes from."""

from __future__ import annotations

from typing import Literal

Aggregation = Literal["last", "mean_last_n", "min", "max", "mean_all"]


AGGREGATIONS: tuple[str, ...] = ("last", "mean_last_n", "min", "max", "mean_all")


WANDB_STATES = ("running", "finished", "failed", "crashed", "killed", "preempting", "preempted", "pending")


LAST_FROM = ("summary", "history")  # where a W&B `last` comes from


NEPTUNE_STATES = ("active", "inactive")
PIVOT_ROWS, PIVOT_COLS = "architecture", "dataset"  # analyze's pivot axes by default
TOP = 10  # rows of analyze's ranking by default
