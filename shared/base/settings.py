"""The .env file: found in the working folder, a parent or beside the tools, read without touching os.environ."""

from __future__ import annotations

import io
import stat
import threading
from pathlib import Path

from dotenv import dotenv_values, find_dotenv

from shared.base.errors import BadInput, describe
from shared.base.events import Events
from shared.base.limits import read_text_file

TOOLS_ROOT = Path(__file__).resolve().parent.parent


def dotenv_file() -> Path | None:
    """The `.env` in the working folder or the nearest parent, else the one beside the tools."""
    found = find_dotenv(usecwd=True)
    if found:
        return Path(found)
    beside_tools = TOOLS_ROOT / ".env"
    return beside_tools if beside_tools.is_file() else None


FIFO_WAIT_S = 5.0  # how long a `.env` that is a named pipe (a secrets manager's) may take to be written


def dotenv_settings(events: Events | None = None) -> dict[str, str]:
    """The variables of the `.env` file, without touching os.environ.

    A `.env` may be a named pipe that a secrets manager writes (python-dotenv finds those too); one that
    nobody writes within FIFO_WAIT_S is not read, with a warning, rather than waited on forever.
    """
    path = dotenv_file()
    if path is None:
        return {}
    try:
        text = _read_pipe(path) if stat.S_ISFIFO(path.stat().st_mode) else read_text_file(path, ".env file")
    except (BadInput, OSError, UnicodeDecodeError) as error:
        (events or Events()).warn(f"{path} not read: {describe(error)}")
        return {}
    return {key: value for key, value in dotenv_values(stream=io.StringIO(text)).items() if value}


def _read_pipe(path: Path) -> str:
    """The text written to a named pipe within FIFO_WAIT_S (opening it waits for a writer: on a thread)."""
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.append(path.read_text(encoding="utf-8")), daemon=True)
    reader.start()
    reader.join(FIFO_WAIT_S)
    if not read:
        raise BadInput(f"a named pipe nobody wrote to within {FIFO_WAIT_S:.0f} s")
    return read[0]
