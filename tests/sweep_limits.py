"""Hostile sweep cases (issue 20). Resource limits (n) and signals at shutdown (o)."""

from __future__ import annotations

from tests.sweep import Case

CASES: list[Case] = []
