"""Metric constraints: SQL expressions over metric paths parsed by polars (never `eval`), and their checks."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import polars as pl

from shared.base.errors import BadInput, UnknownMetric, is_bug

_QUOTED = re.compile(r'"(?:[^"]|"")*"')
EXAMPLE = "'\"metrics/L0\" < 50'"
# A long operator chain crashes polars (its stack overflows: 10,000 `+` when parsed, 450 `||` when run) and
# planning takes time cubic in the operators (1,000 ANDs: 93 s), so --where is bounded before polars sees it.
MAX_WHERE_CHARS = 10_000  # each --where
MAX_WHERE_DEPTH = 50  # parentheses in each --where (polars' SQL parser stops there too)
MAX_WHERE_TERMS = 100  # tests joined by AND/OR, in all --where together (they are joined by AND)
MAX_WHERE_TOKENS = 500  # names, numbers, strings and operators in all --where: chains stay under 250
_TOKEN = re.compile(r""" "(?:[^"]|"")*" | '(?:[^']|'')*' | [\w.]+ | \|\| | <> | [<>!=]=? | \S """, re.VERBOSE)
_JOINS = {"and", "or"}


class ConstraintError(BadInput):
    """A constraint that cannot be used: malformed, not a per-run test, or naming an unknown metric."""


def _first_line(error: Exception, limit: int = 160) -> str:
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line if len(line) <= limit else line[:limit] + " …"  # polars may append a whole parse tree


def _shown(text: str, limit: int = 200) -> str:
    """`text` quoted for a message, cut after `limit` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + " …"


def check_where_size(texts: Sequence[str]) -> None:
    """ConstraintError when a `--where` string, or all of them together, is too large for polars to parse
    and plan in reasonable time (checked without polars: a long one can crash it)."""
    terms = tokens = 0
    for text in texts:
        if not isinstance(text, str):
            continue  # parse_where reports it
        if len(text) > MAX_WHERE_CHARS:
            raise ConstraintError(
                f"--where {_shown(text, 60)} is too long: {len(text):,} characters (at most {MAX_WHERE_CHARS:,})"
            )
        depth = deepest = 0
        for token in _TOKEN.findall(text):
            if token == "(":
                depth += 1
                deepest = max(deepest, depth)
            elif token == ")":
                depth -= 1
            elif token != ",":
                tokens += 1
                terms += token.lower() in _JOINS
        terms += 1
        if deepest > MAX_WHERE_DEPTH:
            raise ConstraintError(
                f"--where {_shown(text, 60)} nests parentheses {deepest} deep (at most {MAX_WHERE_DEPTH})"
            )
    if terms > MAX_WHERE_TERMS:
        raise ConstraintError(f"--where holds {terms:,} tests joined by AND/OR (at most {MAX_WHERE_TERMS})")
    if tokens > MAX_WHERE_TOKENS:
        raise ConstraintError(
            f"--where holds {tokens:,} names, numbers and operators (at most {MAX_WHERE_TOKENS:,})"
        )


def parse_where(text: str) -> pl.Expr:
    """A `--where` string (`"metrics/L0" < 50`, `"a/b" BETWEEN 1 AND 2`, …) as a polars expression."""
    check_where_size([text])
    try:
        expr = pl.sql_expr(text)
    except Exception as error:  # polars raises SQL interface/syntax errors of several kinds
        if is_bug(error):
            raise
        raise ConstraintError(
            f"--where {_shown(text)} is not a valid expression: {_first_line(error)}"
        ) from None
    names = list(dict.fromkeys(expr.meta.root_names()))
    if not names:
        raise ConstraintError(
            f"--where {_shown(text)} names no metric: write metric paths in double quotes, e.g. {EXAMPLE}"
        )
    probe = pl.DataFrame({name: [1.0, 2.0] for name in names})
    try:
        result = probe.select(expr.alias("ok"))
    except Exception as error:
        if is_bug(error):
            raise
        raise ConstraintError(f"--where {_shown(text)} cannot be evaluated: {_first_line(error)}") from None
    if result.height != probe.height or result.schema["ok"] != pl.Boolean:
        raise ConstraintError(
            f"--where {_shown(text)} must be a true/false test of each run's values, e.g. {EXAMPLE}"
        )
    return expr


def where_metrics(exprs: Iterable[pl.Expr]) -> list[str]:
    """The metric paths the expressions read, in first-use order."""
    return list(dict.fromkeys(name for expr in exprs for name in expr.meta.root_names()))


def check_callables(constraints: Mapping[str, Callable[[float], bool]] | None) -> dict[str, Callable]:
    """The original specification's `{metric: predicate}` dict, checked to hold callables."""
    checked = dict(constraints or {})
    for key, predicate in checked.items():
        if not callable(predicate):
            raise ConstraintError(f"constraint for {key!r} is not callable: pass e.g. lambda x: x < 50")
    return checked


def unknown_metrics_error(
    unknown: Iterable[str], known: Iterable[str], where: Iterable[str] = ()
) -> UnknownMetric:
    """One line naming metrics no run has, with close matches and a quoting hint for SQL paths."""
    unknown, known = list(unknown), list(known)
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3)
        parts.append(f"{name!r}" + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""))
    message = f"unknown metric {', '.join(parts)}: no run has a numeric value under that path"
    if any("/" in _QUOTED.sub("", text) for text in where):
        message += f"; quote metric paths in --where with double quotes, e.g. {EXAMPLE}"
    return UnknownMetric(message, unknown, known)
