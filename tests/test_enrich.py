"""Enrichment: default name rules, config-over-name precedence, TOML --rules files."""

from __future__ import annotations

import polars as pl
import pytest

from shared.analysis.enrich import DEFAULT_RULES, ENRICHMENT_COLUMNS, enrich, load_rules
from shared.base.errors import BadInput

NAMES = {
    "stage2c_filter_bank_k8_lr1e-3_wd1e-4_s0": dict(
        stage="stage2c",
        arch="filter_bank",
        model_type="spectral",
        k=8,
        lr_parsed=1e-3,
        wd_parsed=1e-4,
        seed_parsed=0,
        dataset=None,
        protocol="distribution",
    ),
    "stage3_pyg_dist_digress_default_pyg_enzymes_seed2": dict(
        stage="stage3",
        arch="digress_default",
        model_type="digress",
        k=None,
        lr_parsed=None,
        wd_parsed=None,
        seed_parsed=2,
        dataset="pyg_enzymes",
        protocol="distribution",
    ),
    "stage2c_filter_bank_ring_of_cliques_k8_lr1e-3_s0": dict(
        stage="stage2c",
        arch="filter_bank",
        model_type="spectral",
        k=8,
        lr_parsed=1e-3,
        wd_parsed=None,
        seed_parsed=0,
        dataset="ring_of_cliques",
        protocol="distribution",
    ),
    "stage1d_digress_transformer_gnn_qk_sbm_k16_lr3e-4_s1": dict(
        stage="stage1d",
        arch="digress_transformer_gnn_qk",
        model_type="digress",
        k=16,
        lr_parsed=3e-4,
        wd_parsed=None,
        seed_parsed=1,
        dataset="sbm",
        protocol="distribution",
    ),
    "stage2_single_graph_gnn_all_tree_k50_s3": dict(
        stage="stage2",
        arch="gnn_all",
        model_type="gnn",
        k=50,
        lr_parsed=None,
        wd_parsed=None,
        seed_parsed=3,
        dataset="tree",
        protocol="single_graph",
    ),
    "my-run-42": dict(
        stage=None,
        arch=None,
        model_type=None,
        k=None,
        lr_parsed=None,
        wd_parsed=None,
        seed_parsed=None,
        dataset=None,
        protocol="distribution",
    ),
}


def enriched(frame: dict, rules=DEFAULT_RULES, **options) -> list[dict]:
    return enrich(pl.LazyFrame(frame), rules, **options).collect().to_dicts()


@pytest.mark.parametrize("name", NAMES)
def test_default_rules_parse_the_team_names(name):
    (row,) = enriched({"name": [name]})
    assert {c: row[c] for c in ENRICHMENT_COLUMNS} == pytest.approx(NAMES[name])


def test_enrichment_columns_have_their_types_even_when_nothing_matches():
    schema = enrich(pl.LazyFrame({"name": ["x"]}), DEFAULT_RULES).collect_schema()
    assert schema["k"] == pl.Int64 and schema["seed_parsed"] == pl.Int64
    assert schema["lr_parsed"] == pl.Float64 and schema["arch"] == pl.String


def test_a_config_value_wins_over_the_name():
    frame = {
        "name": ["stage2c_filter_bank_ring_of_cliques_k8_lr1e-3_s0", "stage2c_filter_bank_sbm_k8_s1"],
        "config_model_type": ["linear_pe", None],
        "config_data_graph_type": ["pyg_proteins", None],
        "config_model_k": [32, None],
        "config_seed": [7, None],
        "config_optimizer_lr": [0.01, None],
    }
    first, second = enriched(frame)
    assert (first["arch"], first["dataset"], first["k"], first["seed_parsed"], first["lr_parsed"]) == (
        "linear_pe",
        "pyg_proteins",
        32,
        7,
        0.01,
    )
    assert (second["arch"], second["dataset"], second["k"], second["seed_parsed"]) == (
        "filter_bank",
        "sbm",
        8,
        1,
    )


def test_protocol_comes_from_the_data_config_first():
    frame = {
        "name": ["a_dist_x", "b", "c", "d_single_graph"],
        "config_data_same_graph_all_splits": [True, False, None, None],
        "config_data__target_": [None, None, "tmgg.data.SingleGraphDataModule", None],
    }
    assert [r["protocol"] for r in enriched(frame)] == [
        "single_graph",
        "distribution",
        "single_graph",
        "single_graph",
    ]


def test_config_model_target_gives_the_model_family():
    frame = {"name": ["stage1_mystery"], "config_model__target_": ["tmgg.models.SpectralDenoiser"]}
    assert enriched(frame)[0]["model_type"] == "spectral"


def test_only_missing_keeps_the_columns_an_aggregated_file_has():
    (row,) = enriched({"name": ["stage2c_filter_bank_k8_s0"], "arch": ["hand_set"]}, only_missing=True)
    assert row["arch"] == "hand_set" and row["stage"] == "stage2c" and row["model_type"] is None


def test_rules_file_replaces_adds_and_removes_columns(tmp_path):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        """
stage = '^(exp\\d+)-'
width = '-w(\\d+)'
k = false

[depth]
pattern = '-d(\\d+)'
type = "int"
config = ["config_model_depth"]
"""
    )
    rules = load_rules(rules_file)
    names = [r.name for r in rules]
    assert "k" not in names and names[-2:] == ["width", "depth"]
    frame = {
        "name": ["exp12-w256-d4", "exp3-w64-d2"],
        "config_stage": [None, "from_config"],
        "config_model_depth": [None, 9],
    }
    first, second = enriched(frame, rules)
    assert (first["stage"], first["width"], first["depth"]) == ("exp12", "256", 4)
    assert (second["stage"], second["depth"]) == ("from_config", 9)  # config still wins after a replacement
    assert "k" not in first


def test_a_rule_list_tries_each_regex_in_turn(tmp_path):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text("dataset = ['data=(\\w+)', '^(\\w+?)_']\n")
    rows = enriched({"name": ["x_data=zinc", "qm7_run"]}, load_rules(rules_file))
    assert [r["dataset"] for r in rows] == ["zinc", "qm7"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stage = '(unclosed'", "bad regex"),
        ("stage = 'no_group'", "exactly one (group)"),
        ("stage = '(a)(b)'", "exactly one (group)"),
        ("[stage]\npatern = '(x)'", "unknown key(s) patern"),
        ("[stage]\npattern = '(x)'\ntype = 'date'", "type must be one of"),
        ("[depth]\npattern = 'd(\\d+)'\ntype = 'int'\ndefault = 'abc'", "default 'abc' is not of type int"),
        (
            "[lr]\npattern = 'lr([0-9.]+)'\ntype = 'float'\ndefault = 'fast'",
            "default 'fast' is not of type float",
        ),
        ("stage = 3", "expected a regex"),
        ("stage = ", "not valid TOML"),
    ],
)
def test_bad_rules_are_one_clear_usage_error(tmp_path, text, message):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(text + "\n")
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        load_rules(rules_file)
    assert str(rules_file) in str(error.value)


def test_a_rule_reading_an_unknown_column_names_the_columns_that_exist(tmp_path):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text("[width]\npattern = '(\\d+)'\nfrom = 'config_nope'\n")
    with pytest.raises(
        BadInput,
        match=r"rule width reads column config_nope, which the data does not have \(columns: .*config_model_k.*name",
    ):
        enriched({"name": ["a"], "config_model_k": [1]}, load_rules(rules_file))


def test_a_missing_rules_file_is_a_usage_error(tmp_path):
    with pytest.raises(BadInput, match="cannot read rules file"):
        load_rules(tmp_path / "nope.toml")


def test_a_neptune_style_export_without_configs_is_enriched_from_names_only():
    rows = enriched({"name": ["stage2c_self_attention_sbm_k16_s1", None]})
    assert (rows[0]["arch"], rows[0]["dataset"], rows[0]["k"]) == ("self_attention", "sbm", 16)
    assert rows[1]["arch"] is None and rows[1]["protocol"] == "distribution"


@pytest.mark.parametrize(
    ("text", "column", "kind"),
    [
        ("id = '^(.)'", "id", "core run"),
        ("state = '^(.)'", "state", "core run"),
        ('name = "(.)"', "name", "core run"),
        ("tags = false", "tags", "core run"),
        ("[heartbeat_at]\npattern = '(.)'", "heartbeat_at", "core run"),
        ("_source_file = '(.)'", "_source_file", "internal"),
        ("__file = '(.)'", "__file", "internal"),
    ],
)
def test_a_rule_cannot_replace_a_core_or_internal_column(tmp_path, text, column, kind):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(text + "\n")
    with pytest.raises(BadInput) as error:
        load_rules(rules_file)
    assert str(error.value) == (
        f"{rules_file}: rule {column} would replace the {kind} column {column}; give it another name"
    )


def test_a_rule_reads_a_list_column_one_element_at_a_time(tmp_path):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text("[depth]\npattern = '-(\\d+)$'\nfrom = 'tags'\ntype = 'int'\n")
    tags = [["baseline", "depth-3"], ["depth-7", "sweep"], ["depth-x", "d-9"], [], None]
    rows = enriched({"name": ["a"] * len(tags), "tags": tags}, load_rules(rules_file))
    assert [r["depth"] for r in rows] == [3, 7, 9, None, None]  # the first tag that matches wins


def test_a_list_column_as_a_config_source_is_a_usage_error(tmp_path):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text("[group_tag]\nconfig = ['tags']\n")
    with pytest.raises(BadInput, match=r"rule group_tag: config column tags holds lists, not single values"):
        enriched({"name": ["a"], "tags": [["x"]]}, load_rules(rules_file))


def test_hidden_row_locators_are_not_listed_as_columns(tmp_path):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text("[width]\npattern = '(\\d+)'\nfrom = 'config_nope'\n")
    frame = {"name": ["a"], "config_model_k": [1], "__file": [0], "__row": [0]}
    with pytest.raises(BadInput) as error:
        enriched(frame, load_rules(rules_file))
    assert "config_model_k" in str(error.value) and "__" not in str(error.value)
