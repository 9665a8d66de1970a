"""The HTML report in a real browser (headless Chromium driven by selenium): made from the bundled W&B and
Neptune samples and from runs with hostile names, it loads with no console error and no request, ranks
as polars does, sorts on a header click, filters as you type, draws its figures and keeps markup as text.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them). Without them the tests are
skipped on a workstation and fail in CI (CI set), so that CI never passes without having run them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from tests.chromium import CHROMIUM_FLAGS
from tests.current_data import load_script
from tests.report_fixtures import (
    HOSTILE_KEY,
    HOSTILE_NAME,
    ROOT,
    SCRIPT_NAME,
    export_samples,
    hostile_export,
)

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = Path("/tmp/report_shots")  # a copy of the W&B sample's screenshot, to look at
# Runs before the page's own script: records alert() calls instead of showing them.
RECORD_ALERTS = "window.__alerts = []; window.alert = function (m) { window.__alerts.push(String(m)); };"

analyze_runs = load_script("analyze_runs")


def require_chromium() -> None:
    """Skip without Chromium, except in CI, where that is a failure."""
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail(
                "chromium and chromedriver are needed in CI (apt-get install chromium chromium-driver)"
            )
        pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Iterator:
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # both paths given: selenium-manager never downloads anything
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_ALERTS})
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Report and runs parquet of the W&B sample, the Neptune sample and the hostile runs."""
    folder = tmp_path_factory.mktemp("reports")
    wandb_runs, neptune_runs = export_samples(folder)
    made = {}
    for name, runs in (
        ("wandb", wandb_runs),
        ("neptune", neptune_runs),
        ("hostile", hostile_export(folder / "hostile")),
    ):
        page = folder / f"{name}_report.html"
        assert analyze_runs.main([str(runs), "--report", str(page), "--metric", "test/mse"]) == 0
        made[name] = page, runs
    return made


def open_report(driver, page: Path) -> None:
    """Load `page` and check what every report must: no console message, no request but the page itself
    and inline data, no alert."""
    from selenium.common.exceptions import NoAlertPresentException

    driver.get_log("browser"), driver.get_log("performance")  # what earlier pages left
    driver.get(page.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    assert driver.get_log("browser") == []
    requested = [
        event["params"]["request"]["url"]
        for entry in driver.get_log("performance")
        if (event := json.loads(entry["message"])["message"])["method"] == "Network.requestWillBeSent"
    ]
    assert page.as_uri() in requested
    assert [url for url in requested if url != page.as_uri() and not url.startswith("data:")] == []
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [name for name in resources if not name.startswith("data:")] == []
    assert driver.execute_script("return window.__alerts") == []
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 (the property raises when no alert is open)


def column_texts(driver, table: str, index: int, *, visible_only: bool = False) -> list[str]:
    """The text of column `index` (from 1) of a table's rows, in the order shown."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(`#${arguments[0]} tbody tr`))"
        ".filter(row => !arguments[2] || !row.hidden)"
        ".map(row => row.cells[arguments[1] - 1].textContent)",
        table,
        index,
        visible_only,
    )


def header_index(driver, table: str, name: str) -> int:
    names = driver.execute_script(
        "return Array.from(document.querySelectorAll(`#${arguments[0]} thead th`)).map(h => h.textContent.trim())",
        table,
    )
    return names.index(name) + 1


def click_header(driver, table: str, name: str) -> str:
    """Click a column's header; the direction it now sorts in."""
    index = header_index(driver, table, name)
    button = driver.find_element("css selector", f"#{table} thead th:nth-child({index}) button")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    return driver.find_element("css selector", f"#{table} thead th:nth-child({index})").get_attribute(
        "aria-sort"
    )


def best(runs: Path, n: int, *, descending: bool = False) -> pl.DataFrame:
    """The n best runs of an export by test/mse as polars finds them: finite values, then by id."""
    frame = pl.read_parquet(runs).filter(pl.col("metric_test_mse").is_finite())
    return frame.sort(["metric_test_mse", "id"], descending=[descending, False]).head(n)


def svg_shapes(driver, section: str) -> dict:
    """The size of a section's figure on the page and how many shapes it draws."""
    return driver.execute_script(
        "const svg = document.querySelector(`#${arguments[0]} figure svg`);"
        "if (!svg) return null; const box = svg.getBoundingClientRect();"
        "return {width: box.width, height: box.height, shapes: svg.querySelectorAll('path, rect, use, image').length,"
        " panels: svg.querySelectorAll('g[id*=axes_]').length};",
        section,
    )


def test_the_wandb_sample_report(driver, reports, tmp_path):
    page, runs = reports["wandb"]
    open_report(driver, page)
    ranked = best(runs, 10)
    metric = header_index(driver, "top-runs", "metric_test_mse")
    assert column_texts(driver, "top-runs", 2) == ranked["id"].to_list()
    assert column_texts(driver, "top-runs", 1) == [str(n) for n in range(1, 11)]
    # A click sorts by value (the title holds the full one), again the other way; the rank back.
    assert click_header(driver, "top-runs", "metric_test_mse") == "ascending"
    assert column_texts(driver, "top-runs", 2) == ranked["id"].to_list()
    assert click_header(driver, "top-runs", "metric_test_mse") == "descending"
    assert column_texts(driver, "top-runs", 2) == ranked["id"].reverse().to_list()
    shown = [float(v) for v in column_texts(driver, "top-runs", metric)]
    assert shown == sorted(shown, reverse=True) and shown[-1] == pytest.approx(
        ranked["metric_test_mse"][0], 1e-3
    )
    assert click_header(driver, "top-runs", "rank") == "ascending"
    assert column_texts(driver, "top-runs", 2) == ranked["id"].to_list()
    # Empty cells stay last either way (std of a group of one run).
    std = header_index(driver, "group-stats", "std")
    for direction in ("ascending", "descending"):
        assert click_header(driver, "group-stats", "std") == direction
        values = column_texts(driver, "group-stats", std)
        filled = [float(v) for v in values if v]
        assert "" in values and values[len(filled) :] == [""] * (len(values) - len(filled))
        assert filled == sorted(filled, reverse=direction == "descending")
    # Typing in the box above a table hides the rows without the text.
    box = driver.find_element("css selector", 'input.filter[data-table="top-runs"]')
    box.send_keys("self_attention")
    visible = column_texts(driver, "top-runs", 2, visible_only=True)
    expected = ranked.filter(pl.col("name").str.contains("self_attention"))["id"].to_list()
    assert 0 < len(visible) < 10 and sorted(visible) == sorted(expected)
    shown_count = driver.find_element("css selector", 'input.filter[data-table="top-runs"] + .shown')
    assert shown_count.text == f"{len(expected)} of 10 rows"
    box.clear()
    box.send_keys(" ")  # an input event with nothing to look for: every row again
    assert len(column_texts(driver, "top-runs", 2, visible_only=True)) == 10
    # The figures: the heatmap and one panel per top run with history.
    pivot, curves = svg_shapes(driver, "pivot"), svg_shapes(driver, "curves")
    assert pivot["width"] > 300 and pivot["height"] > 200 and pivot["shapes"] > 20
    assert curves["width"] > 600 and curves["shapes"] > 50 and curves["panels"] == 10
    assert driver.execute_script("return document.querySelectorAll('svg').length") == 2
    assert driver.get_log("browser") == []  # the clicks and the typing raised nothing either
    screenshot(driver, tmp_path / "wandb_sample_report.png", copy_to=SHOTS)


def test_the_neptune_sample_report(driver, reports, tmp_path):
    page, runs = reports["neptune"]
    open_report(driver, page)
    assert column_texts(driver, "top-runs", 2) == best(runs, 10)["id"].to_list()
    assert svg_shapes(driver, "curves")["panels"] == 10 and svg_shapes(driver, "pivot")["shapes"] > 20
    screenshot(driver, tmp_path / "neptune_sample_report.png")


def test_hostile_names_tags_and_config_values_show_as_text(driver, reports, tmp_path):
    page, _ = reports["hostile"]
    open_report(driver, page)
    assert driver.execute_script("return document.getElementsByTagName('img').length") == 0
    assert driver.execute_script("return document.scripts.length") == 1
    name, tags, architecture = (header_index(driver, "top-runs", c) for c in ("name", "tags", "architecture"))
    assert column_texts(driver, "top-runs", name)[:2] == [HOSTILE_NAME, SCRIPT_NAME]
    assert column_texts(driver, "top-runs", tags)[:2] == [f"{HOSTILE_NAME}, ok", f"{SCRIPT_NAME}, ok"]
    assert column_texts(driver, "top-runs", architecture)[:2] == [HOSTILE_NAME, SCRIPT_NAME]
    cell = driver.find_element("css selector", f"#top-runs tbody tr:first-child td:nth-child({name})")
    assert cell.text == HOSTILE_NAME and cell.find_elements("css selector", "*") == []
    header_index(driver, "top-runs", f"config_{HOSTILE_KEY.replace('/', '_')}")  # a header, as text
    box = driver.find_element("css selector", 'input.filter[data-table="top-runs"]')
    box.send_keys("<img")
    assert column_texts(driver, "top-runs", 2, visible_only=True) == ["h0", "h2"]  # name/tag/config markup
    assert svg_shapes(driver, "curves")["panels"] == 4
    assert driver.get_log("browser") == []
    screenshot(driver, tmp_path / "hostile_report.png")
    assert driver.execute_script("return window.__alerts") == []


def screenshot(driver, path: Path, copy_to: Path | None = None) -> None:
    """The whole page as a PNG (the window made as tall as the page), copied to `copy_to` if given."""
    height = driver.execute_script(
        "document.activeElement.blur(); window.scrollTo(0, 0); return document.documentElement.scrollHeight"
    )
    driver.set_window_size(1300, height + 120)
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 20_000
    driver.set_window_size(1300, 1000)
    if copy_to is not None:
        copy_to.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy_to / path.name)


@pytest.mark.slow
def test_the_report_benchmark_runs_at_a_tiny_size(tmp_path):
    require_chromium()
    command = ["uv", "run", str(ROOT / "bench" / "bench_report.py"), "--runs", "300", "--columns", "40"]
    done = subprocess.run(
        [*command, "--repeats", "1", "--json", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    for values in figures["variants"].values():
        assert values["write_s"] > 0 and values["load_s"] > 0 and values["console"] == []
        assert 0.01 < values["size_mb"] < 5 and values["log"].startswith("wrote ")
