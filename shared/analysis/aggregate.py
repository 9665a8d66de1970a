"""Aggregation: many runs exports → one deduplicated, filtered, enriched parquet (and merged history)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from shared.analysis.enrich import ColumnRule, check_rule_columns, enrich, rule_inputs
from shared.analysis.frames import Selection
from shared.base.errors import BadInput
from shared.base.events import Events
from shared.base.storage import commit_together, parquet_schema
from shared.base.text import name_list
from shared.table.exports import (
    FILE_INDEX,
    ROW_INDEX,
    RUN_KEY,
    SOURCE_COLUMN,
    RunsFile,
    check_unchanged,
    conform,
    history_sibling,
    newest_copies,
    rounded_integers,
    scan_runs,
    union_schema,
)
from shared.table.outputs import staged_table
from shared.table.schema import GENERATION_KEY, HISTORY, HISTORY_COLUMNS, HISTORY_FILE_KEY


@dataclass
class AggregateReport:
    """What an aggregation read, dropped and wrote."""

    inputs: list[dict[str, object]] = field(default_factory=list)  # per input: file, runs, kept
    dropped: list[tuple[str, int]] = field(default_factory=list)  # (reason, runs), in order
    read: int = 0  # runs in the inputs, copies counted
    kept: int = 0
    columns: int = 0
    emptied_by: str | None = None  # the filter that left nothing, if any
    history_path: Path | None = None
    history_rows: int = 0
    streams: dict[str, Path] = field(default_factory=dict)  # the other stream files written, by name


def select_runs(
    files: Sequence[RunsFile],
    schema: dict[str, pl.DataType],
    selection: Selection,
    rules: Sequence[ColumnRule],
) -> tuple[pl.DataFrame, AggregateReport]:
    """The kept runs' keys (file, row, id, entity, project), computed on a narrow scan, and the counts."""
    # Only the columns the newest copy, the filters and the rules read: 10,000 exports' names are 0.1 GB.
    filtered = {name for _, condition in selection.steps() for name in condition.meta.root_names()}
    wanted = {*RUN_KEY, "heartbeat_at", *filtered, *rule_inputs(rules)}
    if selection.states and "state" not in schema:
        raise BadInput(f"--state needs a state column, which the inputs lack (columns: {name_list(schema)})")
    if selection.protocol != "all" and not any(r.name == "protocol" for r in rules):
        raise BadInput("--protocol needs the protocol rule (a --rules file removed it): use --protocol all")
    columns = [c for c in [*schema, SOURCE_COLUMN] if c in wanted]  # scan_runs adds _source_file
    narrow = scan_runs(files, schema).select(*columns, FILE_INDEX, ROW_INDEX)
    narrow = enrich(narrow, rules).collect() if rules else narrow.collect()
    report = AggregateReport()
    winners = newest_copies(narrow.lazy(), files).collect()
    kept = narrow.join(winners, on=[FILE_INDEX, ROW_INDEX], how="semi", maintain_order="left")
    report.dropped.append(("older copies of a run in another export", narrow.height - kept.height))
    for label, condition in selection.steps():
        before = kept.height
        kept = kept.filter(condition)
        report.dropped.append((label, before - kept.height))
        if before and not kept.height and report.emptied_by is None:
            report.emptied_by = label
    per_file = dict(kept.group_by(FILE_INDEX).len().iter_rows())
    read = dict(narrow.group_by(FILE_INDEX).len().iter_rows())
    report.inputs = [
        {"input": f.label, "runs": read.get(i, 0), "kept": per_file.get(i, 0)} for i, f in enumerate(files)
    ]
    report.read = narrow.height
    report.kept = kept.height
    return kept.select(FILE_INDEX, ROW_INDEX, *RUN_KEY), report


def aggregate(
    files: Sequence[RunsFile],
    output: Path,
    selection: Selection,
    rules: Sequence[ColumnRule],
    *,
    enrich_output: bool = True,
    include_history: bool = False,
    events: Events | None = None,
) -> AggregateReport:
    """Union, deduplicate, filter and enrich `files` into `output` (by its extension; .parquet and .csv
    streaming) and, `include_history`, their history into `<output stem>_history.parquet`: both written
    in full to temp files, then moved into place together, each with the aggregate's generation (the pair
    is one state). ExportChanged, nothing written, when an input was replaced as it was read (an export).
    Columns turned into text and inputs without history are told to `events`."""
    events = events or Events()
    schema, warnings = union_schema([f.schema for f in files])
    for message in [*warnings, *rounded_integers(files, schema)]:
        events.warn(message)
    # The protocol filter needs its rule even when the output is not enriched.
    needed = (
        list(rules)
        if enrich_output
        else [r for r in rules if r.name == "protocol" and selection.protocol != "all"]
    )
    # Against every column, as the output will have them: select_runs reads only the ones it needs.
    check_rule_columns(needed, schema | {SOURCE_COLUMN: pl.String()})
    kept, report = select_runs(files, schema, selection, needed)
    frame = scan_runs(files, schema, kept[ROW_INDEX])
    if enrich_output:
        # Replaced in place, so a rule can still read the input's own column of its name (as select_runs
        # did), then moved to the end so every aggregate has the same column order.
        names = [r.name for r in rules]
        frame = enrich(frame, rules).select(pl.exclude(names), *names)
    frame = frame.drop(FILE_INDEX, ROW_INDEX)
    report.columns = len(frame.collect_schema())
    generation = {GENERATION_KEY: uuid.uuid4().hex}
    history = history_sibling(output)
    listed = {HISTORY_FILE_KEY: history.name if include_history else ""}
    staged = [staged_table(frame, output, metadata=generation | listed)]
    try:
        if include_history:
            report.history_path = history
            merged = merge_history(files, kept, events)
            staged.append(staged_table(merged, history, metadata=generation))
            report.history_rows = (
                pl.scan_parquet(staged[-1].temp, glob=False).select(pl.len()).collect().item()
            )
            for name in sorted({name for runs in files for name, _ in runs.streams}):
                report.streams[name] = history.with_name(
                    history.name.removesuffix(HISTORY.suffix) + f"_{name}.parquet"
                )
                merged = merge_history(files, kept, events, stream=name)
                staged.append(staged_table(merged, report.streams[name], metadata=generation))
        check_unchanged(files)
        commit_together(staged)
    finally:
        for file in staged:
            file.discard()  # a file moved into place is no longer at its temp path
    if not include_history and history.exists():
        events.warn(
            f"{history} is left from an earlier aggregate: not part of this one, so the tools ignore it"
            " (aggregate with --include-history to refresh it, or delete it)"
        )
    return report


def merge_history(
    files: Sequence[RunsFile], kept: pl.DataFrame, events: Events, *, stream: str | None = None
) -> pl.LazyFrame:
    """The kept runs' history from each input's history file (opened with it), with entity/project; or
    their rows of another stream's files (history_other, console, system), from the inputs that have one."""
    sources = []
    for index, runs in enumerate(files):
        if stream is not None:
            path = dict(runs.streams).get(stream)
            if path is not None:
                sources.append((index, path, parquet_schema(path)))
            continue
        path = runs.history
        if path is None:
            events.warn(f"no history for {runs.label}: it was exported without --include-history")
            continue
        if not path.is_file():
            events.warn(f"no history file for {runs.label} (looked for {path.name})")
            continue
        sources.append((index, path, parquet_schema(path)))  # a damaged file: one line naming it
    schema, warnings = union_schema([s for _, _, s in sources])
    for message in warnings:
        events.warn(f"history: {message}")
    if "run_id" not in schema:
        schema = dict(HISTORY_COLUMNS)  # only with history: a stream is merged when an input has it
    runs = kept.select(FILE_INDEX, pl.col("id").alias("run_id"), "entity", "project").lazy()
    order = ["run_id", "entity", "project", *(c for c in schema if c != "run_id"), SOURCE_COLUMN]
    frames = [
        conform(pl.scan_parquet(path, glob=False), file_schema, schema)
        .with_columns(pl.lit(index, pl.Int32).alias(FILE_INDEX), pl.lit(str(path)).alias(SOURCE_COLUMN))
        .join(runs, on=[FILE_INDEX, "run_id"], how="inner", maintain_order="left")
        .select(order)
        for index, path, file_schema in sources
    ]
    empty = pl.LazyFrame(
        schema=schema | {"entity": pl.String, "project": pl.String, SOURCE_COLUMN: pl.String}
    )
    return pl.concat(frames, how="vertical") if frames else empty.select(order)
