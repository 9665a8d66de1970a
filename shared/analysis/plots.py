"""Figures for papers (PNG/SVG/PDF by extension): metric curves, Pareto fronts, pivot heatmaps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from shared.base.errors import BadInput
from shared.base.events import Events
from shared.base.storage import atomic_path, check_output_file
from shared.table.schema import METRIC_PREFIX

if TYPE_CHECKING:  # imported where drawn: check_plot_path runs while the scripts parse their arguments
    import polars as pl
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PLOT_SUFFIXES = (".png", ".svg", ".pdf")
# Where a figure goes: a file (format from its extension, written atomically) or a binary buffer, which
# gets SVG without metadata (the HTML report inlines it).
PlotTarget = str | Path | IO[bytes]
_NO_SVG_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
SCREEN_DPI = 150  # the SVG's raster parts (heatmap cells, colour bar): sharp on screen, half the time of 300
COLUMN_WIDTH = 3.5  # inches: one column of a two-column paper
DPI = 300
STYLE = {
    "font.size": 7,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "lines.linewidth": 1.0,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embedded TrueType: journals reject Type 3 fonts
    "svg.hashsalt": "run-tools",  # the same figure gives the same SVG
}
WINDOW_TEXT = {
    "last": "last value",
    "mean_last_n": "mean of the last {n} steps",
    "min": "minimum",
    "max": "maximum",
    "mean_all": "mean of all steps",
}
LEGEND_KEY = {  # the legend entry explaining the window marks
    "last": "last value (ranked)",
    "mean_last_n": "shaded: last {n} steps; dashed: their mean",
    "min": "minimum (ranked)",
    "max": "maximum (ranked)",
    "mean_all": "shaded: all steps; dashed: their mean",
}


def check_plot_path(path: str | Path) -> Path:
    """Validate BEFORE any work: extension .png/.svg/.pdf, parent folder exists -> else raise
    BadInput with one clear line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise BadInput(
            f"--plot {path}: unknown extension {suffix or '(none)'} (use {', '.join(PLOT_SUFFIXES)})"
        )
    return check_output_file(path, "--plot")


@contextmanager
def _figure(target: PlotTarget, width: float, height: float) -> Iterator[Figure]:
    """A figure in the paper style, saved on exit: atomically to a file (format from its extension), or
    as SVG into a buffer."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    final = check_plot_path(target) if isinstance(target, str | Path) else None
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(width, height), layout="constrained", dpi=DPI)
        yield figure
        if final is None:
            figure.savefig(target, format="svg", metadata=_NO_SVG_METADATA, dpi=SCREEN_DPI)
            return
        with atomic_path(final) as temp:
            figure.savefig(temp, format=final.suffix[1:].lower(), dpi=DPI)


def axis_name(column: str) -> str:
    """A column name as an axis label: without the `metric_` prefix of the runs table."""
    return column.removeprefix(METRIC_PREFIX) or column


def _direction(minimize: bool) -> str:
    return "lower is better" if minimize else "higher is better"


def _log_scale_fits(values: Any, ratio: float = 100) -> bool:
    """Positive values spanning `ratio` (two decades) or more read better on a log axis."""
    import numpy as np

    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return finite.size > 1 and finite.min() > 0 and finite.max() / finite.min() >= ratio


def _colors(count: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _legend_rows(labels: Sequence[str], width: float) -> tuple[int, int]:
    """Columns and rows for a legend of `labels` under an axes `width` inches wide."""
    longest = max((len(label) for label in labels), default=1)
    columns = max(1, min(len(labels), int(width / (0.05 * longest + 0.35))))
    return columns, -(-len(labels) // columns)


def _draw_curve(axes: Any, step: Any, value: Any, color: Any, fork: float | None) -> Any:
    """One run's curve (steps in order); a fork's part up to `fork` (its inherited points) dotted, on to
    its first own point, and solid from there. The solid line's handle (for a legend)."""
    if fork is None:
        return axes.plot(step, value, color=color)[0]
    import numpy as np

    own = int(np.searchsorted(step, fork, side="right"))
    axes.plot(step[: own + 1], value[: own + 1], color=color, linestyle=":")
    return axes.plot(step[own:], value[own:], color=color)[0]


def plot_curves(
    path: PlotTarget,
    curves: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    metric: str,
    aggregation: str,
    n_steps: int,
    title: str | None = None,
    log_y: bool | None = None,
    events: Events | None = None,
    inherited: Sequence[float | None] | None = None,
) -> None:
    """curves = (label, steps, values) per chosen run, best first. Shades the aggregation window
    (last n_steps points for mean_last_n, last point for last, whole range for mean_all, marks the
    argmin/argmax point for min/max).

    `log_y`: None puts the y axis on a log scale when the values are positive and span two decades or
    more, True always (a warning and a linear axis when a value is 0 or negative), False never.
    `inherited`: per curve, the step up to which a forked run's points are its ancestors' (None: all its
    own); that part is drawn dotted, the run's own points solid."""
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if aggregation not in WINDOW_TEXT:
        raise ValueError(f"unknown aggregation {aggregation!r} (choose from {', '.join(WINDOW_TEXT)})")
    labels = [f"{rank}. {label}" for rank, (label, _, _) in enumerate(curves, start=1)]
    key = LEGEND_KEY[aggregation].format(n=n_steps)
    columns, rows = _legend_rows([*labels, key], COLUMN_WIDTH)
    with _figure(path, COLUMN_WIDTH, 2.3 + 0.13 * rows) as figure:
        axes = figure.add_subplot()
        windows, seen, handles = set(), [], []
        forks = list(inherited) if inherited is not None else [None] * len(curves)
        for color, (_, steps, values), fork in zip(_colors(len(curves)), curves, forks, strict=True):
            step, value = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
            order = np.argsort(step, kind="stable")  # the engine's order: by step, equal steps as logged
            step, value = step[order], value[order]
            finite = np.isfinite(value)
            handles.append(_draw_curve(axes, step, np.where(finite, value, np.nan), color, fork))
            step, value = step[finite], value[finite]
            if not step.size:
                continue
            seen.append(value)
            if aggregation in ("min", "max"):
                at = int(np.argmin(value) if aggregation == "min" else np.argmax(value))
                axes.plot(step[at], value[at], "o", color=color, markersize=3.5, markeredgecolor="white")
                continue
            if aggregation == "last":
                axes.plot(step[-1], value[-1], "o", color=color, markersize=3.5, markeredgecolor="white")
                continue
            window = slice(-n_steps, None) if aggregation == "mean_last_n" else slice(None)
            start, end = float(step[window][0]), float(step[window][-1])
            windows.add((start, end))
            axes.hlines(value[window].mean(), start, end, colors=[color], linestyles="--", linewidth=0.9)
        for start, end in windows:  # one shade when every run's window is the same
            axes.axvspan(start, end, color="0.5", alpha=0.18 / len(windows) ** 0.5, linewidth=0)
        values = np.concatenate(seen) if seen else np.array([])
        if log_y and values.size and values.min() <= 0:
            (events or Events()).warn(
                f"{metric} has values <= 0 (down to {values.min():.4g}): drawn on a linear y axis, not log"
            )
        elif log_y or (log_y is None and _log_scale_fits(values)):
            axes.set_yscale("log")
        axes.set_xlabel("step")
        axes.set_ylabel(axis_name(metric))
        ranked_by = WINDOW_TEXT[aggregation].format(n=n_steps)
        axes.set_title(title or f"{axis_name(metric)}, ranked by {ranked_by}", loc="left")
        if aggregation in ("mean_last_n", "mean_all"):
            handles.append(Patch(facecolor="0.5", alpha=0.3))
        else:
            handles.append(Line2D([], [], linestyle="none", marker="o", color="0.3", markersize=3.5))
        figure.legend(handles, [*labels, key], loc="outside lower left", ncols=columns)


def plot_curve_panels(
    target: PlotTarget,
    curves: Sequence[tuple[str, Sequence[float], Sequence[float], float]],
    *,
    metric: str,
    columns: int = 4,
    inherited: Sequence[float | None] | None = None,
) -> None:
    """Small multiples: curves = (label, steps, values, ranked value) per run, best first, one panel each
    on shared axes. Each panel marks the value its run was ranked by: a dashed line at that value and,
    where the run logged it (the last such step), a dot in a shaded band. The y axis is logarithmic when
    the values are positive and span a decade or more. `inherited`: as plot_curves' (a fork's inherited
    part dotted)."""
    import numpy as np

    columns = max(1, min(columns, len(curves)))
    rows = -(-len(curves) // columns)
    every_step = [float(s) for _, steps, _, _ in curves for s in steps]
    span = (max(every_step) - min(every_step)) if every_step else 0.0
    half_band = max(0.015 * span, 0.5)  # the band shows even when the ranked step is the last one
    with _figure(target, 0.35 + 1.85 * columns, 0.45 + 1.35 * rows) as figure:
        grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
        seen = []
        forks = list(inherited) if inherited is not None else [None] * len(curves)
        for rank, (axes, color, (label, steps, values, ranked), fork) in enumerate(
            zip(grid.flat, _colors(len(curves)), curves, forks, strict=False), start=1
        ):
            step, value = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
            order = np.argsort(step, kind="stable")
            step, value = step[order], value[order]
            finite = np.isfinite(value)
            _draw_curve(axes, step, np.where(finite, value, np.nan), color, fork)
            seen.append(value[finite])
            axes.axhline(ranked, color="0.35", linestyle="--", linewidth=0.7)
            logged = np.flatnonzero(np.isclose(value, ranked, rtol=1e-9, atol=0.0))
            if logged.size:
                at = logged[-1]
                axes.axvspan(step[at] - half_band, step[at] + half_band, color="0.5", alpha=0.2, linewidth=0)
                axes.plot(step[at], value[at], "o", color=color, markersize=3.5, markeredgecolor="white")
            title = f"{rank}. {label}"
            axes.set_title(title if len(title) <= 34 else title[:33] + "…", loc="left", fontsize=6.5)
        for index, axes in enumerate(grid.flat):
            if index >= len(curves):
                axes.set_visible(False)
                grid.flat[index - columns].xaxis.set_tick_params(labelbottom=True)  # the panel above
        values = np.concatenate(seen) if seen else np.array([])
        if _log_scale_fits(values, ratio=10):  # shared axes: the best runs' curves would lie flat
            grid[0, 0].set_yscale("log")
        figure.supxlabel("step", fontsize=7)
        figure.supylabel(axis_name(metric), fontsize=7)


def plot_system_panels(
    target: PlotTarget,
    panels: Sequence[tuple[str, Sequence[tuple[int, Sequence[float], Sequence[float]]]]],
    labels: Sequence[str],
) -> None:
    """System metrics over time, side by side: panels = (title, [(run index, minutes since the run's
    first sample, values)]); each run (its label from `labels`) drawn in one colour on every panel, with
    dots where it has few samples; one legend below."""
    import numpy as np
    from matplotlib.lines import Line2D

    colors = _colors(len(labels))
    width = 0.35 + 1.85 * len(panels)
    columns, rows = _legend_rows(labels, width)
    with _figure(target, width, 1.55 + 0.14 * rows) as figure:
        grid = figure.subplots(1, len(panels), squeeze=False)[0]
        for axes, (title, lines) in zip(grid, panels, strict=True):
            for index, minutes, values in lines:
                marker = "o" if len(values) <= 20 else None
                axes.plot(
                    np.asarray(minutes), np.asarray(values), color=colors[index], marker=marker, markersize=2
                )
            axes.set_title(title, loc="left", fontsize=6.5)
            axes.set_xlabel("minutes", fontsize=6.5)
        handles = [Line2D([], [], color=color) for color in colors]
        figure.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize=6)


def plot_pareto(
    path: PlotTarget,
    points: pl.DataFrame,
    front: pl.DataFrame,
    *,
    x: str,
    y: str,
    label: str = "name",
    minimize_x: bool = True,
    minimize_y: bool = True,
) -> None:
    """All runs as points, the front as a step line, front runs labelled with `label`.

    Front runs are numbered by their position along the front (the row order of `front`); the legend
    names them. Where front points crowd, only every few are numbered so that no labels overlap.
    """
    import polars as pl
    from matplotlib.lines import Line2D

    from shared.table.pareto import has_finite

    shown = points.filter(has_finite(x) & has_finite(y))
    names = [str(v) for v in front[label].to_list()] if label in front.columns else []
    with _figure(path, COLUMN_WIDTH, 2.6) as figure:
        axes = figure.add_subplot()
        axes.scatter(
            shown[x], shown[y], s=7, color="0.65", linewidths=0, label=f"all runs (n={shown.height})"
        )
        line = front.select(x, y).sort(x, maintain_order=True)
        axes.step(
            line[x],
            line[y],
            where="post" if minimize_x else "pre",  # the boundary of what the front dominates
            color="C3",
            marker="o",
            markersize=3,
        )
        for column, set_scale in ((x, axes.set_xscale), (y, axes.set_yscale)):
            if _log_scale_fits(shown[column].cast(pl.Float64).to_numpy()):
                set_scale("log")
        axes.margins(0.08)  # room for the numbers beyond the outermost points
        front_points = front.select(x, y).rows()
        labelled = _spaced(axes, front_points) if names else []
        # Numbers go on the side of the front nothing reaches (toward the better corner), off the runs.
        dx, dy = (-3 if minimize_x else 3), (-3 if minimize_y else 3)
        for index in labelled:
            axes.annotate(
                str(index + 1),
                front_points[index],
                xytext=(dx, dy),
                textcoords="offset points",
                ha="right" if minimize_x else "left",
                va="top" if minimize_y else "bottom",
                fontsize=6,
                color="C3",
            )
        axes.set_xlabel(f"{axis_name(x)} ({_direction(minimize_x)})")
        axes.set_ylabel(f"{axis_name(y)} ({_direction(minimize_y)})")
        handles, texts = axes.get_legend_handles_labels()
        handles.append(Line2D([], [], color="C3", marker="o", markersize=3))
        texts.append(f"Pareto front (n={front.height})")
        for index in labelled:
            number = str(index + 1)
            handles.append(
                Line2D(
                    [], [], linestyle="none", marker=f"${number}$", color="C3", markersize=3 + 2 * len(number)
                )
            )
            texts.append(names[index])
        columns, rows = _legend_rows(texts, COLUMN_WIDTH)
        figure.set_size_inches(COLUMN_WIDTH, 2.6 + 0.14 * rows)
        figure.legend(handles, texts, loc="outside lower left", ncols=columns, handletextpad=0.4)


def _spaced(axes: Axes, points: Sequence[tuple[float, float]], gap: float = 0.16) -> list[int]:
    """Indices of `points` (in order along the front) at least `gap` inches apart on `axes`, keeping the
    first and the last, at most 20."""
    import numpy as np

    axes.autoscale_view()
    fraction = (axes.transScale + axes.transLimits).transform(np.asarray(points, dtype=float))
    inches = fraction * np.array([COLUMN_WIDTH - 0.6, 1.9])  # the axes' size in a column-wide figure
    kept: list[int] = []
    for index, point in enumerate(inches):
        if not kept or np.hypot(*(point - inches[kept[-1]])) >= gap:
            kept.append(index)
        elif index == len(inches) - 1 and len(kept) > 1:
            kept[-1] = index  # the last point of the front is always numbered
    if len(kept) > 20:
        kept = [kept[round(i)] for i in np.linspace(0, len(kept) - 1, 20)]
    return kept


def plot_pivot(
    path: PlotTarget,
    best: pl.DataFrame,
    counts: pl.DataFrame,
    *,
    rows: str,
    metric: str,
    minimize: bool,
    cols: str | None = None,
) -> None:
    """best/counts: first column = row labels (named `rows`), other columns = one per pivot column.
    Annotated heatmap: value and n per cell, best per column marked. `cols` names the column axis."""
    import numpy as np
    import polars as pl

    labels = best.columns[1:]  # in the order analysis.column_labels gave them (numbers as numbers)
    row_labels = [str(v) for v in best[rows].to_list()]
    values = best.select(pl.col(labels).cast(pl.Float64)).to_numpy().reshape(len(row_labels), len(labels))
    n = counts.select(pl.col(labels)).to_numpy().reshape(len(row_labels), len(labels))
    # Colour is the rank within the column (0 best, 1 worst): columns on different scales compare.
    ranks = best.select(
        pl.col(labels).cast(pl.Float64).fill_nan(None).rank("min", descending=not minimize)
    ).to_numpy()
    ranks = ranks.reshape(values.shape).astype(float)
    worst = np.nanmax(np.where(np.isnan(ranks), -np.inf, ranks), axis=0, initial=1.0)
    shade = np.ma.masked_invalid((ranks - 1) / np.maximum(worst - 1, 1))
    width = 1.3 + 0.055 * max(map(len, row_labels), default=4) + 0.55 * len(labels)
    height = 1.1 + 0.055 * max(map(len, labels), default=4) * 0.7 + 0.34 * len(row_labels)
    with _figure(path, max(COLUMN_WIDTH, width), height) as figure:
        axes: Axes = figure.add_subplot()
        cmap = _pivot_cmap()
        image = axes.imshow(shade, cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for r, c in np.ndindex(values.shape):
            if np.isnan(values[r, c]):
                axes.text(c, r, "n=0", ha="center", va="center", fontsize=6, color="0.45")
                continue
            is_best = ranks[r, c] == 1
            dark = shade[r, c] < 0.45
            axes.text(
                c,
                r,
                f"{'★ ' if is_best else ''}{values[r, c]:.3g}\nn={int(n[r, c])}",
                ha="center",
                va="center",
                fontsize=6,
                linespacing=1.15,
                fontweight="bold" if is_best else "normal",
                color="white" if dark else "black",
            )
        if max(map(len, labels), default=0) > 4:  # long names slant so that neighbours do not collide
            axes.set_xticks(range(len(labels)), labels, rotation=35, ha="right", rotation_mode="anchor")
        else:
            axes.set_xticks(range(len(labels)), labels)
        axes.set_yticks(range(len(row_labels)), row_labels)
        axes.tick_params(length=0)
        axes.grid(False)
        for spine in axes.spines.values():
            spine.set_visible(False)
        axes.set_ylabel(rows)
        if cols:
            axes.set_xlabel(cols)
        axes.set_title(
            f"{axis_name(metric)}, best run per cell ({_direction(minimize)})\n"
            "n = runs with a value; ★ = best in column",
            loc="left",
        )
        bar = figure.colorbar(image, ax=axes, ticks=[0, 1], shrink=0.8, aspect=25, pad=0.02)
        bar.ax.set_yticklabels(["best", "worst"])
        bar.set_label("rank in column")
        bar.ax.invert_yaxis()


def _pivot_cmap() -> Any:
    import matplotlib

    return matplotlib.colormaps["YlGnBu_r"].with_extremes(bad="0.93")
