"""Hostile sweep cases (issue 20). Local sources: unreadable entries (h), runs still being written (q), copies of one run offline (r)."""

from __future__ import annotations

from tests.sweep import Case

CASES: list[Case] = []
