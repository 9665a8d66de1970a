"""aggregate_runs.py on generated exports shaped like the seed's Current Data; expectations computed here."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.analysis.enrich import ENRICHMENT_COLUMNS
from shared.base.errors import BadInput
from shared.table.schema import HISTORY_SCHEMA
from tests.current_data import expected, load_script, make_runs, write_export

ROOT = Path(__file__).resolve().parent.parent
aggregate_runs = load_script("aggregate_runs")
T1, T2 = datetime(2026, 1, 18, tzinfo=UTC), datetime(2026, 1, 19, tzinfo=UTC)


@pytest.fixture
def exports(tmp_path):
    """Export a (960 runs); b re-exports 100 of them a day later; c holds 10 single-graph-protocol runs."""
    runs_a = make_runs((0, 1))
    runs_b = []
    for index, record in enumerate(runs_a[:100]):
        copy_b = copy.deepcopy(record)
        shift = timedelta(days=1) if index < 50 else -timedelta(days=1) if index < 70 else timedelta(0)
        copy_b.heartbeat_at = record.heartbeat_at + shift
        copy_b.config["copy"] = "b"
        copy_b.config["model"]["k"] = float(record.config["model"]["k"])  # int in a, float in b
        copy_b.config["seed"] = str(record.config["seed"])  # int in a, string in b
        runs_b.append(copy_b)
    runs_c = [replace(r, id=f"c{i}", project="single") for i, r in enumerate(make_runs((5,), salt="c")[:10])]
    for index, record in enumerate(runs_c):
        record.config = {
            **record.config,
            "data": {**record.config["data"], "same_graph_all_splits": index % 2 == 0},
        }
    paths = {
        "a": write_export(tmp_path / "exports" / "a", runs_a, exported_at=T1),
        "b": write_export(tmp_path / "exports" / "b", runs_b, exported_at=T2),
        "c": write_export(tmp_path / "exports" / "c", runs_c, exported_at=T1),
    }
    return {"a": runs_a, "b": runs_b, "c": runs_c, "paths": paths, "root": tmp_path}


def winners(data) -> dict[str, str]:
    """Run id → export it should come from: newest heartbeat, then newest export."""
    source = {r.id: "a" for r in data["a"]} | {r.id: "c" for r in data["c"]}
    heartbeat_a = {r.id: r.heartbeat_at for r in data["a"]}
    for record in data["b"]:
        if record.heartbeat_at >= heartbeat_a[record.id]:  # equal heartbeat: b was exported later
            source[record.id] = "b"
    return source


def funnel(data, *words: str) -> tuple[dict, dict, dict, set]:
    """Newest copies; of those the finished; of those matching any word; of those the distribution ones."""
    source = winners(data)
    latest = {r.id: r for name in ("a", "b", "c") for r in data[name] if source[r.id] == name}
    finished = {i: r for i, r in latest.items() if r.state == "finished"}
    matching = {i: r for i, r in finished.items() if not words or any(w in r.name for w in words)}
    distribution = {i for i, r in matching.items() if not r.config["data"].get("same_graph_all_splits")}
    return latest, finished, matching, distribution


def expected_kept(data) -> set[str]:
    return funnel(data)[3]


def run(*args: str) -> int:
    return aggregate_runs.main([*args])


def test_each_run_once_newest_copy_with_unified_types(exports, capsys):
    out = exports["root"] / "analysis" / "unified.parquet"
    assert run(str(exports["root"] / "exports"), "-o", str(out), "--protocol", "all") == 0
    err = capsys.readouterr().err
    table = pl.read_parquet(out)
    source = winners(exports)
    assert sorted(table["id"]) == sorted(source)
    by_id = {row["id"]: row for row in table.iter_rows(named=True)}
    for run_id, export in source.items():
        assert by_id[run_id]["_source_file"] == str(exports["paths"][export])
        assert (by_id[run_id]["config_copy"] == "b") == (export == "b")
    assert table.schema["config_model_k"] == pl.Float64  # int in a, float in b
    assert table.schema["config_seed"] == pl.String  # int in a, string in b: irreconcilable
    assert "column config_seed has irreconcilable types" in err
    assert {by_id[r.id]["config_seed"] for r in exports["a"]} == {"0", "1"}
    assert not list(out.parent.glob(".*.tmp")), "the temp file must be gone"


def test_enrichment_columns_match_the_configs_and_names(exports):
    out = exports["root"] / "u.parquet"
    run(str(exports["paths"]["a"]), "-o", str(out))
    table = pl.read_parquet(out)
    assert table.columns[-len(ENRICHMENT_COLUMNS) :] == list(ENRICHMENT_COLUMNS)
    want = {r.id: expected(r) for r in exports["a"]}
    for row in table.iter_rows(named=True):
        e = want[row["id"]]
        assert (row["arch"], row["dataset"], row["k"], row["stage"]) == (e.model, e.graph, e.k, e.stage)
        assert (row["seed_parsed"], row["lr_parsed"], row["wd_parsed"]) == (e.seed, pytest.approx(e.lr), 1e-4)
        assert row["protocol"] == "distribution"
        assert row["model_type"] == (
            "digress" if e.model.startswith("digress") else "gnn" if e.model.startswith("gnn") else "spectral"
        )


def test_counts_per_input_and_per_filter(exports, capsys):
    out = exports["root"] / "u.parquet"
    run(
        str(exports["root"] / "exports"),
        "-o",
        str(out),
        "--state",
        "finished",
        "--filter",
        "filter_bank|gnn_all",
    )
    stdout = capsys.readouterr().out
    latest, finished, matching, distribution = funnel(exports, "filter_bank", "gnn_all")
    assert sorted(pl.read_parquet(out)["id"]) == sorted(distribution)
    cells = [re.split(r"\s{2,}", line.strip()) for line in stdout.splitlines()]  # piped: plain text
    dropped = {row[0]: row[1] for row in cells if len(row) == 3}
    assert dropped["older copies of a run in another export"] == "100"
    assert dropped["--state finished"] == str(len(latest) - len(finished))
    assert dropped["--filter filter_bank|gnn_all"] == str(len(finished) - len(matching))
    assert dropped["--protocol distribution"] == str(len(matching) - len(distribution))
    runs_row = next(row for row in cells if "b/graph_denoise_team" in row[0])
    assert runs_row[1] == "100"


def test_no_enrich_still_filters_by_protocol(exports):
    out = exports["root"] / "raw.parquet"
    run(str(exports["paths"]["c"]), "-o", str(out), "--no-enrich")
    table = pl.read_parquet(out)
    assert not set(ENRICHMENT_COLUMNS) & set(table.columns) and "_source_file" in table.columns
    assert sorted(table["id"]) == sorted(
        r.id for r in exports["c"] if not r.config["data"]["same_graph_all_splits"]
    )


def test_history_of_the_kept_runs_is_merged_beside_the_output(exports):
    for name in ("a", "b"):
        runs = exports[name]
        rows = [
            (r.id, step, T1, "test/mse", float(step) + (100 if name == "b" else 0))
            for r in runs
            for step in range(2)
        ]
        history = pa.Table.from_pylist(
            [dict(zip(HISTORY_SCHEMA.names, row, strict=True)) for row in rows], schema=HISTORY_SCHEMA
        )
        pq.write_table(
            history,
            exports["paths"][name].with_name(exports["paths"][name].name.replace("_runs", "_history")),
        )
    out = exports["root"] / "analysis" / "all_runs.parquet"
    run(str(exports["root"] / "exports"), "-o", str(out), "--include-history", "--state", "finished")
    history = pl.read_parquet(out.with_name("all_history.parquet"))
    kept = pl.read_parquet(out)
    source = winners(exports)
    assert sorted(set(history["run_id"])) == sorted(
        i for i in kept["id"] if source[i] != "c"
    )  # c has no history
    assert history.height == 2 * history["run_id"].n_unique()
    for row in history.filter(pl.col("step") == 0).iter_rows(named=True):
        assert row["value"] == (100.0 if source[row["run_id"]] == "b" else 0.0)
        assert (row["entity"], row["project"]) == ("graph_denoise_team", "spectral_denoising")
    assert history.columns[:3] == ["run_id", "entity", "project"]


def test_an_empty_result_is_written_and_explained(exports, capsys):
    out = exports["root"] / "empty.parquet"
    assert (
        run(str(exports["paths"]["a"]), "-o", str(out), "--state", "finished", "--filter", "no_such_model")
        == 0
    )
    assert "nothing matched: --filter no_such_model removed all that were left" in capsys.readouterr().err
    table = pl.read_parquet(out)
    assert table.height == 0 and "metric_test_mse" in table.columns and "arch" in table.columns


def test_a_neptune_shaped_export_aggregates_with_wandb_ones(exports):
    neptune = exports["root"] / "exports" / "neptune" / "ws_sae_runs.parquet"
    neptune.parent.mkdir()
    pl.DataFrame(
        {
            "id": ["SAE-1", "SAE-2"],
            "name": ["stage2c_self_attention_sbm_k16_s1", "sweep-3"],
            "entity": ["ws", "ws"],
            "project": ["sae", "sae"],
            "state": ["inactive", "inactive"],
            "metric_test_mse": [0.5, None],
            "metric_test_mse_count": [3, 4],  # int here, absent elsewhere
        }
    ).write_parquet(neptune)
    out = exports["root"] / "u.parquet"
    run(str(exports["root"] / "exports"), "-o", str(out), "--protocol", "all")
    table = pl.read_parquet(out).filter(pl.col("entity") == "ws").sort("id")
    assert table["arch"].to_list() == ["self_attention", None] and table["k"].to_list() == [16, None]
    assert table["heartbeat_at"].null_count() == 2 and table.schema["metric_test_mse_count"] == pl.Int64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing_dir"], "no such file or folder: missing_dir"),
        (["{a}", "--filter", "(oops"], "bad regex in --filter"),
        (["{a}", "-o", "out.xlsx"], "-o out.xlsx: unknown extension .xlsx (use .csv, .parquet, .json, .md)"),
        (["{a}", "-o", "{folder}"], "is a folder, not a file name"),
        (["{history}"], "no runs parquet among"),
        (["{other}"], "is not a runs export: no id, name, entity, project column (it has: run_id, value)"),
    ],
)
def test_bad_input_is_one_usage_error(exports, args, message, monkeypatch):
    monkeypatch.chdir(exports["root"])
    other = exports["root"] / "other.parquet"
    pl.DataFrame({"run_id": ["x"], "value": [1.0]}).write_parquet(other)
    history = exports["root"] / "x_history.parquet"
    pl.DataFrame({"run_id": ["x"]}).write_parquet(history)
    folder = exports["root"] / "taken.parquet"
    folder.mkdir(exist_ok=True)
    names = {"a": exports["paths"]["a"], "history": history, "other": other, "folder": folder}
    with pytest.raises(BadInput) as error:
        run(*(arg.format(**names) for arg in args))
    assert message in str(error.value)


def test_a_rule_naming_an_unknown_column_is_a_usage_error(exports):
    rules = exports["root"] / "rules.toml"
    rules.write_text("[width]\npattern = '_w(\\d+)'\nconfig = ['config_model_width']\n")
    with pytest.raises(
        BadInput, match=r"rule width reads column config_model_width.*config_model_k"
    ) as error:
        run(str(exports["paths"]["a"]), "-o", str(exports["root"] / "u.parquet"), "--rules", str(rules))
    # every column of the data is listed (not only those the run selection reads), the row locators never
    assert "metric_test_mse" in str(error.value) and "__file" not in str(error.value)


@pytest.mark.parametrize("column", ["id", "state", "name"])
def test_a_rule_naming_a_core_column_is_refused_before_anything_is_written(exports, column):
    rules = exports["root"] / "rules.toml"
    rules.write_text(f"{column} = '^(.)'\n")
    out = exports["root"] / "u.parquet"
    with pytest.raises(BadInput, match=f"rule {column} would replace the core run column {column}"):
        run(str(exports["paths"]["a"]), "-o", str(out), "--rules", str(rules), "--protocol", "all")
    assert not out.exists()


def test_rules_parse_the_tags_one_tag_at_a_time_and_the_source_file(exports):
    rules = exports["root"] / "rules.toml"
    rules.write_text(
        "[tag_stage]\npattern = '^stage(\\d)$'\nfrom = 'tags'\ntype = 'int'\n"
        "[origin]\npattern = 'exports/(\\w+)/'\nfrom = '_source_file'\n"
    )
    out = exports["root"] / "u.parquet"
    run(str(exports["paths"]["a"]), "-o", str(out), "--rules", str(rules))
    table = pl.read_parquet(out)
    parsed = dict(table.select("id", "tag_stage").iter_rows())
    assert parsed == {r.id: int(expected(r).stage.removeprefix("stage")) for r in exports["a"]}
    assert table["origin"].unique().to_list() == ["a"]


def test_a_rule_can_read_the_column_it_replaces_in_an_aggregated_input(exports):
    first, second = exports["root"] / "u.parquet", exports["root"] / "again.parquet"
    run(str(exports["paths"]["a"]), "-o", str(first))
    rules = exports["root"] / "rules.toml"
    rules.write_text("[stage]\npattern = '^stage(\\d)$'\nfrom = 'stage'\ntype = 'int'\n")
    run(str(first), "-o", str(second), "--rules", str(rules))
    table = pl.read_parquet(second)
    assert table.columns[-len(ENRICHMENT_COLUMNS) :] == list(ENRICHMENT_COLUMNS)
    assert table.schema["stage"] == pl.Int64
    assert dict(table.select("id", "stage").iter_rows()) == {
        r.id: int(expected(r).stage.removeprefix("stage")) for r in exports["a"]
    }


@pytest.mark.slow
def test_the_script_runs_under_uv(exports):
    out = exports["root"] / "analysis" / "unified.parquet"
    command = ["uv", "run", "wandb-tools/aggregate_runs.py", str(exports["root"] / "exports"), "-o", str(out)]
    result = subprocess.run(
        [*command, "--state", "finished"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "Runs per input" in result.stdout and "Wrote" in result.stderr
    assert sorted(pl.read_parquet(out)["id"]) == sorted(expected_kept(exports))
    bad = subprocess.run(
        [*command, "--filter", "(oops"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: bad regex in --filter")


@pytest.mark.slow
@pytest.mark.skipif(
    not (ROOT / "shared" / "wandb" / "offline.py").exists(), reason="the offline run reader is not there yet"
)
def test_the_bundled_sample_runs_export_aggregate_and_analyze(tmp_path):
    def uv_run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["uv", "run", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return result

    export, unified = tmp_path / "export", tmp_path / "analysis" / "unified.parquet"
    uv_run("wandb-tools/export_runs.py", "--offline", "samples/wandb", "-o", str(export), "--include-history")
    uv_run("wandb-tools/aggregate_runs.py", str(export), "-o", str(unified), "--include-history")
    runs = pl.read_parquet(unified)
    assert (
        runs.height == 13
    )  # samples/make_samples.py: 4 models x 3 datasets in stage2c, one failed stage3 run
    assert sorted(set(runs["arch"])) == ["digress_default", "filter_bank", "linear_pe", "self_attention"]
    assert sorted(set(runs["dataset"])) == ["pyg_enzymes", "ring_of_cliques", "sbm"]
    assert sorted(runs["stage"].value_counts().rows()) == [("stage2c", 12), ("stage3", 1)]
    for row in runs.iter_rows(named=True):  # the names carry the same facts as the configs
        name = row["name"]
        assert f"_{row['arch']}_{row['dataset']}_k{row['k']}_" in name and name.endswith(
            f"_s{row['seed_parsed']}"
        )
    history = pl.read_parquet(unified.with_name("unified_history.parquet"))
    assert set(history["run_id"]) == set(runs["id"])
    pivot = json.loads(
        uv_run("wandb-tools/analyze_runs.py", str(unified), "--pivot", "--format", "json").stdout
    )
    assert [row["architecture"] for row in pivot] == [
        "filter_bank",
        "self_attention",
        "linear_pe",
        "digress_default",
    ]
    top = json.loads(
        uv_run("wandb-tools/analyze_runs.py", str(export), "--top", "13", "--format", "json").stdout
    )
    assert [row["metric_test_mse"] for row in top] == sorted(runs["metric_test_mse"])


def test_a_history_file_left_by_an_earlier_export_is_not_merged(tmp_path, capsys):
    export_runs = load_script("export_runs")
    samples, export = str(ROOT / "samples" / "wandb"), tmp_path / "export"
    assert export_runs.main(["--offline", samples, "-o", str(export), "--include-history", "--json"]) == 0
    assert export_runs.main(["--offline", samples, "-o", str(export), "--json"]) == 0  # runs only, now
    capsys.readouterr()
    out = tmp_path / "unified.parquet"
    assert run(str(export), "-o", str(out), "--include-history", "--protocol", "all") == 0
    assert "it was exported without --include-history" in capsys.readouterr().err
    assert pl.read_parquet(out.with_name("unified_history.parquet")).height == 0
