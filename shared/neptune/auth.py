"""Neptune credentials: the API token from an argument, NEPTUNE_API_TOKEN, or a .env file; never printed."""

from __future__ import annotations

import os

from shared.base.errors import BadInput
from shared.base.events import Events
from shared.base.settings import dotenv_settings
from shared.base.text import register_secret

TOKEN_VARIABLE = "NEPTUNE_API_TOKEN"


def neptune_token(token: str | None = None, events: Events | None = None) -> str:
    """The first token found: `token` (--api-token), NEPTUNE_API_TOKEN, then NEPTUNE_API_TOKEN in .env."""
    for candidate in (token, os.environ.get(TOKEN_VARIABLE), dotenv_settings(events).get(TOKEN_VARIABLE)):
        if candidate and candidate.strip():
            register_secret(candidate.strip())
            return candidate.strip()
    raise BadInput(
        f"no Neptune API token found: pass --api-token, set {TOKEN_VARIABLE}, or put "
        f"{TOKEN_VARIABLE}=... in a .env file"
    )
