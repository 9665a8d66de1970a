"""The words the tools share, light to import (the scripts' parsers use them): aggregations, run states,
where a W&B `last` comes from, analyze's defaults, and the extensions `-o` writes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from shared.base.errors import BadInput

Aggregation = Literal["last", "mean_last_n", "min", "max", "mean_all"]
AGGREGATIONS: tuple[str, ...] = ("last", "mean_last_n", "min", "max", "mean_all")
# The run states of both trackers, as the exports' `state` column spells them; Neptune's own two words
# are aliases (an inactive Neptune run is exported as finished, or failed when sys/failed is set).
STATES = ("running", "finished", "failed", "crashed", "killed", "preempting", "preempted", "pending")
STATE_ALIASES = {"active": "running", "inactive": "finished"}
LAST_FROM = ("summary", "history")  # where a W&B `last` comes from
PIVOT_ROWS, PIVOT_COLS = "architecture", "dataset"  # analyze's pivot axes by default
TOP = 10  # rows of analyze's ranking by default
OUTPUT_SUFFIXES = (".csv", ".parquet", ".json", ".md")  # what -o writes, by extension


def parse_state(text: str, flag: str = "--state") -> str:
    """A user's run state in STATES (an alias as the state it names); BadInput naming the known ones."""
    state = text.strip().lower()
    state = STATE_ALIASES.get(state, state)
    if state not in STATES:
        aliases = ", ".join(f"{alias} = {state}" for alias, state in STATE_ALIASES.items())
        raise BadInput(
            f"{flag}: unknown run state {text!r} (known: {', '.join(STATES)}; Neptune's {aliases})"
        )
    return state


def check_output_suffix(path: Path) -> None:
    """BadInput (one line) for an -o file whose extension names no format we write."""
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise BadInput(
            f"-o {path}: unknown extension {path.suffix or '(none)'} (use {', '.join(OUTPUT_SUFFIXES)})"
        )
