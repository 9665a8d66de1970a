"""Flattening nested configs/summaries into typed columns, and the runs table built from them."""

from __future__ import annotations

import json
import math

import polars as pl
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.table.flatten import column_array, flat_columns, scalar_leaves
from shared.table.rows import runs_table
from shared.table.schema import RunRecord


def test_nested_keys_join_with_underscore_and_slashes_become_underscores():
    columns, warnings = flat_columns([{"model": {"type": "gnn", "k": 8}, "test/accuracy": 0.9}], "config_")
    assert set(columns) == {"config_model_type", "config_model_k", "config_test_accuracy"}
    assert warnings == []


def test_media_lists_and_private_keys_stay_out_of_flat_columns():
    summary = {
        "hist": {"_type": "histogram", "values": [1, 2], "bins": [0, 1, 2]},
        "layers": [64, 64],
        "_runtime": 12.0,
        "_wandb": {"runtime": 12},
        "loss": 0.5,
    }
    assert scalar_leaves(summary, skip_private=True) == {("loss",): 0.5}


def test_colliding_keys_are_kept_apart_deterministically_with_a_warning():
    rows = [{"a_b": 1, "a": {"b": 2}, "a.b": 3}]
    columns, warnings = flat_columns(rows, "config_")
    values = {name: column.to_pylist()[0] for name, column in columns.items()}
    # Sorted key paths decide who keeps the plain name: ("a", "b") < ("a.b",) < ("a_b",).
    assert values == {"config_a_b": 2, "config_a_b__2": 3, "config_a_b__3": 1}
    assert len(warnings) == 1 and "config_a_b" in warnings[0]
    # The same inputs in another order give the same names.
    again, _ = flat_columns([{"a.b": 3, "a": {"b": 2}, "a_b": 1}], "config_")
    assert {n: c.to_pylist()[0] for n, c in again.items()} == values


def test_column_types_follow_the_values_across_runs():
    assert column_array([1, 2, None]).type == pa.int64()
    assert column_array([1, 2.5]).type == pa.float64()
    assert column_array([True, None]).type == pa.bool_()
    assert column_array([1, "one"]).to_pylist() == ["1", "one"]
    assert column_array([True, 1]).to_pylist() == ["true", "1"]
    assert column_array([2**70, 1]).type == pa.float64()
    assert column_array([10**400]).to_pylist() == [str(10**400)]
    assert column_array([None, None]).type == pa.string()
    floats = column_array([float("nan"), float("inf"), 1]).to_pylist()
    assert math.isnan(floats[0]) and floats[1] == math.inf and floats[2] == 1.0


def _record(run_id: str, config: dict, summary: dict) -> RunRecord:
    return RunRecord(id=run_id, entity="e", project="p", config=config, summary=summary)


def test_runs_table_keeps_raw_json_exact_and_writes_mixed_types():
    records = [
        _record(
            "a", {"lr": 0.1, "opt": {"name": "adam"}}, {"loss": float("nan"), "best": float("inf"), "n": 3}
        ),
        _record("b", {"lr": "auto", "opt": {"name": "sgd"}}, {"loss": 0.25, "best": 1.0, "n": "many"}),
    ]
    table, _ = runs_table(records)
    frame = pl.from_arrow(table)
    assert frame["config_lr"].to_list() == ["0.1", "auto"]
    assert frame["metric_n"].to_list() == ["3", "many"]
    assert frame.schema["metric_loss"] == pl.Float64 and math.isnan(frame["metric_loss"][0])
    restored = [json.loads(text) for text in frame["_summary_json"]]
    assert math.isnan(restored[0]["loss"]) and restored[0]["best"] == math.inf
    assert [json.loads(text) for text in frame["_config_json"]] == [r.config for r in records]


json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(configs=st.lists(st.dictionaries(st.text(max_size=6), json_value, max_size=5), min_size=1, max_size=4))
def test_any_nested_config_round_trips_through_raw_json_and_writes_a_table(configs, tmp_path_factory):
    records = [_record(str(i), config, {}) for i, config in enumerate(configs)]
    table, _ = runs_table(records)
    path = tmp_path_factory.mktemp("flat") / "runs.parquet"
    pl.from_arrow(table).write_parquet(path)
    frame = pl.read_parquet(path)
    assert [json.loads(text) for text in frame["_config_json"]] == configs
    assert len(set(frame.columns)) == len(frame.columns)
