"""Hostile sweep cases (issue 20). Clocks and dates (i), runs that change while the server pages (m)."""

from __future__ import annotations

from tests.sweep import Case

CASES: list[Case] = []
