"""Plain GETs of a run's file URLs (history parquet, run files; signed where the server signs them) as
wandb-core does them: urllib3 connection pools, the environment's proxies honoured (https_proxy, no_proxy,
…) as requests and wandb-core do, a transfer retried on 429 and 5xx."""

from __future__ import annotations

import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import urllib3

RETRY_STATUSES = (429, 500, 502, 503, 504)


class Transfers:
    """Connection pools for `workers` threads: one direct, one per proxied scheme."""

    def __init__(self, workers: int) -> None:
        import urllib3

        retry = urllib3.Retry(total=5, backoff_factor=0.5, status_forcelist=RETRY_STATUSES)
        self._direct = urllib3.PoolManager(maxsize=workers, retries=retry)
        self._proxies = {
            scheme: urllib3.ProxyManager(proxy, maxsize=workers, retries=retry)
            for scheme, proxy in urllib.request.getproxies().items()
            if scheme in ("http", "https")
        }

    def pool(self, url: str) -> urllib3.PoolManager:
        """The pool `url` goes through: its scheme's proxy, unless the host bypasses it."""
        parts = urlsplit(url)
        proxied = self._proxies.get(parts.scheme)
        if proxied is None or urllib.request.proxy_bypass(parts.hostname or ""):
            return self._direct
        return proxied

    def close(self) -> None:
        for pool in (self._direct, *self._proxies.values()):
            pool.clear()
