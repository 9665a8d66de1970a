"""Hostile sweep cases (issue 20). Readers see one export state (l), numbers kept exact (p), copies of one run in analysis (s)."""

from __future__ import annotations

from tests.sweep import Case

CASES: list[Case] = []
