"""Credentials: find the W&B API key and server URL without ever printing the key."""

from __future__ import annotations

import io
import netrc
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from dotenv import dotenv_values, find_dotenv

from shared.cli import UsageError, register_secret, warn
from shared.limits import read_text_file
from shared.retry import describe

DEFAULT_WANDB_URL = "https://api.wandb.ai"
DOTENV_WANDB_KEYS = ("WANDB_API_KEY", "GRAPH_DENOISE_TEAM_SERVICE")
TOOLS_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Credentials:
    """A key, the server it is for, and where the key was found (safe to print)."""

    api_key: str
    base_url: str
    source: str

    def __repr__(self) -> str:
        return f"Credentials(api_key='***', base_url={self.server!r}, source={self.source!r})"

    @property
    def server(self) -> str:
        """The base URL as it may be shown or stored: without a `user:password@` part."""
        return without_userinfo(self.base_url)


def without_userinfo(url: str) -> str:
    """`url` without the `user:password@` of its address (it must never reach outputs or logs)."""
    parsed = urlparse(url)
    if not (parsed.username or parsed.password):
        return url
    return parsed._replace(netloc=parsed.netloc.rpartition("@")[2]).geturl()


def dotenv_file() -> Path | None:
    """The `.env` in the working folder or the nearest parent, else the one beside the tools."""
    found = find_dotenv(usecwd=True)
    if found:
        return Path(found)
    beside_tools = TOOLS_ROOT / ".env"
    return beside_tools if beside_tools.is_file() else None


FIFO_WAIT_S = 5.0  # how long a `.env` that is a named pipe (a secrets manager's) may take to be written


def dotenv_settings() -> dict[str, str]:
    """The variables of the `.env` file, without touching os.environ.

    A `.env` may be a named pipe that a secrets manager writes (python-dotenv finds those too); one that
    nobody writes within FIFO_WAIT_S is not read, with a warning, rather than waited on forever.
    """
    path = dotenv_file()
    if path is None:
        return {}
    try:
        text = _read_pipe(path) if stat.S_ISFIFO(path.stat().st_mode) else read_text_file(path, ".env file")
    except (UsageError, OSError, UnicodeDecodeError) as error:
        warn(f"{path} not read: {describe(error)}")
        return {}
    return {key: value for key, value in dotenv_values(stream=io.StringIO(text)).items() if value}


def _read_pipe(path: Path) -> str:
    """The text written to a named pipe within FIFO_WAIT_S (opening it waits for a writer: on a thread)."""
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.append(path.read_text(encoding="utf-8")), daemon=True)
    reader.start()
    reader.join(FIFO_WAIT_S)
    if not read:
        raise UsageError(f"a named pipe nobody wrote to within {FIFO_WAIT_S:.0f} s")
    return read[0]


def _netrc_password(host: str) -> str | None:
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, PermissionError):
        return None
    return entry[2] if entry and entry[2] else None


def wandb_credentials(cli_key: str | None = None) -> Credentials:
    """Resolve the W&B key: --api-key > WANDB_API_KEY > .env > ~/.netrc (what `wandb login` writes)."""
    settings = dotenv_settings()
    base_url = (
        os.environ.get("WANDB_BASE_URL") or settings.get("WANDB_BASE_URL") or DEFAULT_WANDB_URL
    ).rstrip("/")
    candidates = [("--api-key", cli_key), ("WANDB_API_KEY", os.environ.get("WANDB_API_KEY"))]
    candidates += [(f".env ({name})", settings.get(name)) for name in DOTENV_WANDB_KEYS]
    address = urlparse(base_url)
    register_secret(address.password)  # a proxy or gateway password in the URL is as secret as the key
    host = address.hostname or ""
    candidates.append(("~/.netrc", _netrc_password(host)))
    for source, key in candidates:
        if key and key.strip():
            register_secret(key.strip())
            return Credentials(api_key=key.strip(), base_url=base_url, source=source)
    raise UsageError(
        "no W&B API key found: pass --api-key, set WANDB_API_KEY, put WANDB_API_KEY or "
        f"GRAPH_DENOISE_TEAM_SERVICE in a .env file, or run `wandb login` (~/.netrc entry for {host})"
    )
