"""analyze_runs.py --report: one self-contained HTML page (inline CSS, script and SVG figures) of a runs export."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jinja2
import polars as pl
from markupsafe import Markup

from shared.analysis import frames as an
from shared.analysis.plots import axis_name, plot_curve_panels, plot_system_panels
from shared.analysis.render import states_note
from shared.analysis.views import GroupView, ParetoView, PivotView, TopView, ViewOptions
from shared.base.errors import BadInput, describe
from shared.base.events import Events
from shared.base.storage import atomic_path
from shared.table.exports import FILE_INDEX, RUN_KEY, RunsFile, export_metadata, newest_files, row_counts
from shared.table.lineage import ANCESTRY_SCHEMA, Fork, ancestry, with_lineage
from shared.table.metrics import metric_column
from shared.table.outputs import format_value
from shared.table.schema import CONFIG_PREFIX
from shared.table.series import RUN
from shared.table.system_summary import SUMMARIES, summary_samples
from shared.table.vocabulary import TOP

TEMPLATES = Path(__file__).with_name("templates")
MAX_GROUPS = 100  # group statistics rows shown (best mean first): the page stays small
MAX_FRONT = 100  # Pareto front rows shown
TOP_METADATA = ("git_commit", "host", "program", "gpu")  # where and what the best runs ran
CURVE_PANELS = 12  # learning-curve panels: the best runs of the top table
# The runs table's system-metric summaries and the title of each one's panel of samples over time.
SYSTEM_PANELS = {
    "cpu_mean": "CPU (%)",
    "memory_peak_gb": "memory (GB)",
    "gpu_mean": "GPU (%)",
    "gpu_memory_peak_gb": "GPU memory (GB)",
}
DIGITS = 4  # significant digits shown; the full value is in the cell's title


@dataclass(frozen=True)
class Cell:
    text: str
    sort: str | None = None  # the key the header click sorts by (the full value); None: the text
    title: str | None = None  # the full value on hover
    bar: float | None = None  # a fullness bar, 0..1


@dataclass(frozen=True)
class Table:
    name: str  # the element id: not a section's
    header: list[str]
    numeric: list[bool]
    rows: list[list[Cell]]
    note: str = ""


def cell(value: Any) -> Cell:
    """A value as shown (rounded, lists joined) with its full value as sort key and hover text."""
    if value is None:
        return Cell("", "")
    if isinstance(value, float):
        full = repr(value)
        return Cell(format_value(value, DIGITS), full, full)
    if isinstance(value, bool):
        return Cell(str(value).lower())
    if isinstance(value, int):
        return Cell(str(value), str(value))
    if isinstance(value, datetime | date):
        return Cell(value.isoformat(sep=" ", timespec="minutes"), value.isoformat(), value.isoformat())
    return Cell(format_value(value))


def html_table(frame: pl.DataFrame, name: str, note: str = "") -> Table:
    """A frame as a sortable table; numeric columns sort by value."""
    numeric = [dtype.is_numeric() for dtype in frame.dtypes]
    rows = [[cell(value) for value in row] for row in frame.iter_rows()]
    return Table(name, list(frame.columns), numeric, rows, note)


def svg_markup(draw: Callable[[io.BytesIO], None], prefix: str) -> Markup:
    """The SVG `draw` writes, ready to inline: no XML prologue or namespaces, ids prefixed (several figures
    share one page's ids), shown at 1.6 times its print size."""
    buffer = io.BytesIO()
    draw(buffer)
    text = buffer.getvalue().decode()
    text = text[text.index("<svg") :]
    text = re.sub(r' xmlns(:xlink)?="[^"]*"', "", text, count=2)
    text = re.sub(r'(id="|href="#|url\(#)', rf"\g<1>{prefix}-", text)

    def scaled(match: re.Match[str]) -> str:
        return f'{match[1]}="{float(match[2]) * 1.6:.0f}pt"'

    # Matplotlib escapes text it writes (labels become `<!-- &lt;…&gt; -->` beside their glyphs).
    return Markup(re.sub(r'\b(width|height)="([\d.]+)pt"', scaled, text, count=2))


def read_section(files: Sequence[RunsFile], counts: dict[str, pl.DataFrame], funnel: an.Funnel) -> dict:
    """What was read: the inputs, projects, runs by state, the filters' counts, and what was left out."""
    rows, skipped = [], []
    read = row_counts(files)
    for runs_file, count in zip(files, read, strict=True):
        metadata = export_metadata(runs_file.path) or {}
        history = runs_file.history
        failed = metadata.get("failed_runs") or {}
        if isinstance(failed, dict) and failed:
            skipped.append(f"{runs_file.label}: {len(failed)} runs the export could not fetch")
        rows.append(
            {
                "file": runs_file.label,
                "runs": count,
                "exported at": runs_file.exported_at,
                "source": str(metadata.get("source_detail") or metadata.get("source") or ""),
                "history": "yes" if history and history.is_file() else "no",
            }
        )
    duplicates = sum(read) - funnel.steps[0][1]
    if duplicates > 0:
        skipped.append(f"{duplicates} copies of runs found in several inputs (the newest copy is kept)")
    return {
        "files": html_table(pl.DataFrame(rows), "input-files"),
        "projects": html_table(counts["projects"], "project-runs"),
        "states": html_table(counts["states"], "state-runs") if "states" in counts else None,
        "steps": funnel.steps,
        "skipped": skipped,
    }


def top_section(top: pl.DataFrame, options: ViewOptions) -> dict:
    """The best runs with the config values that differ between them (a config column holding what a
    parsed column shows is left to that one); the config values they share listed apart."""
    configs = [c for c in top.columns if c.startswith(CONFIG_PREFIX) and c not in options.columns]
    shared = {c: top[c][0] for c in configs if top[c].n_unique() == 1 and top[c][0] is not None}
    first = list(dict.fromkeys(["rank", "id", "name", options.metric, *options.columns]))
    keys = [c for c in top.columns if c not in first and c not in configs and c not in SYSTEM_PANELS]
    if "entity" in keys and top["entity"].n_unique() == 1:  # read for the curves; shown when teams differ
        keys.remove("entity")
    flat_keys = [k for k in keys if not top[k].dtype.is_nested()]
    shown_as: dict[str, str] = {}
    for config in (c for c in configs if top[c].n_unique() > 1 and not top[c].dtype.is_nested()):
        text = top[config].cast(pl.String)
        if parsed := next((k for k in flat_keys if text.eq_missing(top[k].cast(pl.String)).all()), None):
            shown_as[config] = parsed
    varying = [c for c in configs if top[c].n_unique() > 1 and c not in shown_as]
    table = an.drop_empty(top.select(*first, *keys, *varying), first)
    repeated = ", ".join(f"{config} as {parsed}" for config, parsed in shown_as.items())
    return {
        "table": html_table(table, "top-runs"),
        "repeated": repeated,
        "shared": [(name, cell(value)) for name, value in shared.items()],
    }


def pivot_figure(cells: pl.DataFrame, options: ViewOptions) -> tuple[Markup, str]:
    """The pivot heatmap and the line saying which run states its cells hold."""
    view = PivotView(options)
    shown = view.finish(cells)
    assert shown.pivot is not None
    return svg_markup(lambda buffer: view.draw(buffer, shown), "pivot"), "; ".join(states_note(shown.pivot))


def pareto_section(candidates: pl.DataFrame, options: ViewOptions) -> dict:
    """Every run against the --pareto column, the front drawn and listed in order along it."""
    view = ParetoView(options)
    shown = view.finish(candidates)
    front = shown.table
    figure = svg_markup(lambda buffer: view.draw(buffer, shown), "pareto") if front.height else None
    note = f"the first {MAX_FRONT} of {front.height} runs on the front" if front.height > MAX_FRONT else ""
    return {
        "figure": figure,
        "table": html_table(front.head(MAX_FRONT), "front-runs", note),
        "summary": f"{front.height} of {shown.usable} runs with a finite {axis_name(options.metric)} and"
        f" {options.pareto} are on the front",
    }


def run_ancestry(runs: pl.LazyFrame, wanted: pl.DataFrame) -> pl.DataFrame:
    """The ancestors of the `wanted` runs that forked (Neptune 3: `parent_run_id`, `fork_step`), each a
    row (entity, project, id, ancestor, until, distance: shared.table.lineage), among the exported runs
    of their project; none when the runs table has no fork columns. A missing parent ends a lineage; a
    cycle is drawn without one."""
    schema = runs.collect_schema()
    empty = pl.DataFrame(schema={"entity": pl.String, "project": pl.String, **ANCESTRY_SCHEMA})
    if not {"parent_run_id", "fork_step"} <= set(schema):
        return empty.rename({RUN: "id"})
    projects = wanted.select("entity", "project").unique()
    rows = runs.join(projects.lazy(), on=["entity", "project"], how="semi")
    rows = rows.select(*RUN_KEY, "parent_run_id", pl.col("fork_step").cast(pl.Float64)).collect()
    parts = [empty]
    for (entity, project), group in rows.group_by("entity", "project"):
        forks = {
            run_id: Fork(parent, step)
            for run_id, parent, step in group.select("id", "parent_run_id", "fork_step").iter_rows()
            if parent and step is not None
        }
        try:
            found = ancestry(forks, set(group["id"]), Events())
        except BadInput:
            continue
        parts.append(found.select(pl.lit(entity).alias("entity"), pl.lit(project).alias("project"), pl.all()))
    found = pl.concat(parts).rename({RUN: "id"})
    return found.join(wanted.select(RUN_KEY), on=list(RUN_KEY), how="semi")


def _rows_of(path: Path, run_ids: pl.Series, what: str) -> pl.DataFrame:
    """The rows of these runs in a file beside an input (its history, its system metrics); BadInput when
    the file cannot be read."""
    try:
        return pl.scan_parquet(path, glob=False).filter(pl.col("run_id").is_in(run_ids.implode())).collect()
    except (pl.exceptions.PolarsError, OSError) as error:  # cut short, not parquet, no run_id column
        raise BadInput(f"cannot read the {what} {path}: {describe(error)}") from None


def top_curves(
    files: Sequence[RunsFile], top: pl.DataFrame, metric: str, runs: pl.LazyFrame | None = None
) -> tuple[list[tuple[str, list, list, float]], list[float | None], str]:
    """The top runs' logged curves of `metric` from the inputs' history files (opened with them), best
    first, each fork's (of the exported `runs`) with the points it inherits, and the step up to which
    each is inherited (None: all its own); and a line saying which runs have none (or why there are no
    curves at all). A run's curve is from the history of the file its row is from: the newest copy's
    (scan_deduplicated)."""
    histories = {
        index: f.history for index, f in enumerate(files) if f.history is not None and f.history.is_file()
    }
    if not histories:  # before the lineages and newest copies are looked up: each a scan of the runs
        return [], [], "No learning curves: the input has no history (export with --include-history)."
    wanted = top.head(CURVE_PANELS).select(*RUN_KEY, "name", metric)
    ancestors = run_ancestry(runs if runs is not None else pl.LazyFrame(), wanted)
    read = pl.concat(
        [wanted.select(RUN_KEY), ancestors.select("entity", "project", pl.col("ancestor").alias("id"))]
    ).unique(maintain_order=True)
    holders = newest_files(files, read)
    found: dict[tuple[str, str, str], pl.DataFrame] = {}
    for index, history in histories.items():
        keys = holders.filter(pl.col(FILE_INDEX) == index)
        points = _rows_of(history, keys["id"], "history")
        logged_as = [key for key in points["key"].unique() if metric_column(key) == metric]
        points = points.filter(pl.col("key").is_in(logged_as))
        per_project = {"entity", "project"} <= set(points.columns)  # an aggregate's merged history
        for entity, project, run_id in keys.select("entity", "project", "id").iter_rows():
            mine = points.filter(pl.col("run_id") == run_id)
            if per_project:
                mine = mine.filter((pl.col("entity") == entity) & (pl.col("project") == project))
            if mine.height:
                found.setdefault((entity, project, run_id), mine.sort("step", maintain_order=True))
    curves, inherited = [], []
    for entity, project, run_id, name, value in wanted.iter_rows():
        if (entity, project, run_id) not in found:
            continue
        points = found[(entity, project, run_id)]
        mine = ancestors.filter(
            (pl.col("entity") == entity) & (pl.col("project") == project) & (pl.col("id") == run_id)
        )
        lineage = [run_id, *mine["ancestor"]]
        parts = [
            found[key].select(RUN, "key", "step", "value")
            for i in lineage
            if (key := (entity, project, i)) in found
        ]
        fork = None
        if mine.height and len(parts) > 1:
            points = with_lineage(
                pl.concat(parts), mine.select(pl.col("id").alias(RUN), "ancestor", "until", "distance")
            )
            points = points.filter(pl.col(RUN) == run_id).sort("step", maintain_order=True)
            fork = mine.filter(pl.col("distance") == 1)["until"].item()
        curves.append((name or run_id, points["step"].to_list(), points["value"].to_list(), value))
        inherited.append(fork)
    if not curves:
        return [], [], f"No learning curves: the history holds no {axis_name(metric)} of the top runs."
    notes = [f"The best {wanted.height} of the top {top.height} runs."] if top.height > wanted.height else []
    if missing := wanted.height - len(curves):
        notes.append(f"{missing} of them have no {axis_name(metric)} history.")
    if any(fork is not None for fork in inherited):
        notes.append("A forked run's curve starts with its ancestors' points (dotted), up to its fork step.")
    return curves, inherited, " ".join(notes)


def system_section(files: Sequence[RunsFile], top: pl.DataFrame) -> dict | None:
    """The best runs' system-metric summaries (the runs table's columns) and a figure of their samples
    over time from the system files beside the inputs (opened with them): per summary, each run's
    samples of the keys it summarises, averaged (a mean) or the largest (a peak) at each time. None when
    the runs have neither."""
    wanted = top.head(CURVE_PANELS)
    summaries = [c for c in SYSTEM_PANELS if c in wanted.columns and wanted[c].is_not_null().any()]
    system_files = {index: path for index, f in enumerate(files) if (path := dict(f.streams).get("system"))}
    # Which file holds each run's newest copy: a scan of every runs file, so only when a system file is there.
    holders = newest_files(files, wanted.select(RUN_KEY)) if system_files else None
    parts = []
    for index, path in system_files.items():
        keys = holders.filter(pl.col(FILE_INDEX) == index)
        if not keys.height:
            continue
        rows = _rows_of(path, keys["id"], "system metrics")
        if not {"entity", "project"} <= set(rows.columns):  # an aggregate's merged file has them
            rows = rows.join(keys.select("entity", "project", "id"), left_on="run_id", right_on="id")
        parts.append(rows.select("entity", "project", "run_id", "timestamp", "key", "value"))
    samples = pl.concat(parts).drop_nulls("timestamp") if parts else None
    panels = _system_panels(samples, wanted) if samples is not None and samples.height else []
    if not summaries and not panels:
        return None
    labels = [
        f"{rank}. {name or run_id}"
        for rank, (run_id, name) in enumerate(wanted.select("id", "name").iter_rows(), 1)
    ]
    table = wanted.select(pl.Series("run", labels), *summaries)
    figure = (
        svg_markup(lambda buffer: plot_system_panels(buffer, panels, labels), "system") if panels else None
    )
    return {"table": html_table(table, "system-runs"), "figure": figure}


def _system_panels(samples: pl.DataFrame, wanted: pl.DataFrame) -> list:
    """The panels of plot_system_panels: per summary with samples, each wanted run's line (its index in
    `wanted`, minutes since the run's first sample, the samples of each time combined as the summary
    combines them: averaged for a mean, the largest for a peak)."""
    order = wanted.select("entity", "project", pl.col("id").alias("run_id")).with_row_index("run")
    indexed = samples.join(order, on=["entity", "project", "run_id"]).select(
        pl.col("run").cast(pl.String).alias("run_id"), "timestamp", "key", "value"
    )
    points = (
        summary_samples(indexed)
        .group_by("run_id", "column", "timestamp")
        .agg(pl.col("value").mean().alias("mean"), pl.col("value").max().alias("peak"))
        .with_columns(
            (
                (pl.col("timestamp") - pl.col("timestamp").min().over("run_id")).dt.total_milliseconds()
                / 60_000
            ).alias("minutes")
        )
        .sort("run_id", "column", "timestamp")
        .collect()
    )
    panels = []
    for column, title in SYSTEM_PANELS.items():
        combined = "mean" if SUMMARIES[column].mean else "peak"
        lines = [
            (int(run), line["minutes"].to_list(), line[combined].to_list())
            for (run,), line in points.filter(pl.col("column") == column).group_by("run_id")
        ]
        if lines:
            panels.append((title, sorted(lines, key=lambda line: line[0])))
    return panels


def columns_table(described: pl.DataFrame, counts: pl.DataFrame, runs: int) -> Table:
    """One row per column: group, name, dtype, non-null values and how full it is."""
    table = an.schema_table(described, counts)
    rows = []
    for group, column, dtype, non_null in table.iter_rows():
        share = non_null / runs if runs else 0.0
        rows.append(
            [
                Cell(group),
                Cell(column),
                Cell(dtype),
                cell(non_null),
                Cell(f"{100 * share:.0f} %", repr(share), f"{non_null} of {runs}", bar=share),
            ]
        )
    return Table("column-fullness", ["group", "column", "dtype", "non-null", "full"], [0, 0, 0, 1, 1], rows)


def build_report(
    frame: pl.LazyFrame,
    files: Sequence[RunsFile],
    steps: Sequence[tuple[str, pl.Expr]],
    options: ViewOptions,
    *,
    command: str,
) -> tuple[str, an.Funnel]:
    """The page's HTML (`command`, as it was typed, in its header), and how many runs passed each filter
    and have a value. Each section is the view analyze_runs.py shows for its mode (shared.analysis.views)."""
    metric = options.metric
    matched = frame.filter(*(condition for _, condition in steps)) if steps else frame
    schema = frame.collect_schema()
    configs = [c for c in schema if c.startswith(CONFIG_PREFIX)]
    metadata = [c for c in TOP_METADATA if c in schema]  # empty ones are dropped from the table
    system = [c for c in SYSTEM_PANELS if c in schema]  # shown in their own section
    top_view = TopView(
        options, extra=["entity", *(["tags"] if "tags" in schema else []), *metadata, *system, *configs]
    )
    described, fullness = an.schema_query(matched)
    queries = {
        "funnel": an.funnel_query(frame, steps, metric),
        "projects": frame.group_by("entity", "project").agg(pl.len().alias("runs")).sort("entity", "project"),
        "top": top_view.query(matched),
        "fullness": fullness,
    }
    if "state" in schema:
        queries["states"] = frame.group_by("state").agg(pl.len().alias("runs")).sort("runs", descending=True)
    pivot_columns = [options.pivot_rows, options.pivot_cols]
    if set(pivot_columns) <= set(schema):
        queries["pivot"] = PivotView(options).query(matched)
    group_by = options.group_by or [c for c in pivot_columns if c in schema]
    if group_by:
        queries["groups"] = GroupView(replace(options, top=None), group_by).query(matched)
    if options.pareto:
        queries["pareto"] = ParetoView(options).query(matched)
    results = dict(zip(queries, pl.collect_all(list(queries.values())), strict=True))
    funnel = an.read_funnel(results["funnel"], steps)
    top = results["top"]
    page: dict[str, Any] = {
        "options": options,
        "command": command,
        "top_count": options.top or TOP,
        "title": ", ".join(f.label for f in files),
        "made": datetime.now(UTC).isoformat(sep=" ", timespec="seconds"),
        "direction": "higher is better" if options.maximize else "lower is better",
        "read": read_section(files, results, funnel),
        "footer": funnel.footer(metric),
        "runs": funnel.matched,
        "with_value": funnel.with_value,
        "top": top_section(top, options) if top.height else None,
        "group_by": group_by,
        "columns": columns_table(described, results["fullness"], funnel.matched),
    }
    if "pivot" in results and results["pivot"].height:
        page["pivot"], page["pivot_note"] = pivot_figure(results["pivot"], options)
    if "groups" in results:
        groups = results["groups"]
        note = f"the best {MAX_GROUPS} of {groups.height} groups" if groups.height > MAX_GROUPS else ""
        page["groups"] = html_table(groups.head(MAX_GROUPS), "group-stats", note)
    if "pareto" in results:
        page["pareto"] = pareto_section(results["pareto"], options)
    if top.height and (system_metrics := system_section(files, top)):
        page["system"] = system_metrics
    if top.height:
        curves, inherited, page["curves_note"] = top_curves(files, top, metric, frame)
        if curves:
            page["curves"] = svg_markup(
                lambda buffer: plot_curve_panels(buffer, curves, metric=metric, inherited=inherited), "curves"
            )
    return render_page(page), funnel


def render_page(page: dict[str, Any]) -> str:
    """The page from templates/report.html.j2, with its own script allowed by hash and nothing else."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    script = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    assert "</" not in script, "the inline script must not close its own element"
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return environment.get_template("report.html.j2").render(
        page=page,
        style=Markup((TEMPLATES / "report.css").read_text(encoding="utf-8")),
        script=Markup(script),
        script_hash=f"sha256-{digest}",
    )


def write_report(path: Path, html: str) -> int:
    """Write the page atomically; its size in bytes."""
    data = html.encode("utf-8")
    with atomic_path(path) as temp:
        temp.write_bytes(data)
    return len(data)
