"""Inputs for the HTML report tests: the bundled samples exported, runs with hostile names, tags and config
values (with history), and a reader of the page's tables."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import polars as pl

from shared.table.schema import HISTORY_COLUMNS, RunRecord
from tests.current_data import load_script, write_export

ROOT = Path(__file__).resolve().parent.parent
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
SCRIPT_NAME = "</script><script>alert(1)</script>"
HOSTILE_KEY = "<script>alert(3)</script>"  # a config key: its column is config_<script>alert(3)<_script>
STEPS = 20


def export_samples(folder: Path) -> tuple[Path, Path]:
    """The bundled W&B offline runs and Neptune archive exported with history: their runs parquets."""
    wandb_export = load_script("export_runs")
    neptune_export = load_script("export_runs", "neptune-tools")
    wandb_folder, neptune_folder = folder / "wandb_export", folder / "neptune_export"
    source = ROOT / "samples" / "wandb"
    assert wandb_export.main(["--offline", str(source), "-o", str(wandb_folder), "--include-history"]) == 0
    archive = ROOT / "samples" / "neptune" / "archive"
    assert (
        neptune_export.main(["--source", str(archive), "-o", str(neptune_folder), "--include-history"]) == 0
    )
    return next(wandb_folder.glob("*_runs.parquet")), next(neptune_folder.glob("*_runs.parquet"))


def hostile_export(folder: Path) -> Path:
    """Four runs, two named with markup, whose tags and config values (and one config key) are markup
    too; their test/mse history beside them, the last value being the summary. The runs parquet."""
    names = [HOSTILE_NAME, SCRIPT_NAME, "plain_run_a", "plain_run_b"]
    records, history = [], []
    for index, name in enumerate(names):
        final = 0.1 * (index + 1)
        markup = [HOSTILE_NAME, SCRIPT_NAME][index % 2]
        records.append(
            RunRecord(
                id=f"h{index}",
                entity="team",
                project="hostile",
                name=name,
                state="finished",
                created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=index),
                tags=[markup, "ok"],
                config={"model": {"type": markup}, "data": {"dataset": f"d{index % 2}"}, HOSTILE_KEY: index},
                summary={"test/mse": final},
            )
        )
        for step in range(STEPS):
            value = final * (1 + 9 * math.exp(-step / 4)) if step < STEPS - 1 else final
            history.append((f"h{index}", step, None, "test/mse", value))
    path = write_export(folder, records)
    frame = pl.DataFrame(history, schema=HISTORY_COLUMNS, orient="row")
    frame.write_parquet(folder / path.name.replace("_runs.parquet", "_history.parquet"))
    return path


class PageTables(HTMLParser):
    """Every <table id=…> of a page: its header and rows of (text, attributes) cells; and every tag seen."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []  # tag, attribute, value
        self._table: dict | None = None
        self._cell: list | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        attributes = dict(attrs)
        if tag == "table" and attributes.get("id"):
            self._table = self.tables[attributes["id"]] = {"header": [], "rows": []}
        elif self._table is not None and tag == "tr":
            self._table["rows"].append([])
        elif self._table is not None and tag in ("td", "th"):
            self._cell = ["", attributes, tag]

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            text, attributes, kind = self._cell
            if kind == "th":
                self._table["header"].append(text)
            else:
                self._table["rows"][-1].append((text, attributes))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0] += data

    def column(self, table: str, name: str) -> list[str]:
        """The texts of one column of a table, top to bottom."""
        index = self.tables[table]["header"].index(name)
        return [row[index][0] for row in self.tables[table]["rows"] if row]
