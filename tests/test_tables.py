"""Terminal tables at 80, 100 and 200 columns: no line too long, no number or id split, long names cut with
an ellipsis, constant and left-out columns named in the caption; plain text when piped."""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len

from shared.cli.main import run_main
from shared.cli.tables import fit_columns, print_table, shorten_names, without_common_prefix, wrap_header
from shared.table.outputs import format_value
from tests.current_data import load_script

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = [80, 100, 200]
BOX = set("┏┓┗┛┃━│─┡┩└┘┌┐╇┳┻╋")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

analyze_runs = load_script("analyze_runs")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """The bundled W&B sample runs exported with their history: long names, one project, a failed run."""
    folder = tmp_path_factory.mktemp("export")
    argv = ["--offline", str(ROOT / "samples" / "wandb"), "-o", str(folder), "--include-history"]
    assert load_script("export_runs").main(argv) == 0
    return folder


def on_terminal(monkeypatch, width: int, main) -> str:
    """What `main()` prints on a terminal `width` columns wide, without colour codes."""
    screen = Terminal()
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr(sys, "stdout", screen)
    main()
    monkeypatch.undo()
    return ANSI.sub("", screen.getvalue())


def parse(out: str) -> tuple[list[str], list[list[str]], str]:
    """Header names (wrapped lines joined), body lines as cells, and the caption of a rich table; fails
    when a header is wrapped inside a word (`architectur` / `e`)."""
    lines = out.splitlines()
    top, rule, bottom = (next(i for i, line in enumerate(lines) if line.startswith(c)) for c in "┏┡└")
    header_lines = [line.split("┃")[1:-1] for line in lines[top + 1 : rule]]
    columns = [
        [part.strip() for part in column if part.strip()] for column in zip(*header_lines, strict=True)
    ]
    split = [parts for parts in columns if any(part[-1] not in "_/.- " for part in parts[:-1])]
    assert not split, f"header words split: {split}"
    header = ["".join(parts) for parts in columns]
    body = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines[rule + 1 : bottom]]
    return header, body, " ".join(line.strip() for line in lines[bottom + 1 :])


def left_out(caption: str, width: int) -> list[str]:
    found = re.search(rf"left out to fit {width} columns: (.*?) \(piped output shows every column\)", caption)
    return found[1].split(", ") if found else []


def assert_fits(out: str, width: int) -> None:
    too_long = [line for line in out.splitlines() if cell_len(line) > width]
    assert not too_long, "\n".join(too_long)


def assert_shortened_or_whole(shown: str, name: str) -> None:
    assert shown == name or (shown.endswith("…") and name.startswith(shown[:-1]) and len(shown) >= 10), shown


def assert_name(shown: str, name: str) -> None:
    """A run's name whole, or its beginning and end around `…` (at least 20 characters)."""
    head, _, tail = shown.partition("…")
    assert shown == name or (name.startswith(head) and name.endswith(tail) and len(shown) >= 20), shown


@pytest.mark.parametrize("width", WIDTHS)
def test_analyze_top_table_fits_the_terminal(monkeypatch, capsys, export, width):
    argv = [str(export), "--top", "13", "--metric", "metric_test_mse"]
    assert analyze_runs.main([*argv, "--format", "json"]) == 0
    full = json.loads(capsys.readouterr().out)
    out = on_terminal(monkeypatch, width, lambda: analyze_runs.main(argv))
    assert_fits(out, width)
    header, body, caption = parse(out)
    columns = list(full[0])
    assert header[:2] == ["rank", "id"] and "metric_test_mse" in header
    assert header == [c for c in columns if c in header], "the shown columns keep their order"
    constant = [c for c in columns if len({json.dumps(row[c]) for row in full}) == 1]
    assert {"project", "wd_parsed"} <= set(constant)
    for column in constant:
        assert column not in header and f"{column}: {format_value(full[0][column])}" in caption
    dropped = left_out(caption, width)
    assert set(header) | set(constant) | set(dropped) == set(columns) and not set(header) & set(dropped)
    assert bool(dropped) == (width < 200)
    assert len(body) == len(full), "one line per run"
    for cells, row in zip(body, full, strict=True):
        for column, text in zip(header, cells, strict=True):
            if column == "id" or isinstance(row[column], int | float):
                assert text == format_value(row[column]), (column, text)
            elif column == "name":
                assert_name(text, row[column])
            else:
                assert_shortened_or_whole(text, row[column])


def test_at_80_columns_the_columns_that_tell_the_runs_apart_come_before_the_name(monkeypatch, export):
    argv = [str(export), "--top", "5", "--metric", "metric_test_mse"]
    header, body, caption = parse(on_terminal(monkeypatch, 80, lambda: analyze_runs.main(argv)))
    # dataset tells runs 1/3 and 4/5 apart, state 4/5, architecture 1/3; the name then does not fit; stage does
    assert header == ["rank", "id", "metric_test_mse", "state", "stage", "architecture", "dataset"]
    assert left_out(caption, 80) == ["name", "k", "lr_parsed", "seed_parsed"]
    assert "project: spectral_denoising · model_type: spectral · wd_parsed: 0.0001" in caption
    described = [tuple(cells[3:]) for cells in body]
    assert len(set(described)) == len(described), "the shown columns tell the runs apart"


def test_at_100_columns_the_name_is_shortened_in_the_middle(monkeypatch, export):
    argv = [str(export), "--top", "5", "--metric", "metric_test_mse"]
    header, body, _ = parse(on_terminal(monkeypatch, 100, lambda: analyze_runs.main(argv)))
    names = [cells[header.index("name")] for cells in body]
    assert all("…" in name for name in names) and len(set(names)) == len(names), names
    assert names[1].startswith("stage2c_f") and names[1].endswith("lr3e-4_s1"), names


def cli(module, command: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        run_main(lambda: module.main(shlex.split(command)))
    assert stopped.value.code == 0


QUERIES = {
    "wandb": ("wandb-tools", "--export {export} --metric test/mse -k 5 --details train/loss"),
    "neptune": ("neptune-tools", "{root}/samples/neptune/archive --no-cache --metric test/mse -k 5"),
}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("tool", QUERIES)
def test_query_topk_table_fits_the_terminal(monkeypatch, capsys, export, tool, width):
    folder, command = QUERIES[tool]
    module = load_script("query_topk", folder)
    command = command.format(export=export, root=ROOT)
    cli(module, f"{command} --json")
    answer = json.loads(capsys.readouterr().out)
    out = on_terminal(monkeypatch, width, lambda: cli(module, command))
    assert_fits(out, width)
    header, body, caption = parse(out)
    assert header[:2] == ["rank", "run id"] and "test/mse" in header
    assert bool(left_out(caption, width)) == (width < 200)
    for cells, run in zip(body, answer, strict=True):
        shown = dict(zip(header, cells, strict=True))
        assert shown["run id"] == run["run_id"]
        if "name" in shown:
            assert_name(shown["name"], run["name"])
        for key, value in run["metrics"].items():
            if key in shown:
                assert shown[key] == str(float(f"{value:.6g}"))


@pytest.mark.parametrize("tool", QUERIES)
def test_piped_query_topk_table_is_plain_text(capsys, export, tool):
    folder, command = QUERIES[tool]
    cli(load_script("query_topk", folder), command.format(export=export, root=ROOT))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert not BOX & set(out)
    assert lines[0] == "top 5 of 13 runs: min last(test/mse)"
    assert lines[1].split()[:5] == ["rank", "run", "id", "name", "test/mse"]
    assert "stage2c_filter_bank_ring_of_cliques_k8_lr1e-3_s0" in lines[2], "names whole"


def test_piped_print_table_has_every_column_and_no_box(capsys):
    rows = [{"entity": "team", "project": f"p{i}", "runs": i, "file": "x" * 300} for i in range(3)]
    print_table(rows, title="Exported to out/")
    assert capsys.readouterr().out.splitlines() == [
        "Exported to out/",
        f"entity  project  runs  file{' ' * 296}".rstrip(),
        *(f"team    p{i}          {i}  {'x' * 300}" for i in range(3)),
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_print_table_on_a_terminal_folds_constants_and_leaves_out_what_does_not_fit(monkeypatch, width):
    rows = [
        {
            "rank": i,
            "run id": f"run{i:05d}",
            "name": f"a_rather_long_run_name_{i}_" + "x" * 40,
            "loss": 1 / 7 + i,
            "entity": "team",
            **{f"config.option_{c}": f"{c}-{i}" * 3 for c in range(8)},
        }
        for i in range(4)
    ]
    out = on_terminal(monkeypatch, width, lambda: print_table(rows, title="top 4"))
    assert_fits(out, width)
    header, body, caption = parse(out)
    assert header[:5] == ["rank", "run id", "name", "loss", "config.option_0"] and "entity" not in header
    assert "entity: team" in caption
    dropped = left_out(caption, width)
    assert header[5:] + dropped == [f"config.option_{c}" for c in range(1, 8)]
    assert (len(dropped) > 0) == (width < 200)
    for cells, row in zip(body, rows, strict=True):
        assert cells[:2] == [str(row["rank"]), row["run id"]] and cells[3] == str(row["loss"])
        assert_name(cells[2], row["name"])


def test_fit_columns_keeps_the_key_columns_and_takes_others_while_they_fit():
    header = ["rank", "id", "name", "loss", "wide", "k"]
    rows = [["1", "abc", "n" * 30, "0.5", "w" * 30, "8"], ["2", "abd", "m" * 30, "0.25", "v" * 30, "16"]]
    unbreakable = [True, True, False, True, False, True]
    fit = fit_columns(header, rows, unbreakable=unbreakable, width=52, keep=[0, 1, 3], of_runs=True)
    # `wide` tells the two rows apart, so it comes before the name, which then does not fit
    assert (fit.shown, fit.left_out, fit.constant) == ([0, 1, 3, 4, 5], [2], [])
    assert sum(fit.widths) + 3 * len(fit.shown) + 1 <= 52
    assert dict(zip(fit.shown, fit.widths, strict=True))[1] == 3, "an id is as wide as its values"
    narrow = fit_columns(header, rows, unbreakable=unbreakable, width=20, keep=[0, 1, 3], of_runs=True)
    assert narrow.shown == [0, 1, 3], "the key columns stay even when the terminal is too narrow"
    one_row = fit_columns(header, rows[:1], unbreakable=unbreakable, width=200, keep=[0, 1, 3], of_runs=True)
    assert one_row.constant == [], "a single row says nothing about constant columns"


def test_rich_pivot_leaves_out_columns_keeps_numbers_whole_and_says_which_states_went_in(monkeypatch, export):
    argv = [str(export), "--pivot-rows", "architecture", "--pivot-cols", "name", "--metric", "test_mse"]
    out = on_terminal(monkeypatch, 80, lambda: analyze_runs.main(argv))
    assert_fits(out, 80)
    header, body, caption = parse(out)
    assert header[0] == "architecture" and "mean rank" in left_out(caption, 80)
    cell = re.compile(r"(★ )?\d[\d.e+-]*|\d[\d.e+-]* \(n=\d+\)|")
    assert all(cell.fullmatch(text) for line in body for text in line[1:]), body
    assert "runs in the cells: 12 finished, 1 failed (--state finished for finished runs only)" in caption


def test_plain_and_markdown_pivots_have_the_legend_and_the_states(capsys, export):
    for fmt in ("plain", "markdown"):
        analyze_runs.main(
            [str(export), "--pivot", "--metric", "test_mse", "--format", fmt, "--state", "finished"]
        )
        lines = capsys.readouterr().out.splitlines()
        assert lines[-2:] == [
            "",
            "cell: best · mean (n=runs with a value); * = best in its column; runs in the cells: 12 finished",
        ]


@pytest.mark.parametrize("width", WIDTHS)
def test_long_ids_and_numbers_stay_whole_and_a_shared_prefix_leaves_the_headers(monkeypatch, width):
    """Neptune-like rows: UUID ids, 10-digit metrics, names alike but for their ends, `parameters/` keys."""
    rows = [
        {
            "rank": i + 1,
            "run id": f"78f41504-a4cd-4865-b8ba-91242bd96b{i:02d}",
            "name": f"stage2c_filter_bank_ring_of_cliques_k{8 * (i + 1)}_lr1e-3_s{i % 2}",
            "test/mse": 0.0884528237 + i / 3,
            "parameters/architecture": ["filter_bank", "self_attention"][i % 2],
            "parameters/data/graph_type": ["ring_of_cliques", "sbm", "pyg_enzymes"][i % 3],
            "parameters/model/k": 8 * (i + 1),
        }
        for i in range(5)
    ]
    out = on_terminal(monkeypatch, width, lambda: print_table(rows, title="top 5", keep=["test/mse"]))
    assert_fits(out, width)
    header, body, caption = parse(out)
    assert header[:2] == ["rank", "run id"] and "test/mse" in header
    assert "headers shown without their prefix parameters/" in caption
    assert not any(name.startswith("parameters/") for name in header)
    assert ("architecture" in header) == (width > 80), "at 80 model/k alone tells the runs apart and fits"
    for cells, row in zip(body, rows, strict=True):
        shown = dict(zip(header, cells, strict=True))
        assert shown["run id"] == row["run id"] and shown["test/mse"] == str(row["test/mse"])
        if "name" in shown:
            assert_name(shown["name"], row["name"])
    if "name" in header:
        names = [cells[header.index("name")] for cells in body]
        assert len(set(names)) == len(names), names


def test_a_prefix_stays_when_names_would_collide_or_not_every_column_shares_it():
    header = ["rank", "parameters/lr", "lr", "parameters/k"]
    assert without_common_prefix(header, [1, 2, 3]) == (header, "")  # `lr` has no prefix
    assert without_common_prefix(header, [1, 3]) == (header, ""), "parameters/lr would read as lr"
    assert without_common_prefix(["a/x", "a/y"], [0, 1]) == (["x", "y"], "a/")


def test_names_are_shortened_in_the_middle_where_they_stay_apart():
    names = ["stage2c_filter_bank_ring_k8_s0", "stage2c_filter_bank_pyg_k8_s0", "stage3_x"]
    shortened = shorten_names(names, 12)
    assert shortened[2] == "stage3_x" and all(len(name) <= 12 for name in shortened)
    assert len(set(shortened)) == 3 and all("…" in name for name in shortened[:2]), shortened
    assert shorten_names(["abcdefghijklmnop"], 9) == ["abcd…mnop"]


@pytest.mark.parametrize("width", WIDTHS)
def test_a_header_word_is_never_split(monkeypatch, width):
    texts = ["filter_bank_with_a_long_tail_of_words", "self_attention_with_another_long_tail"]
    rows = [
        {
            "rank": i,
            "id": f"r{i}",
            "loss": i / 3,
            **{f"{word}_{n}": texts[i % 2] for n, word in enumerate(WORDS)},
        }
        for i in range(3)
    ]
    header, _, _ = parse(on_terminal(monkeypatch, width, lambda: print_table(rows, title="t")))
    assert header[:3] == ["rank", "id", "loss"] and len(header) > 3
    assert wrap_header("architecture_family", 13) == "architecture_\nfamily"


WORDS = ["architecture", "dataset", "normalisation", "optimizer", "scheduler", "regularisation"] * 2


def test_columns_always_shown_wider_than_the_terminal_are_not_cut(monkeypatch):
    rows = [
        {"rank": i, "run id": f"78f41504-a4cd-4865-b8ba-91242bd96b{i:02d}", "loss": 0.0884528237 + i, "x": i}
        for i in range(3)
    ]
    out = on_terminal(monkeypatch, 40, lambda: print_table(rows, title="top 3", keep=["loss"]))
    header, body, caption = parse(out)  # lines longer than 40: the terminal wraps them
    assert header == ["rank", "run id", "loss"] and left_out(caption, 40) == ["x"]
    assert [cells[1:] for cells in body] == [[row["run id"], str(row["loss"])] for row in rows]
