"""Every relative link in README.md and docs/ names a file or folder that exists, relative to the page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # code blocks hold no links
    targets = (target.split("#")[0] for target in LINK.findall(text))
    return [target for target in targets if target and not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page):
    dead = [target for target in relative_links(page) if not (page.parent / target).exists()]
    assert not dead, f"{page.relative_to(ROOT)}: {dead}"


def test_the_pages_have_links():
    assert "docs/development.md" in relative_links(ROOT / "README.md")
