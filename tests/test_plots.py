"""Figures from real runs: the bundled offline samples exported with export_runs.py, drawn by shared.analysis.plots."""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shared.analysis import frames as an
from shared.analysis.enrich import load_rules
from shared.analysis.plots import DPI, check_plot_path, plot_curves, plot_pareto, plot_pivot
from shared.base.errors import BadInput
from shared.base.events import Events
from shared.table.pareto import pareto_front
from shared.table.series import aggregate
from tests.current_data import load_script, make_runs, write_export

ROOT = Path(__file__).resolve().parent.parent
COLUMN_INCHES = 3.5
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The bundled sample runs (offline runs written by the wandb client) as runs and history tables."""
    folder = tmp_path_factory.mktemp("export")
    export_runs = load_script("export_runs")
    assert (
        export_runs.main(
            ["--offline", str(ROOT / "samples" / "wandb"), "-o", str(folder), "--include-history"]
        )
        == 0
    )
    runs = pl.read_parquet(next(folder.glob("*_runs.parquet")))
    runs = an.prepare(runs.lazy(), load_rules(None)).collect()
    return runs, pl.read_parquet(next(folder.glob("*_history.parquet")))


def top_curves(runs: pl.DataFrame, history: pl.DataFrame, key: str, k: int) -> list[tuple[str, list, list]]:
    """The k runs with the lowest mean of the last 10 steps of `key`, with their curves, best first."""
    ranked = aggregate(history, [key], "mean_last_n", 10).sort("value").head(k)
    names = dict(runs.select("id", "name").iter_rows())
    series = history.filter(pl.col("key") == key)
    curves = []
    for run_id in ranked["run_id"]:
        points = series.filter(pl.col("run_id") == run_id)
        curves.append((names[run_id], points["step"].to_list(), points["value"].to_list()))
    return curves


def png_pixels(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def inches(path: Path) -> tuple[float, float]:
    """Width and height of a PNG, SVG or PDF file, checking its signature on the way."""
    data = path.read_bytes()
    assert 5_000 < len(data) < 5_000_000, len(data)
    if path.suffix == ".png":
        width, height = png_pixels(path)
        return width / DPI, height / DPI
    if path.suffix == ".svg":
        root = ET.fromstring(data)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        return tuple(float(root.attrib[side].removesuffix("pt")) / 72 for side in ("width", "height"))
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)
    assert box
    return float(box[1]) / 72, float(box[2]) / 72


def pixels_of(path: Path, color: str, tolerance: float = 0.03) -> int:
    """How many pixels of a PNG have this colour."""
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    image = imread(path)[..., :3]
    return int((np.abs(image - np.array(to_rgb(color))).max(axis=-1) < tolerance).sum())


@pytest.mark.parametrize("aggregation", ["mean_last_n", "last", "min", "mean_all"])
def test_curves_draw_every_chosen_run(samples, tmp_path, aggregation):
    runs, history = samples
    curves = top_curves(runs, history, "test/mse", 4)
    path = tmp_path / "curves.png"
    plot_curves(path, curves, metric="test/mse", aggregation=aggregation, n_steps=10)
    width, height = inches(path)
    assert width == pytest.approx(COLUMN_INCHES, abs=0.01)
    assert 2.0 < height < 5.0
    # Each run's colour covers a curve's worth of pixels, not just its legend entry.
    assert all(pixels_of(path, color) > 1500 for color in TAB10[: len(curves)])
    assert pixels_of(path, TAB10[len(curves)]) < 200


def test_curves_window_shade_only_for_means(samples, tmp_path):
    runs, history = samples
    curves = top_curves(runs, history, "test/mse", 2)
    shaded, marked = tmp_path / "shaded.png", tmp_path / "marked.png"
    plot_curves(shaded, curves, metric="test/mse", aggregation="mean_last_n", n_steps=10)
    plot_curves(marked, curves, metric="test/mse", aggregation="max", n_steps=10)
    shade = (0.91, 0.91, 0.91)  # grey 0.5 at alpha 0.18 over white (grid line edges have it too)
    # The last 10 of 60 steps: some 55,000 pixels of an axes about 850 x 650 pixels; half of that suffices.
    assert pixels_of(shaded, shade, 0.005) > pixels_of(marked, shade, 0.005) + 25_000


def y_scale(monkeypatch, path: Path, curves: list, **options) -> str:
    """The y scale plot_curves gives the figure it draws to `path`."""
    from shared.analysis import plots

    drawn = []
    figure = plots._figure

    @contextmanager
    def keep(*args, **kwargs):
        with figure(*args, **kwargs) as made:
            drawn.append(made)
            yield made

    monkeypatch.setattr(plots, "_figure", keep)
    plot_curves(path, curves, metric="train/loss", aggregation="mean_last_n", n_steps=20, **options)
    return drawn[0].axes[0].get_yscale()


def converging(floor: float) -> list[tuple[str, list, list]]:
    """Losses from 5 falling to `floor`-ish: three decades for floor 0.002."""
    steps = np.arange(200)
    return [
        (f"run{i}", steps.tolist(), (5 * np.exp(-steps / (20 + 5 * i)) + floor * (i + 1)).tolist())
        for i in range(4)
    ]


def test_curves_over_two_decades_get_a_log_axis_unless_told(monkeypatch, samples, tmp_path, capsys):
    path = tmp_path / "curves.png"
    assert y_scale(monkeypatch, path, converging(0.002)) == "log"
    assert y_scale(monkeypatch, path, converging(0.002), log_y=False) == "linear"
    runs, history = samples
    sample = top_curves(runs, history, "train/loss", 5)  # 1.75 down to 0.1: not two decades
    assert y_scale(monkeypatch, path, sample) == "linear"
    assert y_scale(monkeypatch, path, sample, log_y=True) == "log"
    shifted = [(name, steps, [v - 0.2 for v in values]) for name, steps, values in sample]
    events = Events()
    assert y_scale(monkeypatch, path, shifted, log_y=True, events=events) == "linear"
    assert "train/loss has values <= 0 (down to -0.1" in "\n".join(events.warnings)


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_pareto_in_each_format(samples, tmp_path, suffix):
    runs, _ = samples
    front = pareto_front(runs, "metric_test_mse", "k", minimize_y=False)
    assert front.height > 1
    path = tmp_path / f"front{suffix}"
    plot_pareto(path, runs, front, x="metric_test_mse", y="k", minimize_y=False)
    width, height = inches(path)
    assert width == pytest.approx(COLUMN_INCHES, abs=0.01)
    assert 2.5 < height < 6
    if suffix == ".png":
        assert pixels_of(path, "#d62728") > 500  # the front in red
        assert pixels_of(path, "#a6a6a6") > 50  # the other runs in grey


def test_pivot_heatmap_grows_with_the_pivot(samples, tmp_path):
    runs, _ = samples
    small = tmp_path / "small.png"
    draw_pivot(runs, small)
    records = make_runs((0,))
    path = write_export(tmp_path / "current", records)
    large = tmp_path / "large.pdf"
    draw_pivot(an.prepare(pl.scan_parquet(path), load_rules(None)).collect(), large)
    (small_width, small_height), (large_width, large_height) = inches(small), inches(large)
    assert small_width >= COLUMN_INCHES - 0.01
    assert large_width > small_width + 2 and large_height > small_height + 1  # 12 x 10 cells against 4 x 3
    assert pixels_of(small, "#081d58", 0.05) > 5_000  # the best cells, darkest in the colour map


def draw_pivot(runs: pl.DataFrame, path: Path) -> None:
    cells = an.pivot_query(runs.lazy(), "metric_test_mse", "architecture", "dataset", descending=False)
    best, counts = an.pivot_grids(an.pivot_table(cells.collect(), "architecture", "dataset"))
    plot_pivot(
        path, best, counts, rows="architecture", cols="dataset", metric="metric_test_mse", minimize=True
    )


def test_failed_render_leaves_the_old_file_and_no_temp(samples, tmp_path):
    runs, _ = samples
    path = tmp_path / "front.png"
    path.write_bytes(b"old")
    broken_front = runs.select("name", "metric_test_mse")  # lacks the y column
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        plot_pareto(path, runs, broken_front, x="metric_test_mse", y="k")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["front.png"]
    with pytest.raises(ValueError, match="unknown aggregation 'median'"):
        plot_curves(tmp_path / "c.png", [], metric="m", aggregation="median", n_steps=1)
    assert [p.name for p in tmp_path.iterdir()] == ["front.png"]


def test_plot_path_checks(tmp_path):
    assert check_plot_path(tmp_path / "Figure.PDF") == tmp_path / "Figure.PDF"
    with pytest.raises(BadInput, match=r"^--plot .*/nope/f\.png: folder .*/nope does not exist$"):
        check_plot_path(tmp_path / "nope" / "f.png")
    with pytest.raises(BadInput, match=r"unknown extension \.jpg \(use \.png, \.svg, \.pdf\)$"):
        check_plot_path(tmp_path / "f.jpg")
    with pytest.raises(BadInput, match=r"unknown extension \(none\)"):
        check_plot_path(tmp_path / "figure")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(BadInput, match="is a folder"):
        check_plot_path(tmp_path / "dir.png")
