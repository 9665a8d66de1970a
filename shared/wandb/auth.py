"""W&B credentials: the API key and server URL, found without ever printing the key."""

from __future__ import annotations

import netrc
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from shared.base.errors import BadInput
from shared.base.events import Events
from shared.base.settings import dotenv_settings
from shared.base.text import register_secret, without_userinfo

DEFAULT_WANDB_URL = "https://api.wandb.ai"
DOTENV_WANDB_KEYS = ("WANDB_API_KEY", "GRAPH_DENOISE_TEAM_SERVICE")


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


def _netrc_password(host: str) -> str | None:
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, PermissionError):
        return None
    return entry[2] if entry and entry[2] else None


def wandb_credentials(cli_key: str | None = None, events: Events | None = None) -> Credentials:
    """Resolve the W&B key: --api-key > WANDB_API_KEY > .env > ~/.netrc (what `wandb login` writes)."""
    settings = dotenv_settings(events)
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
    raise BadInput(
        "no W&B API key found: pass --api-key, set WANDB_API_KEY, put WANDB_API_KEY or "
        f"GRAPH_DENOISE_TEAM_SERVICE in a .env file, or run `wandb login` (~/.netrc entry for {host})"
    )
