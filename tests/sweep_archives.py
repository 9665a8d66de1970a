"""Hostile sweep cases (issue 20). Neptune archives (k) and one folder shared by two trackers (j)."""

from __future__ import annotations

from tests.sweep import Case

CASES: list[Case] = []
