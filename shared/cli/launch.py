"""The first thing each script runs, before any import of a package it depends on: under a Python that lacks
them (`python3 script.py` instead of `uv run script.py`), one line saying how to run it, not a traceback."""

from __future__ import annotations

import re
import sys
from importlib.util import find_spec
from pathlib import Path

# The inline script metadata (PEP 723) block's dependency names, e.g. `#     "polars>=2.1",`.
_DEPENDENCY = re.compile(r'^#\s+"([A-Za-z0-9_.\-]+)', re.MULTILINE)
_MODULE_OF = {"python-dotenv": "dotenv"}  # distributions imported under another name


def missing_dependencies(script: Path) -> list[str]:
    """The dependencies in `script`'s metadata block that this Python cannot import."""
    text = script.read_text(encoding="utf-8")
    block = text[: text.find("# ///", text.find("# /// script") + 1)]
    names = _DEPENDENCY.findall(block)
    return [name for name in names if find_spec(_MODULE_OF.get(name, name).replace("-", "_")) is None]


def require_dependencies(script: str) -> None:
    """Exit 2 with `error: run this script with uv: …` when this Python lacks a dependency of `script`."""
    missing = missing_dependencies(Path(script))
    if missing:
        more = " …" if len(sys.argv) > 1 else ""  # the rest of the command line may hold a key: not repeated
        sys.stderr.write(
            f"error: run this script with uv: uv run {sys.argv[0]}{more}"
            f" ({sys.executable} lacks {', '.join(missing)})\n"
        )
        raise SystemExit(2)
