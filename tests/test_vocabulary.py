"""One vocabulary across the tools: a metric named as logged or as its column, --maximize, --format
table|csv|json|markdown, -o FILE by extension, --source for offline input, --log-y."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

from shared.base.errors import BadInput
from shared.cli import flags
from shared.cli.args import ScriptParser
from shared.cli.main import run_main
from shared.table.vocabulary import STATES
from tests.current_data import load_script, make_runs, write_export
from tests.neptune_fixtures import write_archive

analyze = load_script("analyze_runs")
aggregate = load_script("aggregate_runs")
wandb_query = load_script("query_topk")
neptune_query = load_script("query_topk", "neptune-tools")
list_entities = load_script("list_entities")
wandb_export = load_script("export_runs")
neptune_export = load_script("export_runs", "neptune-tools")

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ["table", "csv", "json", "markdown"]
SHARED_FLAGS = [
    (analyze, ["--metric", "--maximize", "--descending", "--format", "-o"]),
    (aggregate, ["--format", "-o"]),
    (wandb_query, ["--metric", "--maximize", "--format", "--json", "-o", "--log-y"]),
    (neptune_query, ["--metric", "--maximize", "--format", "--json", "-o", "--log-y"]),
    (list_entities, ["--format", "--json", "-o"]),
    (
        wandb_export,
        ["--source", "--offline", "--include-history", "--include-console", "--include-system-metrics"],
    ),
    (neptune_export, ["--source", "--include-history", "--include-console", "--include-system-metrics"]),
]


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch) -> None:
    """Neptune archive queries keep series summaries: never in the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A W&B runs export: 480 runs logging test/mse and test/accuracy (columns metric_test_mse, …)."""
    folder = tmp_path_factory.mktemp("export")
    write_export(folder, make_runs())
    return folder


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A neptune-exporter archive of one project logging train/loss, metrics/L0, eval/accuracy."""
    return write_archive(tmp_path_factory.mktemp("neptune") / "data")


def run(module: ModuleType, argv: list[str], capsys) -> tuple[int, str, str]:
    """A script's main as `uv run` runs it: exit code, stdout, stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_main(lambda: module.main([str(a) for a in argv]))
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


def help_text(module: ModuleType, capsys) -> str:
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize(("module", "flags"), SHARED_FLAGS, ids=lambda x: getattr(x, "__name__", ""))
def test_every_tool_takes_the_shared_flags(module, flags, capsys):
    text = help_text(module, capsys)
    for flag in flags:
        assert re.search(rf"(^|[\s,]){re.escape(flag)}[\s,=]", text), f"{module.__name__}: {flag}"
    if "--format" in flags:
        choices = re.search(r"--format \{([^}]*)\}", text)
        assert choices and set(FORMATS) <= set(choices.group(1).split(","))


# ------------------------------------------------------------------ a metric, as logged or as its column


@pytest.mark.parametrize("spelling", ["test/mse", "test_mse", "metric_test_mse"])
def test_analyze_takes_a_metric_as_logged_or_as_its_column(export, spelling, capsys):
    code, out, _ = run(analyze, [export, "--metric", spelling, "--top", "3", "--format", "csv"], capsys)
    assert code == 0
    table = pl.read_csv(io.StringIO(out))
    assert table.columns[:4] == ["rank", "id", "name", "metric_test_mse"] and table.height == 3
    code, out, _ = run(analyze, [export, "--metric", spelling, "--pareto", "test/accuracy"], capsys)
    assert code == 0 and "metric_test_accuracy" in out


@pytest.mark.parametrize(
    ("module", "source", "spellings"),
    [
        (wandb_query, ["--export"], ["test/mse", "metric_test_mse", "test_mse"]),
        (neptune_query, [], ["train/loss", "metric_train_loss", "train_loss"]),
    ],
    ids=["wandb", "neptune"],
)
def test_queries_take_a_metric_as_logged_or_as_its_column(module, source, spellings, export, archive, capsys):
    folder = export if module is wandb_query else archive
    answers = []
    for spelling in spellings:
        code, out, err = run(module, [*source, folder, "--metric", spelling, "-k", "3", "--json"], capsys)
        assert code == 0, err
        answers.append(json.loads(out))
        if spelling != spellings[0]:
            assert f"--metric {spelling}: the metric {spellings[0]}" in err
    assert answers[0] and all(answer == answers[0] for answer in answers)
    assert all(spellings[0] in run["metrics"] for run in answers[0])


def test_pareto_and_details_take_columns_too(archive, capsys):
    argv = [archive, "--metric", "train_loss", "--pareto", "metric_metrics_L0", "--json"]
    code, out, err = run(neptune_query, argv, capsys)
    assert code == 0, err
    assert all({"train/loss", "metrics/L0"} <= set(r["metrics"]) for r in json.loads(out))
    argv = [archive, "--metric", "train/loss", "--details", "metric_eval_accuracy", "--json"]
    code, out, _ = run(neptune_query, argv, capsys)
    found = json.loads(out)
    assert code == 0 and any(r["metrics"]["eval/accuracy"] is not None for r in found)


def test_an_unknown_metric_is_answered_with_the_closest_names(export, capsys):
    code, _, err = run(analyze, [export, "--metric", "test/mze"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "unknown metric 'test/mze' in --metric, did you mean 'metric_test_mse'" in err
    code, _, err = run(wandb_query, ["--export", export, "--metric", "metric_test_mze"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "unknown metric 'metric_test_mze'" in err and "closest to 'test/mse'" in err


def test_a_column_two_logged_keys_share_is_ambiguous():
    from shared.base.errors import BadInput
    from shared.table.metrics import resolve_metric

    assert resolve_metric("metric_a_b", ["a/b", "c"]) == "a/b"
    assert resolve_metric("a/b", ["a/b", "a.b"]) == "a/b"  # as logged, it is clear
    with pytest.raises(BadInput, match=re.escape("could be any of 'a/b', 'a.b'")):
        resolve_metric("metric_a_b", ["a/b", "a.b"])


# ------------------------------------------------------------------ higher is better


def test_maximize_and_descending_are_one_flag(export, capsys):
    base = [export, "--metric", "test/accuracy", "--top", "5", "--format", "csv"]
    outputs = {flag: run(analyze, [*base, flag], capsys)[1] for flag in ("--maximize", "--descending")}
    assert outputs["--maximize"] == outputs["--descending"]
    values = pl.read_csv(io.StringIO(outputs["--maximize"]))["metric_test_accuracy"].to_list()
    assert values == sorted(values, reverse=True)
    code, _, err = run(analyze, [export, "--metric", "test/accuracy", "--top", "1"], capsys)
    assert code == 0 and "pass --maximize if higher is better" in err


# ------------------------------------------------------------------ --format and -o


def tool_argv(tool: str, export: Path, archive: Path, tmp_path: Path) -> list:
    return {
        "analyze": [export, "--metric", "test/mse", "--top", "4"],
        "wandb_query": ["--export", export, "--metric", "test/mse", "-k", "4"],
        "neptune_query": [archive, "--metric", "train/loss", "-k", "4"],
        "aggregate": [export, "-o", tmp_path / "unified.parquet", "--protocol", "all"],
    }[tool]


TOOLS = {
    "analyze": analyze,
    "wandb_query": wandb_query,
    "neptune_query": neptune_query,
    "aggregate": aggregate,
}


@pytest.mark.parametrize("tool", TOOLS)
def test_format_prints_table_csv_json_or_markdown(tool, export, archive, tmp_path, capsys):
    argv = tool_argv(tool, export, archive, tmp_path)
    outputs = {}
    for fmt in FORMATS:
        code, outputs[fmt], err = run(TOOLS[tool], [*argv, "--format", fmt], capsys)
        assert code == 0, err
    assert outputs["table"] == run(TOOLS[tool], argv, capsys)[1]  # the default
    assert pl.read_csv(io.StringIO(outputs["csv"].split("\n\n")[0])).height >= 1
    assert json.loads(outputs["json"])
    assert outputs["markdown"].startswith("| ") and "| --- |" in outputs["markdown"]
    if tool.endswith("query"):
        assert outputs["json"] == run(TOOLS[tool], [*argv, "--json"], capsys)[1]


@pytest.mark.parametrize("tool", ["analyze", "wandb_query", "neptune_query"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json", ".md"])
def test_output_is_written_by_extension(tool, suffix, export, archive, tmp_path, capsys):
    out = tmp_path / f"answer{suffix}"
    code, _, err = run(TOOLS[tool], [*tool_argv(tool, export, archive, tmp_path), "-o", out], capsys)
    assert code == 0, err
    check_written(out, rows=4)
    if tool.endswith("query") and suffix == ".csv":  # files hold exact values, not the shown digits
        code, shown, _ = run(TOOLS[tool], [*tool_argv(tool, export, archive, tmp_path), "--json"], capsys)
        metric = "test/mse" if tool == "wandb_query" else "train/loss"
        assert pl.read_csv(out)[metric].to_list() == [r["metrics"][metric] for r in json.loads(shown)]


def check_written(path: Path, rows: int) -> None:
    if path.suffix == ".csv":
        assert pl.read_csv(path).height == rows
    elif path.suffix == ".parquet":
        assert pl.read_parquet(path).height == rows
    elif path.suffix == ".json":
        assert len(json.loads(path.read_text())) == rows
    else:
        lines = path.read_text().splitlines()
        assert lines[0].startswith("| ") and len(lines) == rows + 2


@pytest.mark.parametrize("suffix", [".csv", ".json", ".md"])
def test_aggregate_writes_its_output_by_extension(suffix, export, tmp_path, capsys):
    out = tmp_path / f"unified{suffix}"
    code, printed, err = run(aggregate, [export, "-o", out, "--protocol", "all", "--format", "json"], capsys)
    assert code == 0, err
    report = json.loads(printed)
    assert report["output"] == str(out) and report["runs"] == 480 and report["history"] is None
    check_written(out, rows=480)
    if suffix == ".csv":
        assert pl.read_csv(out)["tags"][0].startswith('["stage1","')  # lists as JSON text


@pytest.mark.parametrize("tool", TOOLS)
def test_an_unknown_output_extension_is_one_line_exit_2(tool, export, archive, tmp_path, capsys):
    argv = [a for a in tool_argv(tool, export, archive, tmp_path) if not str(a).endswith(".parquet")]
    argv = [a for a in argv if a != "-o"] if tool == "aggregate" else argv
    code, out, err = run(TOOLS[tool], [*argv, "-o", tmp_path / "answer.txt"], capsys)
    assert code == 2 and out == ""
    assert (
        err
        == f"error: -o {tmp_path / 'answer.txt'}: unknown extension .txt (use .csv, .parquet, .json, .md)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_empty_query_answer_still_has_its_header(archive, capsys):
    argv = [archive, "--metric", "train/loss", "--where", '"train/loss" < -1', "--format", "csv"]
    code, out, _ = run(neptune_query, argv, capsys)
    assert code == 0 and out.splitlines() == ["rank,run id,name,train/loss"]


def test_list_entities_format_and_output(wandb_env, tmp_path, capsys):
    code, as_json, err = run(list_entities, ["--json"], capsys)
    assert code == 0, err
    assert run(list_entities, ["--format", "json"], capsys)[1] == as_json
    projects = sum(len(entry["projects"]) for entry in json.loads(as_json))
    code, out, _ = run(list_entities, ["--format", "csv", "-o", tmp_path / "p.parquet"], capsys)
    table = pl.read_csv(io.StringIO(out))
    assert code == 0 and table.columns == ["entity", "kind", "project", "runs", "finished", "last_run"]
    assert table.height == projects and pl.read_parquet(tmp_path / "p.parquet").height == projects
    code, out, _ = run(
        list_entities, ["--discover", "--format", "markdown", "-o", tmp_path / "e.json"], capsys
    )
    assert code == 0 and out.startswith("| entity | kind | project_count |")
    assert json.loads((tmp_path / "e.json").read_text()) == [
        {k: e[k] for k in ("entity", "kind", "project_count")} for e in json.loads(as_json)
    ]
    code, _, err = run(list_entities, ["-o", tmp_path / "x.xlsx"], capsys)
    assert code == 2 and "unknown extension .xlsx" in err


# ------------------------------------------------------------------ offline input, plots


def test_wandb_export_reads_offline_runs_with_source_or_offline():
    args = wandb_export.parse_args(["--source", "a/wandb", "--offline", "b.wandb"])
    assert args.source == [Path("a/wandb"), Path("b.wandb")]
    with pytest.raises(SystemExit):
        wandb_export.parse_args(["--source", "a", "--incremental"])


@pytest.mark.parametrize("log_y", [False, True])
def test_log_y_reaches_the_curves_plot(log_y, archive, tmp_path, monkeypatch, capsys):
    import shared.analysis.plots

    seen = {}
    monkeypatch.setattr(
        shared.analysis.plots, "plot_curves", lambda path, curves, **options: seen.update(options)
    )
    argv = [archive, "--metric", "train/loss", "-k", "2", "--plot", tmp_path / "c.png"]
    code, _, err = run(neptune_query, [*argv, *(["--log-y"] if log_y else [])], capsys)
    assert code == 0, err
    assert seen["log_y"] is (True if log_y else None)


@pytest.mark.parametrize("extra", [[], ["--pareto", "metrics/L0", "--plot", "front.png"]])
def test_log_y_needs_a_plot_of_curves(extra, archive, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(neptune_query, [archive, "--metric", "train/loss", "--log-y", *extra], capsys)
    assert code == 2 and err.startswith("error: --log-y needs --plot FILE of a top-k answer")
    assert list(tmp_path.iterdir()) == []


def test_log_y_draws_the_curves(archive, tmp_path, capsys):
    plot = tmp_path / "curves.svg"
    argv = [archive, "--metric", "train/loss", "-k", "2", "--plot", plot, "--log-y"]
    code, _, err = run(neptune_query, argv, capsys)
    assert code == 0, err
    assert plot.read_text().lstrip().startswith("<?xml")


# ------------------------------------------------------------------ one vocabulary: the table of shared flags

SCRIPTS = {
    "analyze": analyze,
    "aggregate": aggregate,
    "list_entities": list_entities,
    "W&B query_topk": wandb_query,
    "Neptune query_topk": neptune_query,
    "W&B export_runs": wandb_export,
    "Neptune export_runs": neptune_export,
}


class _Parsed(Exception):
    """Raised in place of parsing: carries the parser a script built."""


def parser_of(module: ModuleType, monkeypatch) -> argparse.ArgumentParser:
    """The argparse parser a script's parse_args builds (its flags as the user gets them)."""

    def capture(self, *args, **kwargs):
        raise _Parsed(self)

    monkeypatch.setattr(ScriptParser, "parse_args", capture)
    with pytest.raises(_Parsed) as parsed:
        module.parse_args([])
    monkeypatch.undo()
    return parsed.value.args[0]


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return {tool: parser_of(module, monkeypatch) for tool, module in SCRIPTS.items()}


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def test_the_table_names_every_tool():
    assert set(SCRIPTS) == set(flags.TOOLS)
    for tool, module in SCRIPTS.items():
        assert Path(module.__file__).resolve() == (ROOT / flags.TOOLS[tool]).resolve()
    assert all(set(c.tools) <= set(flags.TOOLS) for c in flags.CONCEPTS)


@pytest.mark.parametrize("concept", flags.CONCEPTS, ids=lambda c: c.shown)
def test_every_tool_takes_the_flags_the_table_promises(concept, parsers):
    for tool in concept.tools:
        actions = options(parsers[tool])
        for spellings in concept.flags:
            action = next((a for a in actions if spellings[0] in a.option_strings), None)
            assert action is not None, f"{tool} lacks {spellings[0]}"
            extra = set(action.option_strings) - set(spellings) - set(flags.OLD_SPELLINGS)
            assert set(spellings) <= set(action.option_strings) and not extra, (
                f"{tool} spells {spellings[0]} as {action.option_strings}"
            )
            assert all(f"`{s}" in concept.shown for s in spellings), concept.shown
        if ("--json",) in concept.flags:  # --json is --format json
            json_flag = next(a for a in actions if "--json" in a.option_strings)
            format_flag = next(a for a in actions if "--format" in a.option_strings)
            assert (json_flag.dest, json_flag.const) == ("format", "json") and "json" in format_flag.choices


@pytest.mark.parametrize("tool", SCRIPTS)
def test_no_tool_spells_one_setting_twice(tool, parsers):
    """Two flags that set one value are two spellings of one concept (only --json is --format json)."""
    dests = [a.dest for a in options(parsers[tool]) if "--json" not in a.option_strings]
    assert len(dests) == len(set(dests)), f"{tool}: {sorted(d for d in dests if dests.count(d) > 1)}"


def test_a_flag_two_tools_take_is_in_the_table(parsers):
    """A spelling two tools share is a shared concept: the table lists it for each tool taking it."""
    taken: dict[str, set[str]] = {}
    for tool, parser in parsers.items():
        for action in options(parser):
            for flag in action.option_strings:
                taken.setdefault(flag, set()).add(tool)
    listed = {
        (flag, tool)
        for c in flags.CONCEPTS
        for spellings in c.flags
        for flag in spellings
        for tool in c.tools
    }
    missing = sorted(
        f"{flag} ({tool})"
        for flag, tools in taken.items()
        if len(tools) > 1 and flag not in flags.OLD_SPELLINGS
        for tool in tools
        if (flag, tool) not in listed
    )
    assert not missing, f"flags two tools take but the table does not list: {missing}"


def test_the_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    heading = "### Flags every tool spells the same way\n\n"
    section = readme[readme.index(heading) + len(heading) :].split("\n\n", 1)[0] + "\n"
    assert section == flags.flags_table(), (
        "README.md's flag table differs from shared/cli/flags.py: paste `uv run python -m shared.cli.flags`"
    )


# ------------------------------------------------------------------ one vocabulary: what the flags do


def usage_error(module: ModuleType, argv: list[str], capsys) -> str:
    """The stderr of a script's parser refusing `argv` (exit 2): asserted to be one line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        module.parse_args(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_a_misspelt_flag_is_one_line_naming_the_closest(capsys):
    err = usage_error(analyze, ["--metirc", "test/mse"], capsys)
    assert "unrecognized arguments: --metirc (did you mean --metric?)" in err
    err = usage_error(wandb_query, ["team/p", "--metirc", "test/mse"], capsys)  # --metric is required
    assert "required: --metric (did you mean --metric?)" in err
    assert "(did you mean --workers?)" in usage_error(list_entities, ["--workrs=3"], capsys)
    assert "(did you mean --metric?)" in usage_error(neptune_query, ["a/b", "-metric", "x"], capsys)
    assert "did you mean" not in usage_error(aggregate, ["x/", "--zzzz"], capsys)


@pytest.mark.parametrize("tool", ["analyze", "aggregate", "wandb_query", "neptune_query"])
def test_an_unknown_state_is_exit_2_naming_the_known_ones(tool, export, archive, tmp_path, capsys):
    argv = [a for a in tool_argv(tool, export, archive, tmp_path)]
    code, out, err = run(TOOLS[tool], [*argv, "--state", "finshed"], capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "unknown run state 'finshed' (known: running, finished, failed" in err and "inactive" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("alias", "state"), [("inactive", "finished"), ("active", "running")])
def test_neptune_words_name_the_shared_states(alias, state, export, capsys):
    argv = [export, "--metric", "test/mse", "--format", "csv", "--state"]
    assert run(analyze, [*argv, alias], capsys)[1] == run(analyze, [*argv, state], capsys)[1]
    assert (
        run(wandb_query, ["--source", *argv, alias], capsys)[1]
        == run(wandb_query, ["--source", *argv, state], capsys)[1]
    )


@pytest.mark.parametrize("tool", ["analyze", "wandb_query", "neptune_query"])
def test_top_and_k_maximize_and_descending_are_one_flag_each(tool, export, archive, tmp_path, capsys):
    argv = [a for a in tool_argv(tool, export, archive, tmp_path) if a not in ("-k", "--top", "4")]
    answers = {
        (count, higher): run(TOOLS[tool], [*argv, count, "3", higher, "--json"], capsys)[1]
        for count in ("--top", "-k")
        for higher in ("--maximize", "--descending")
    }
    assert len(set(answers.values())) == 1 and len(json.loads(answers["-k", "--maximize"])) == 3


@pytest.mark.parametrize("tool", ["analyze", "aggregate"])
def test_json_is_format_json(tool, export, archive, tmp_path, capsys):
    argv = tool_argv(tool, export, archive, tmp_path)
    code, as_json, _ = run(TOOLS[tool], [*argv, "--json"], capsys)
    assert code == 0 and as_json == run(TOOLS[tool], [*argv, "--format", "json"], capsys)[1]
    assert json.loads(as_json)


def test_source_names_the_input_of_analyze_and_aggregate(export, tmp_path, capsys):
    argv = ["--metric", "test/mse", "--format", "csv"]
    assert run(analyze, ["--source", export, *argv], capsys)[1] == run(analyze, [export, *argv], capsys)[1]
    code, out, err = run(aggregate, ["--source", export, "-o", tmp_path / "u.parquet", "--json"], capsys)
    assert code == 0 and json.loads(out)["runs"] > 0, err


@pytest.fixture
def neptune_export_folder(archive, tmp_path, capsys) -> Path:
    """Our own Neptune export of the archive (neptune-tools/export_runs.py), its summary as --format json."""
    folder = tmp_path / "neptune_export"
    code, out, err = run(neptune_export, ["--source", archive, "-o", folder, "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["exported"][0]["runs"] > 0, err
    return folder


def test_both_queries_read_our_own_neptune_export(neptune_export_folder, tmp_path, monkeypatch, capsys):
    for variable in ("WANDB_API_KEY", "GRAPH_DENOISE_TEAM_SERVICE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: a key asked for would be exit 2
    monkeypatch.chdir(tmp_path)  # nor a .env
    argv = ["--metric", "train/loss", "--top", "2", "--state", "finished", "--json"]
    answers = [
        run(neptune_query, [neptune_export_folder, *argv], capsys),
        run(neptune_query, ["--source", neptune_export_folder, *argv], capsys),
        run(wandb_query, ["--source", neptune_export_folder, *argv], capsys),
        run(wandb_query, [neptune_export_folder, *argv], capsys),
    ]
    assert all(code == 0 for code, _, _ in answers), [err for _, _, err in answers]
    assert len({out for _, out, _ in answers}) == 1 and len(json.loads(answers[0][1])) == 2
    states = set(pl.read_parquet(next(neptune_export_folder.glob("*_runs.parquet")))["state"])
    assert states <= set(STATES)  # the export speaks the shared states
    code, out, err = run(analyze, [neptune_export_folder, *argv], capsys)
    assert code == 0 and json.loads(out)[0]["id"] == json.loads(answers[0][1])[0]["run_id"], err


def test_neptune_query_reads_a_wandb_export(export, capsys):
    argv = ["--metric", "test/mse", "-k", "3", "--state", "finished", "--json"]
    code, out, err = run(neptune_query, [export, *argv], capsys)
    assert code == 0, err
    assert out == run(wandb_query, ["--source", export, *argv], capsys)[1]


def test_wandb_query_passes_its_api_key():
    args = wandb_query.parse_args(["team/p", "--metric", "loss", "--api-key", "k" * 40])
    assert wandb_query.open_query(args).api_key == "k" * 40
    with pytest.raises(BadInput, match="takes no --api-key"):
        wandb_query.parse_args(["--source", ".", "--metric", "loss", "--api-key", "k" * 40])


def test_list_entities_takes_the_key_as_a_flag(wandb_env, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY")
    code, out, err = run(list_entities, ["--api-key", wandb_env.api_key, "--json"], capsys)
    assert code == 0 and json.loads(out), err
    assert wandb_env.api_key not in out + err
