"""Pareto fronts of runs on two numeric columns: the non-dominated rows, in order along the front."""

from __future__ import annotations

import polars as pl

from shared.base.errors import BadInput
from shared.base.text import name_list

_INDEX, _KEY_X, _KEY_Y, _BEST_BEFORE = "__pareto_row", "__pareto_x", "__pareto_y", "__pareto_best_before"
_HELPERS = (_INDEX, _KEY_X, _KEY_Y, _BEST_BEFORE)


class ParetoError(BadInput):
    """A Pareto axis the table cannot provide; the message is the one-line user error."""


def check_axes(schema: pl.Schema, x: str, y: str) -> None:
    """ParetoError unless `x` and `y` are numeric columns of `schema` (the message lists those that are)."""
    numeric = [name for name, dtype in schema.items() if dtype.is_numeric()]
    for column in (x, y):
        if column not in schema:
            raise ParetoError(f"unknown Pareto column {column!r} (numeric columns: {name_list(numeric)})")
        if not schema[column].is_numeric():
            raise ParetoError(
                f"Pareto column {column} holds {schema[column]}, not numbers (numeric columns: {name_list(numeric)})"
            )


def has_finite(column: str) -> pl.Expr:
    """The column holds a value that is not null, NaN or ±inf."""
    return pl.col(column).cast(pl.Float64).is_finite().fill_null(False)


def pareto_front(
    df: pl.DataFrame, x: str, y: str, *, minimize_x: bool = True, minimize_y: bool = True
) -> pl.DataFrame:
    """Non-dominated rows of df on (x, y), sorted along the front by x ascending.

    Rows with null/NaN/inf in x or y are dropped first. A row is dominated when another is at least as
    good on both axes and better on one, so identical points are all kept, in their input order.
    Raises ParetoError when a column is missing (naming the numeric columns that exist) or non-numeric.
    """
    check_axes(df.schema, x, y)
    clash = [c for c in _HELPERS if c in df.columns]
    if clash:
        raise ParetoError(f"column name {clash[0]} is reserved")
    # Sweep from the best x to the worst: a row survives when its y is the best at its x and strictly
    # better than every y seen at a better x. Keys are the values as stored (large integers stay exact);
    # adding 0.0 to floats turns -0.0 into 0.0 so that equal values group together.
    key_x, key_y = (
        (pl.col(c) + 0.0).alias(k) if df.schema[c].is_float() else pl.col(c).alias(k)
        for c, k in ((x, _KEY_X), (y, _KEY_Y))
    )
    best_so_far = pl.col(_KEY_Y).cum_min() if minimize_y else pl.col(_KEY_Y).cum_max()
    best_at_x = (pl.col(_KEY_Y).min() if minimize_y else pl.col(_KEY_Y).max()).over(_KEY_X)
    best_before = pl.col(_BEST_BEFORE).first().over(_KEY_X)
    strictly_better = pl.col(_KEY_Y) < best_before if minimize_y else pl.col(_KEY_Y) > best_before
    return (
        df.with_row_index(_INDEX)
        .filter(has_finite(x) & has_finite(y))
        .with_columns(key_x, key_y)
        .sort([_KEY_X, _KEY_Y, _INDEX], descending=[not minimize_x, not minimize_y, False])
        .with_columns(best_so_far.shift(1).alias(_BEST_BEFORE))
        .filter((pl.col(_KEY_Y) == best_at_x) & (best_before.is_null() | strictly_better))
        .sort([_KEY_X, _INDEX])
        .drop(_HELPERS)
    )
