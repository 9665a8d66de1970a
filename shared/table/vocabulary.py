"""The words the tools share, light to import (the scripts' parsers use them): aggregations, run states,
where a W&B `last` comes from, analyze's defaults, and the extensions `-o` writes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from shared.base.errors import BadInput

Aggregation = Literal["last", "mean_last_n", "min", "max", "mean_all"]
AGGREGATIONS: tuple[str, ...] = ("last", "mean_last_n", "min", "max", "mean_all")
WANDB_STATES = ("running", "finished", "failed", "crashed", "killed", "preempting", "preempted", "pending")
NEPTUNE_STATES = ("active", "inactive")
LAST_FROM = ("summary", "history")  # where a W&B `last` comes from
PIVOT_ROWS, PIVOT_COLS = "architecture", "dataset"  # analyze's pivot axes by default
TOP = 10  # rows of analyze's ranking by default
OUTPUT_SUFFIXES = (".csv", ".parquet", ".json", ".md")  # what -o writes, by extension


def check_output_suffix(path: Path) -> None:
    """BadInput (one line) for an -o file whose extension names no format we write."""
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise BadInput(
            f"-o {path}: unknown extension {path.suffix or '(none)'} (use {', '.join(OUTPUT_SUFFIXES)})"
        )
