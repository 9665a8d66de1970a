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
    modules = {name: _MODULE_OF.get(name, name).replace("-", "_") for name in _DEPENDENCY.findall(block)}
    return [name for name, module in modules.items() if not _importable(module)]


def _importable(module: str) -> bool:
    if module in sys.modules:  # imported already (find_spec raises for a module without a spec)
        return True
    return find_spec(module) is not None


def require_dependencies(script: str) -> None:
    """Exit 2 with `error: run this script with uv: …` when `script` is the program run and this Python lacks
    one of its dependencies."""
    if Path(sys.argv[0]).name != Path(script).name:
        return  # imported by another program (a benchmark, a test) that brings what it uses
    missing = missing_dependencies(Path(script))
    if missing:
        more = " …" if len(sys.argv) > 1 else ""  # the rest of the command line may hold a key: not repeated
        sys.stderr.write(
            f"error: run this script with uv: uv run {sys.argv[0]}{more}"
            f" ({sys.executable} lacks {', '.join(missing)})\n"
        )
        raise SystemExit(2)
