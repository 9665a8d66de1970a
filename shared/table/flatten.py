"""Flatten nested config/summary dicts into typed, collision-free flat columns."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shared.table.schema import is_internal

if TYPE_CHECKING:
    import pyarrow as pa

KeyPath = tuple[str, ...]
Scalar = None | bool | int | float | str

# Lone surrogates (a non-UTF-8 file name seen by Python) cannot be written to parquet: they become `_` too.
_SEPARATORS = re.compile(r"[/.\s\x00-\x1f\x7f\ud800-\udfff]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def is_media(value: Any) -> bool:
    """W&B media, histograms and tables are dicts tagged with `_type`."""
    return isinstance(value, Mapping) and "_type" in value


def scalar_leaves(nested: Mapping[str, Any], *, skip_private: bool = False) -> dict[KeyPath, Scalar]:
    """Every scalar leaf of a nested dict by key path; lists, media and histograms are left out.

    With `skip_private`, internal top-level keys (schema.is_internal: W&B's `_runtime`) are left out.
    """
    leaves: dict[KeyPath, Scalar] = {}

    def walk(node: Mapping[str, Any], path: KeyPath) -> None:
        for key, value in node.items():
            key_path = (*path, str(key))
            if isinstance(value, Mapping):
                if not is_media(value):
                    walk(value, key_path)
            elif value is None or isinstance(value, bool | int | float | str):
                leaves[key_path] = value

    for key, value in nested.items():
        if skip_private and is_internal(str(key)):
            continue
        walk({key: value}, ())
    return leaves


def column_name(prefix: str, path: KeyPath) -> str:
    """`model.type` → `config_model_type`; `test/accuracy` → `metric_test_accuracy`."""
    return prefix + "_".join(_SEPARATORS.sub("_", part) for part in path)


def assign_column_names(paths: Sequence[KeyPath], prefix: str) -> tuple[dict[KeyPath, str], list[str]]:
    """Name each key path; paths that flatten to one name get `__2`, `__3`… in sorted path order."""
    by_name: dict[str, list[KeyPath]] = defaultdict(list)
    for path in sorted(set(paths)):
        by_name[column_name(prefix, path)].append(path)
    names: dict[KeyPath, str] = {}
    warnings: list[str] = []
    taken = set(by_name)  # a key may itself be spelled like a suffixed name (`a_b__2`): never reuse one
    for name, clashing in by_name.items():
        suffix = 1
        for path in clashing[1:]:
            suffix += 1
            while f"{name}__{suffix}" in taken:
                suffix += 1
            taken.add(f"{name}__{suffix}")
            names[path] = f"{name}__{suffix}"
        names[clashing[0]] = name
        if len(clashing) > 1:
            keys = ", ".join(" > ".join(map(repr, p)) for p in clashing)
            renamed = ", ".join(names[p] for p in clashing[1:])
            warnings.append(f"keys {keys} all flatten to {name}; kept apart as {renamed}")
    return names, warnings


def _as_text(value: Scalar) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _utf8_safe(text: str | None) -> str | None:
    """`text` with lone surrogates as `\\udcff` escapes (UTF-8, so parquet, cannot hold them)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if text else text


def column_array(values: Sequence[Scalar]) -> pa.Array:
    """One typed column: bool, int64 or float64 when every value allows it, else string."""
    import pyarrow as pa  # only when writing: a reader of column names needs none of it

    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.nulls(len(values), pa.string())
    if kinds == {bool}:
        return pa.array(values, pa.bool_())
    if kinds <= {int, float}:
        if kinds == {int} and all(v is None or _INT64_MIN <= v <= _INT64_MAX for v in values):
            return pa.array(values, pa.int64())
        try:
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
        except OverflowError:  # an int too large even for float64: keep its digits as text
            pass
    texts = [_as_text(v) for v in values]
    try:
        return pa.array(texts, pa.string())
    except UnicodeEncodeError:
        return pa.array([_utf8_safe(text) for text in texts], pa.string())


def flat_columns(
    nested_rows: Sequence[Mapping[str, Any]], prefix: str, *, skip_private: bool = False
) -> tuple[dict[str, pa.Array], list[str]]:
    """Flatten one nested dict per run into typed columns, sorted by name, plus collision warnings."""
    leaves = [scalar_leaves(row, skip_private=skip_private) for row in nested_rows]
    all_paths = [path for row in leaves for path in row]
    names, warnings = assign_column_names(all_paths, prefix)
    columns = {
        names[path]: column_array([row.get(path) for row in leaves])
        for path in sorted(names, key=names.__getitem__)
    }
    return columns, warnings


MAX_JSON_DEPTH = 100  # deeper config/summary JSON is kept as raw text: flattening it would recurse too far


def parse_object(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A config or summary field as a dict, or None and why not (bad JSON, not an object, too deep)."""
    if value is None:
        return {}, None
    if isinstance(value, dict):
        parsed: Any = value
    else:
        try:
            parsed = json.loads(value, strict=False)
        except RecursionError:
            return None, f"nested deeper than {MAX_JSON_DEPTH} levels"
        except (ValueError, TypeError) as error:
            return None, f"not valid JSON ({str(error)[:80]})"
    if not isinstance(parsed, dict):
        return None, f"a JSON {type(parsed).__name__}, not an object"
    if json_depth(parsed) > MAX_JSON_DEPTH:
        return None, f"nested deeper than {MAX_JSON_DEPTH} levels"
    return parsed, None


def json_depth(value: Any) -> int:
    """How deep lists and dicts nest in `value` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest
