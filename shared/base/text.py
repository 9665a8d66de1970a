"""Text to show: registered secrets redacted, control characters escaped, long lists of names cut, plain
aligned tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlparse

_secrets: set[str] = set()


# C0 controls, DEL and C1 controls, as the escapes repr() shows them: `\n`, `\t`, `\x1b`, `\x85`, ...
_CONTROL_ESCAPES = {code: repr(chr(code))[1:-1] for code in (*range(0x20), *range(0x7F, 0xA0))}


def without_userinfo(url: str) -> str:
    """`url` without the `user:password@` of its address (it must never reach outputs or logs)."""
    parsed = urlparse(url)
    if not (parsed.username or parsed.password):
        return url
    return parsed._replace(netloc=parsed.netloc.rpartition("@")[2]).geturl()


def register_secret(value: str | None) -> None:
    """Remember a secret so that nothing this process prints can contain it."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in `text` with a placeholder."""
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def printable(text: str) -> str:
    """`text` with its control characters escaped: names from a server can neither break a line (and forge
    one, `error: ...`, in a cron log) nor send a terminal escape sequence."""
    return text.translate(_CONTROL_ESCAPES)


def name_list(names: Iterable[str], limit: int = 40) -> str:
    """`a, b, c` for an error message, cut after `limit` names."""
    names = list(names)
    shown = ", ".join(names[:limit]) or "none"
    return shown + (f", … (+{len(names) - limit} more)" if len(names) > limit else "")


def plain_text(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """Space-aligned columns with a header line, no colour, no box."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = (c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True))
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)]) + "\n"
