"""analyze_runs.py --report without a browser: the page's tables against polars, escaping, figures, sizes,
what it says when something is missing, and the flag's checks."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from shared.analysis import frames as an
from shared.analysis.enrich import load_rules
from shared.analysis.plots import plot_curve_panels
from shared.analysis.report import MAX_GROUPS, cell, svg_markup
from tests.current_data import load_script, make_runs, write_export
from tests.report_fixtures import (
    HOSTILE_KEY,
    HOSTILE_NAME,
    ROOT,
    SCRIPT_NAME,
    PageTables,
    hostile_export,
)
from tests.test_fast_help import HEAVY, imported

analyze_runs = load_script("analyze_runs")
aggregate_runs = load_script("aggregate_runs")
ANALYZE = "wandb-tools/analyze_runs.py"


def make_report(tmp_path: Path, *args: str, name: str = "report.html") -> str:
    """The page analyze_runs writes for `args`."""
    path = tmp_path / name
    assert analyze_runs.main([*args, "--report", str(path)]) == 0
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """480 runs (12 architectures x 10 datasets x 4 k), a few without a value."""
    return write_export(tmp_path_factory.mktemp("generated"), make_runs())


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    return hostile_export(tmp_path_factory.mktemp("hostile"))


def expected_top(path: Path, n: int, metric: str = "metric_test_mse") -> list[str]:
    """The ids of the n best runs as polars finds them in the parquet: lowest finite value, then id."""
    runs = pl.read_parquet(path).filter(pl.col(metric).is_not_null() & pl.col(metric).is_not_nan())
    return runs.sort(metric, "id").head(n)["id"].to_list()


def test_a_cell_shows_a_rounded_number_and_keeps_the_full_one():
    value = 0.123456789012345
    shown = cell(value)
    assert (shown.text, shown.title, shown.sort) == ("0.1235", repr(value), repr(value))
    assert float(shown.title) == value
    assert cell(None).text == "" and cell(None).sort == ""
    assert (cell(12).text, cell(12).sort) == ("12", "12")
    assert cell(["a", "<b>"]).text == "a, <b>"  # escaped by the template, not here
    assert cell(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)).text == "2026-01-02 03:04+00:00"
    assert cell(float("nan")).text == "nan"


def test_an_inlined_figure_has_no_prologue_and_its_own_ids():
    curves = [("run <a>", [0, 1, 2], [3.0, 2.0, 1.0], 1.0), ("run b", [0, 1, 2], [4.0, 3.0, 2.5], 2.5)]
    svg = str(svg_markup(lambda buffer: plot_curve_panels(buffer, curves, metric="metric_test_mse"), "f1"))
    assert svg.startswith("<svg ") and "<?xml" not in svg and "DOCTYPE" not in svg and "http" not in svg
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    assert ids and all(i.startswith("f1-") for i in ids)
    references = re.findall(r'href="#([^"]+)"', svg) + re.findall(r"url\(#([^)]+)\)", svg)
    assert references and set(references) <= ids
    assert "run &lt;a&gt;" in svg and "run <a>" not in svg  # matplotlib escapes the labels it writes
    buffer = io.BytesIO()
    plot_curve_panels(buffer, curves, metric="metric_test_mse")
    natural = float(re.search(rb'width="([\d.]+)pt"', buffer.getvalue())[1])
    assert float(re.search(r'width="([\d.]+)pt"', svg)[1]) == pytest.approx(1.6 * natural, abs=1)


def test_the_page_ranks_groups_and_lists_columns_as_polars_does(generated, tmp_path):
    html = make_report(tmp_path, str(generated), "--metric", "test/mse", "--top", "7")
    page = PageTables(html)
    assert page.column("top-runs", "id") == expected_top(generated, 7)
    values = pl.read_parquet(generated).filter(pl.col("id").is_in(page.column("top-runs", "id")))
    full = dict(values.select("id", "metric_test_mse").iter_rows())
    cells = {row[1][0]: row[3][1] for row in page.tables["top-runs"]["rows"] if row}
    assert {run: float(attributes["title"]) for run, attributes in cells.items()} == full
    # 12 x 10 groups: the best MAX_GROUPS by mean, and a line saying so.
    prepared = an.prepare(pl.scan_parquet(generated), load_rules(None))
    groups = an.group_stats(prepared, "metric_test_mse", ["architecture", "dataset"], descending=False)
    groups = groups.collect()
    assert len(page.column("group-stats", "mean")) == MAX_GROUPS < groups.height
    assert page.column("group-stats", "architecture")[:5] == groups["architecture"].head(5).to_list()
    assert f"the best {MAX_GROUPS} of {groups.height} groups" in html
    # One row per column, by group, with how full it is.
    described, counts = an.schema_query(prepared)
    columns = an.schema_table(described, counts.collect())
    assert page.column("column-fullness", "column") == columns["column"].to_list()
    assert page.column("column-fullness", "non-null") == [str(n) for n in columns["non_null"]]
    runs = pl.read_parquet(generated)
    fullness = dict(
        zip(page.column("column-fullness", "column"), page.column("column-fullness", "non-null"), strict=True)
    )
    assert fullness["metric_test_mse"] == str(runs["metric_test_mse"].count()) != str(runs.height)


def test_descending_state_and_filter_shape_the_top_table(generated, tmp_path):
    html = make_report(
        tmp_path, str(generated), "--metric", "test_accuracy", "--maximize", "--state", "finished",
        "--filter", "stage2", "--top", "4",
    )  # fmt: skip
    runs = pl.read_parquet(generated).filter(
        (pl.col("state") == "finished") & pl.col("name").str.contains("stage2")
    )
    best = runs.filter(pl.col("metric_test_accuracy").is_not_nan()).sort(
        ["metric_test_accuracy", "id"], descending=[True, False]
    )
    assert PageTables(html).column("top-runs", "id") == best.head(4)["id"].to_list()
    assert "--state finished" in html and "--filter stage2" in html and "higher is better" in html


def test_hostile_names_tags_and_config_values_stay_text(hostile, tmp_path):
    html = make_report(tmp_path, str(hostile), "--metric", "test/mse")
    page = PageTables(html)
    # The only elements are the template's and the figures' (a hostile string parsed as markup would add
    # an img or a second script).
    assert "img" not in page.tags and page.tags.count("script") == 1
    assert HOSTILE_NAME not in html and SCRIPT_NAME not in html and HOSTILE_KEY not in html
    names = page.column("top-runs", "name")
    assert names[:2] == [HOSTILE_NAME, SCRIPT_NAME]  # as text, once parsed
    assert page.column("top-runs", "tags")[:2] == [f"{HOSTILE_NAME}, ok", f"{SCRIPT_NAME}, ok"]
    assert page.column("top-runs", "architecture")[:2] == [HOSTILE_NAME, SCRIPT_NAME]
    assert "config_<script>alert(3)<_script>" in page.tables["top-runs"]["header"]
    assert "config_<script>alert(3)<_script>" in page.column("column-fullness", "column")
    # The figures hold the names only as escaped comments beside their glyphs.
    for figure in re.findall(r"<svg .*?</svg>", html, flags=re.DOTALL):
        assert "<img" not in figure and "<script" not in figure
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    # The script runs because the page's policy names its hash, and nothing else may.
    script = re.search(r"<script>(.*?)</script>", html, flags=re.DOTALL)[1]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)[1]
    assert f"script-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy


def test_nothing_loads_from_elsewhere(hostile, tmp_path):
    html = make_report(tmp_path, str(hostile), "--metric", "test/mse")
    assert not re.search(r"https?:", html)
    loading = {"src", "srcset", "action", "formaction", "poster", "data", "background"}
    links = [
        (tag, name, value)
        for tag, name, value in PageTables(html).attributes
        if name in loading or (name in ("href", "xlink:href") and not value.startswith("#"))
    ]
    # The heatmap's cells and colour bar are raster images inside its SVG, inline.
    assert {(tag, name) for tag, name, _ in links} == {("image", "xlink:href")}
    assert all(value.startswith("data:image/png;base64,") for _, _, value in links)
    assert "@import" not in html and "url(" not in html.replace("url(#", "")


def test_curves_come_from_the_history_beside_the_runs_or_an_aggregate(hostile, tmp_path):
    html = make_report(tmp_path, str(hostile), "--metric", "test/mse")
    assert 'id="curves-' in html and "No learning curves" not in html
    unified = tmp_path / "unified.parquet"
    assert (
        aggregate_runs.main([str(hostile), "-o", str(unified), "--include-history", "--protocol", "all"]) == 0
    )
    assert (tmp_path / "unified_history.parquet").is_file()
    html = make_report(tmp_path, str(unified), "--metric", "test/mse", name="aggregate.html")
    assert 'id="curves-' in html and "No learning curves" not in html


def test_an_export_without_history_says_so_in_one_line(generated, tmp_path):
    html = make_report(tmp_path, str(generated), "--metric", "test/mse")
    assert 'id="curves-' not in html
    lines = [line for line in html.splitlines() if "No learning curves" in line]
    assert len(lines) == 1 and "no history (export with --include-history)" in lines[0]
    assert 'id="pivot-' in html  # the other figures are drawn


def test_pareto_pivot_rows_and_top_together(generated, tmp_path):
    html = make_report(
        tmp_path, str(generated), "--metric", "test/mse", "--pareto", "test/accuracy", "--pareto-maximize",
        "--pivot-rows", "k", "--top", "3",
    )  # fmt: skip
    page = PageTables(html)
    assert len(page.column("top-runs", "id")) == 3
    assert (
        '<section id="pareto">' in html and 'id="pareto-' in html and page.column("front-runs", "#")[0] == "1"
    )
    assert "<h2>k \u00d7 dataset</h2>" in html and "Group statistics by k, dataset" in html


def test_nothing_matched_is_a_page_saying_why(generated, tmp_path):
    html = make_report(tmp_path, str(generated), "--metric", "test/mse", "--filter", "no_such_run")
    assert "nothing matched: --filter no_such_run matched none of the 480 runs" in html
    assert '<table id="top-runs"' not in html and 'id="pivot-' not in html and "No learning curves" in html


def test_ten_thousand_runs_by_300_columns_stay_small(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bench_analyze import make_export
    finally:
        sys.path.remove(str(ROOT / "bench"))
    path = tmp_path / "big_runs.parquet"
    make_export(path, 10_000, 300)
    html = make_report(tmp_path, str(path), "--metric", "test/mse", "--pareto", "k")
    assert len(html.encode()) < 5_000_000
    page = PageTables(html)
    sizes = {name: len(table["rows"]) - 1 for name, table in page.tables.items()}  # less the header
    columns = an.prepare(pl.scan_parquet(path), load_rules(None)).collect_schema()
    assert sizes["top-runs"] == 10 and sizes["column-fullness"] == len(columns) > 300
    assert sizes["group-stats"] == MAX_GROUPS and sizes["front-runs"] <= 100


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / ANALYZE), *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--report", "report.txt"], "error: --report report.txt: unknown extension .txt (use .html, .htm)"),
        (["--report", "no/such/report.html"], "error: --report no/such/report.html: folder no/such does not exist"),
        (["--report", "folder.html"], "error: --report folder.html is a folder, not a file name"),
    ],
)  # fmt: skip
def test_a_bad_report_path_is_refused_before_any_work(args, message, tmp_path):
    (tmp_path / "folder.html").mkdir()
    done, modules = imported(ANALYZE, "missing.parquet", *args, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2 and lines == [message]
    assert not modules & set(HEAVY)


@pytest.mark.parametrize(
    "other", [["-o", "top.csv"], ["--plot", "p.png"], ["--schema"], ["--format", "json"]]
)
def test_the_report_takes_no_other_output(other, tmp_path):
    done = run("missing.parquet", "--report", "r.html", *other, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == (
        f"error: --report writes the page only: {other[0]} does not apply with it (see analyze_runs.py --help)"
    )


def test_the_command_writes_the_page_and_one_line_on_stderr(hostile, tmp_path):
    done = run(str(hostile), "--report", "out.html", "--metric", "test/mse", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    size = (tmp_path / "out.html").stat().st_size
    assert done.stderr.strip().splitlines()[-1] == f"wrote out.html (4 runs, {size / 1024:.0f} KB)"
    assert [p.name for p in tmp_path.iterdir()] == ["out.html"]  # no temp file left
    page = (tmp_path / "out.html").read_text()
    assert f"analyze_runs.py {hostile} --report out.html --metric test/mse" in page


def test_a_system_metrics_panel_shows_the_top_runs_summaries_and_samples(tmp_path):
    """A run the real W&B client logged with system stats every 0.2 s, exported with its system metrics:
    the report lists its summaries as the runs table holds them and draws its samples over time, a panel
    per summary; an export without system metrics has no such section."""
    from shared.analysis.report import SYSTEM_PANELS
    from tests.test_run_streams import WANDB_SCRIPT, run_script

    run_script(tmp_path / "job", WANDB_SCRIPT, WANDB_MODE="offline", WANDB_SILENT="true")
    export_runs = load_script("export_runs")
    source = ["--offline", str(tmp_path / "job" / "wandb"), "--include-history"]
    assert export_runs.main([*source, "-o", str(tmp_path / "out"), "--include-system-metrics"]) == 0
    runs_path = next((tmp_path / "out").glob("*_runs.parquet"))
    runs = pl.read_parquet(runs_path)
    present = [column for column in SYSTEM_PANELS if runs[column].is_not_null().any()]
    assert {"cpu_mean", "memory_peak_gb"} <= set(present)
    html = make_report(tmp_path, str(runs_path), "--metric", "loss")
    page = PageTables(html)
    assert page.tables["system-runs"]["header"] == ["run", *present]
    for column in present:
        assert page.column("system-runs", column) == [cell(runs[column][0]).text]
    assert 'href="#system"' in html and 'id="system-' in html  # the section and its figure
    for column in present:
        assert f"<!-- {SYSTEM_PANELS[column]} -->" in html  # each summary's panel, titled
    assert "cpu_mean" not in page.tables["top-runs"]["header"]  # shown in the section, not twice

    unified = tmp_path / "unified.parquet"  # an aggregate carries the system file: the figure is drawn
    assert aggregate_runs.main([str(runs_path), "-o", str(unified), "--include-history"]) == 0
    merged = make_report(tmp_path, str(unified), "--metric", "loss", name="aggregate.html")
    assert 'id="system-runs"' in merged and "<!-- CPU (%) -->" in merged

    assert export_runs.main([*source, "-o", str(tmp_path / "plain")]) == 0
    plain = make_report(tmp_path, str(next((tmp_path / "plain").glob("*_runs.parquet"))), "--metric", "loss")
    assert 'id="system"' not in plain and 'href="#system"' not in plain
