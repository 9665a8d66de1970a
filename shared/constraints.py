"""Metric constraints: SQL expressions over metric paths parsed by polars (never `eval`), and their checks."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping

import polars as pl

from shared.cli import UsageError

_QUOTED = re.compile(r'"(?:[^"]|"")*"')
EXAMPLE = "'\"metrics/L0\" < 50'"


class ConstraintError(UsageError, ValueError):
    """A constraint that cannot be used: malformed, not a per-run test, or naming an unknown metric."""


def _first_line(error: Exception, limit: int = 160) -> str:
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line if len(line) <= limit else line[:limit] + " …"  # polars may append a whole parse tree


def parse_where(text: str) -> pl.Expr:
    """A `--where` string (`"metrics/L0" < 50`, `"a/b" BETWEEN 1 AND 2`, …) as a polars expression."""
    try:
        expr = pl.sql_expr(text)
    except Exception as error:  # polars raises SQL interface/syntax errors of several kinds
        raise ConstraintError(f"--where {text!r} is not a valid expression: {_first_line(error)}") from None
    names = list(dict.fromkeys(expr.meta.root_names()))
    if not names:
        raise ConstraintError(
            f"--where {text!r} names no metric: write metric paths in double quotes, e.g. {EXAMPLE}"
        )
    probe = pl.DataFrame({name: [1.0, 2.0] for name in names})
    try:
        result = probe.select(expr.alias("ok"))
    except Exception as error:
        raise ConstraintError(f"--where {text!r} cannot be evaluated: {_first_line(error)}") from None
    if result.height != probe.height or result.schema["ok"] != pl.Boolean:
        raise ConstraintError(
            f"--where {text!r} must be a true/false test of each run's values, e.g. {EXAMPLE}"
        )
    return expr


def where_metrics(exprs: Iterable[pl.Expr]) -> list[str]:
    """The metric paths the expressions read, in first-use order."""
    return list(dict.fromkeys(name for expr in exprs for name in expr.meta.root_names()))


def check_callables(constraints: Mapping[str, Callable[[float], bool]] | None) -> dict[str, Callable]:
    """The seed API's `{metric: predicate}` dict, checked to hold callables."""
    checked = dict(constraints or {})
    for key, predicate in checked.items():
        if not callable(predicate):
            raise ConstraintError(f"constraint for {key!r} is not callable: pass e.g. lambda x: x < 50")
    return checked


def unknown_metrics_error(
    unknown: Iterable[str], known: Iterable[str], where: Iterable[str] = ()
) -> ConstraintError:
    """One line naming metrics no run has, with close matches and a quoting hint for SQL paths."""
    known = list(known)
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3)
        parts.append(f"{name!r}" + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""))
    message = f"unknown metric {', '.join(parts)}: no run has a numeric value under that path"
    if any("/" in _QUOTED.sub("", text) for text in where):
        message += f"; quote metric paths in --where with double quotes, e.g. {EXAMPLE}"
    return ConstraintError(message)
