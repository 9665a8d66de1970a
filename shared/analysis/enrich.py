"""Enrichment columns parsed from run names and configs: TOML `--rules` files, lazy exprs (the default
rules are in shared.enrich_rules)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from shared.analysis.enrich_rules import DEFAULT_RULES, ColumnRule, Source
from shared.analysis.enrich_rules import ENRICHMENT_COLUMNS as ENRICHMENT_COLUMNS  # re-exported
from shared.base.errors import BadInput
from shared.base.limits import read_text_file
from shared.base.text import name_list
from shared.table.exports import FILE_INDEX, ROW_INDEX, check_regex
from shared.table.schema import CORE, is_internal

TYPES: dict[str, pl.DataType] = {"string": pl.String(), "int": pl.Int64(), "float": pl.Float64()}


def _check_pattern(pattern: Any, where: str, *, constant: bool = False) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise BadInput(f"{where}: a rule pattern must be a non-empty string, not {pattern!r}")
    try:
        groups = re.compile(pattern).groups
    except re.error as error:
        raise BadInput(f"bad regex in {where}: {pattern!r} ({error})") from None
    check_regex(pattern, where)
    if groups != 1 and not constant:
        raise BadInput(f"{where}: regex {pattern!r} needs exactly one (group) for the value, it has {groups}")
    return pattern


def _column_from_table(name: str, spec: Mapping[str, Any], base: ColumnRule | None, where: str) -> ColumnRule:
    unknown = set(spec) - {"pattern", "patterns", "from", "config", "type", "default"}
    if unknown:
        raise BadInput(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: pattern, patterns, from, config, type, default)"
        )
    patterns = spec.get("patterns", [spec["pattern"]] if "pattern" in spec else None)
    if patterns is not None and not isinstance(patterns, list):
        raise BadInput(f"{where}: patterns must be a list of regexes")
    dtype = spec.get("type", base.dtype if base else "string")
    if dtype not in TYPES:
        raise BadInput(f"{where}: type must be one of {', '.join(TYPES)}, not {dtype!r}")
    config = spec.get("config")
    if config is not None and not (isinstance(config, list) and all(isinstance(c, str) for c in config)):
        raise BadInput(f"{where}: config must be a list of column names")
    old = base.sources if base else ()
    config_sources = (
        tuple(Source(c, strict=True) for c in config)
        if config is not None
        else tuple(s for s in old if s.is_config)
    )
    if patterns is None:
        parsed = tuple(s for s in old if not s.is_config)
    else:
        column = spec.get("from", "name")
        parsed = tuple(Source(column, _check_pattern(p, f"{where} pattern"), strict=True) for p in patterns)
    default = spec.get("default", base.default if base else None)
    if default is not None and pl.Series([str(default)]).cast(TYPES[dtype], strict=False).is_null().any():
        raise BadInput(f"{where}: default {default!r} is not of type {dtype}")
    return ColumnRule(name, dtype, config_sources + parsed, None if default is None else str(default))


def load_rules(path: Path | None, base: Sequence[ColumnRule] = DEFAULT_RULES) -> list[ColumnRule]:
    """The default rules, with a TOML file's columns replacing (same name) or added after them."""
    rules = {rule.name: rule for rule in base}
    if path is None:
        return list(rules.values())
    try:
        spec = tomllib.loads(read_text_file(path, "rules file"))
    except OSError as error:
        raise BadInput(f"cannot read rules file {path}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BadInput(f"rules file {path} is not valid TOML: {error}") from None
    for name, value in spec.items():
        _check_rule_name(path, name)
        where = f"{path}: {name}"
        if value is False:
            rules.pop(name, None)
        elif isinstance(value, str | list):
            table = {"patterns": value if isinstance(value, list) else [value]}
            rules[name] = _column_from_table(name, table, rules.get(name), where)
        elif isinstance(value, dict):
            rules[name] = _column_from_table(name, value, rules.get(name), where)
        else:
            raise BadInput(f"{where}: expected a regex, a list of regexes, a table or false")
    return list(rules.values())


def _check_rule_name(path: Path, name: str) -> None:
    """A rule may not replace a core run column (deduplication and filters read them) or an internal one."""
    kind = "core run" if name in CORE else "internal" if is_internal(name) else None
    if kind:
        raise BadInput(f"{path}: rule {name} would replace the {kind} column {name}; give it another name")


def check_rule_columns(rules: Sequence[ColumnRule], schema: Mapping[str, pl.DataType]) -> None:
    """BadInput when a column a --rules file reads is neither in the data nor made by an earlier rule,
    or is a list column given as a `config` source (a list has no single value to take)."""
    available = {name for name in schema if name not in (FILE_INDEX, ROW_INDEX)}
    for rule in rules:
        for source in rule.sources:
            if not source.strict:
                continue
            if source.column not in available:
                raise BadInput(
                    f"rule {rule.name} reads column {source.column}, which the data does not have "
                    f"(columns: {name_list(sorted(available))})"
                )
            if source.pattern is None and isinstance(schema.get(source.column), pl.List):
                raise BadInput(
                    f"rule {rule.name}: config column {source.column} holds lists, not single values; "
                    "read it with a pattern and from instead"
                )
        available.add(rule.name)


def _source_expr(source: Source, column_dtype: pl.DataType, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(source.column)
    if source.pattern is None:
        value = column.cast(pl.String) if dtype == pl.String else column
    elif isinstance(column_dtype, pl.List):  # e.g. tags: each element in turn, the first match wins
        parsed = _parse(pl.element().cast(pl.String), source.pattern, source.value)
        value = column.list.eval(parsed.filter(parsed != "")).list.first()
    else:
        value = _parse(column.cast(pl.String), source.pattern, source.value)
    if dtype == pl.String:
        return pl.when(value != "").then(value)
    return value.cast(dtype, strict=False)


def _parse(text: pl.Expr, pattern: str, constant: str | None) -> pl.Expr:
    """`pattern` on `text`: `constant` where it matches, else (no constant) its group."""
    if constant is not None:
        return pl.when(text.str.contains(pattern)).then(pl.lit(constant))
    return text.str.extract(pattern, 1)


def enrich(frame: pl.LazyFrame, rules: Sequence[ColumnRule], *, only_missing: bool = False) -> pl.LazyFrame:
    """Add each rule's column (first non-null source wins, then the default); sources the data lacks are skipped.

    With `only_missing`, columns the frame already has (an aggregated file's) are kept as they are.
    """
    columns = dict(frame.collect_schema())
    check_rule_columns(rules, columns)
    for rule in rules:
        if only_missing and rule.name in columns:
            continue
        dtype = TYPES[rule.dtype]
        values = [_source_expr(s, columns[s.column], dtype) for s in rule.sources if s.column in columns]
        if rule.default is not None:
            values.append(pl.lit(rule.default).cast(dtype, strict=False))
        expr = pl.coalesce(values) if values else pl.lit(None, dtype=dtype)
        frame = frame.with_columns(expr.cast(dtype).alias(rule.name))
        columns[rule.name] = dtype
    return frame


def rule_inputs(rules: Sequence[ColumnRule]) -> set[str]:
    """Every column the rules read (so a narrow scan can include just these)."""
    return {source.column for rule in rules for source in rule.sources}
