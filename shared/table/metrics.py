"""One metric vocabulary for every tool: a metric named as logged (`test/mse`) or as its export column
(`metric_test_mse`, `test_mse`) is the same metric; an unknown one is answered with the closest names."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from shared.base.errors import BadInput
from shared.table.schema import METRIC_PREFIX


def metric_column(name: str) -> str:
    """The runs-table column of a metric however it is named: `test/mse`, `test_mse`, `metric_test_mse` →
    `metric_test_mse` (the exporters' flattening: `/`, `.` and white space become `_`)."""
    from shared.table.flatten import column_name

    return column_name("", (name,)) if name.startswith(METRIC_PREFIX) else column_name(METRIC_PREFIX, (name,))


def resolve_metric(requested: str, known: Sequence[str]) -> str | None:
    """The name in `known` that `requested` means: itself, else the one with the same column; None if none.

    BadInput when several known names share that column (`a/b` and `a.b`): only the logged one is clear.
    """
    if requested in known:
        return requested
    column = metric_column(requested)
    matches = [name for name in known if metric_column(name) == column]
    if len(matches) > 1:
        raise BadInput(
            f"metric {requested!r} could be any of {', '.join(map(repr, matches))}: name one as it is written"
        )
    return matches[0] if matches else None


def close_metrics(requested: str, known: Sequence[str], n: int = 3) -> list[str]:
    """Up to `n` names of `known` closest to `requested` (difflib), compared as written and as columns, so
    that `metric_test_mze` finds `test/mse`."""

    def bare(name: str) -> str:  # without the prefix every column shares, which would make all look close
        return metric_column(name).removeprefix(METRIC_PREFIX)

    by_column: dict[str, str] = {}
    for name in known:
        by_column.setdefault(bare(name), name)
    close = [by_column[c] for c in difflib.get_close_matches(bare(requested), list(by_column), n=n)]
    return list(dict.fromkeys([*close, *difflib.get_close_matches(requested, known, n=n)]))[:n]


def did_you_mean(requested: str, known: Sequence[str]) -> str:
    """`, did you mean 'a', 'b'?` for an error message, or nothing when no name is close."""
    close = close_metrics(requested, known)
    return f", did you mean {', '.join(map(repr, close))}?" if close else ""


def resolve_column(names: Sequence[str], requested: str) -> str | None:
    """The runs-table column `requested` names: a column as it is (`k`, `runtime_s`), else the `metric_*`
    column of a metric named either way (`test/mse`, `test_mse`); None when there is none."""
    if requested in names:
        return requested
    return resolve_metric(requested, [name for name in names if name.startswith(METRIC_PREFIX)])
