"""Property tests: any nested JSON config/summary survives the runs table exactly and always writes a parquet."""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.base.storage import write_parquet
from shared.table.flatten import assign_column_names, scalar_leaves
from shared.table.rows import runs_table
from shared.table.schema import CONFIG_PREFIX, METRIC_PREFIX, RunRecord

# Few characters, so that keys collide often once `/`, `.`, white space and `_` are joined; plus a lone
# surrogate (what Python makes of a non-UTF-8 file name) that UTF-8 cannot hold.
KEY_CHARS = [*"ab_/.2λ \t", "\x00", "\udcff"]
EDGE_KEYS = ["a_b__2", "a_b__3", "a.b", "a/b", "a_b", "_runtime", "_type", "", "λ"]
EDGE_INTS = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**70, 10**400, -(10**400)]

keys = st.text(alphabet=st.sampled_from(KEY_CHARS), max_size=6) | st.sampled_from(EDGE_KEYS)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.sampled_from(EDGE_INTS)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.sampled_from([*KEY_CHARS, "é", '"', "\\", "😀"]), max_size=6)
)
json_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=15,
)
documents = st.dictionaries(keys, json_values, max_size=6)


def canonical(value: Any) -> Any:
    """A form where equality means identical JSON: NaN equals NaN, 1 != 1.0 != True, -0.0 != 0.0."""
    if isinstance(value, dict):
        return {"dict": sorted((key, canonical(item)) for key, item in value.items())}
    if isinstance(value, list):
        return ["list", *(canonical(item) for item in value)]
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else repr(value))
    return (type(value).__name__, value)


def expected_cell(leaf: Any, dtype: pa.DataType) -> Any:
    """What a flat column of `dtype` must hold for this leaf (README: column naming and types)."""
    if leaf is None:
        return None
    if pa.types.is_string(dtype):
        text = leaf if isinstance(leaf, str) else json.dumps(leaf)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    if pa.types.is_floating(dtype):
        return float(leaf)
    return leaf


def check_flat_columns(table: pa.Table, documents: list[dict], prefix: str, *, skip_private: bool) -> None:
    leaves = [scalar_leaves(doc, skip_private=skip_private) for doc in documents]
    paths = {path for row in leaves for path in row}
    names, _ = assign_column_names(list(paths), prefix)
    flat = [name for name in table.column_names if name.startswith(prefix)]
    # One column per distinct key path: no two paths may end up in (and overwrite) one column.
    assert sorted(flat) == sorted(names.values()) and len(set(names.values())) == len(paths)
    for path, name in names.items():
        column = table.column(name)
        cells = column.to_pylist()
        for row, cell in zip(leaves, cells, strict=True):
            want = expected_cell(row.get(path), column.type)
            assert canonical(cell) == canonical(want), (path, name, cell, want)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    configs=st.lists(documents, min_size=1, max_size=4),
    summaries=st.lists(documents, min_size=4, max_size=4),
)
def test_any_nested_json_round_trips_exactly_and_writes_a_valid_parquet(configs, summaries, tmp_path_factory):
    records = [
        RunRecord(id=f"run{i}", entity="e", project="p", config=config, summary=summary)
        for i, (config, summary) in enumerate(zip(configs, summaries, strict=False))
    ]
    table, _ = runs_table(records)
    path = tmp_path_factory.mktemp("property") / "runs.parquet"
    write_parquet(table, path)

    written = pq.read_table(path)
    assert written.num_rows == len(records)
    assert len(set(written.column_names)) == written.num_columns
    for text, record in zip(written.column("_config_json").to_pylist(), records, strict=True):
        assert canonical(json.loads(text)) == canonical(record.config)
    for text, record in zip(written.column("_summary_json").to_pylist(), records, strict=True):
        assert canonical(json.loads(text)) == canonical(record.summary)
    check_flat_columns(written, [r.config for r in records], CONFIG_PREFIX, skip_private=False)
    check_flat_columns(written, [r.summary for r in records], METRIC_PREFIX, skip_private=True)
