"""How dbtbus writes things for people: byte sizes, status counts, and URLs without their secrets.

One home for each, used by the CLI, the report and the Airflow tasks alike: a URL reaches a log line, an
error or a page only through :func:`redact_url`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["clock_skew_text", "format_bytes", "format_counts", "redact_url"]

#: Query parameters that carry a secret (redis-py takes ``password`` from the query string too).
SECRET_PARAMETERS: Final = frozenset(
    {"password", "passwd", "pass", "token", "secret", "access_token", "api_key", "sentinel_password"}
)
_MASK: Final = "***"
#: userinfo's password when the URL does not even parse (a bad port): ``scheme://user:secret@``.
_USERINFO: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*):[^@/?#]*@")
#: Everything between the scheme and the last ``@`` of a URL that lacks its ``//``: ``redis:secret@host``.
_NO_AUTHORITY: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:)?.*@")


def format_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit in ("B", "KiB") else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def format_counts(counts: Mapping[str, int]) -> str:
    return (
        ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        or "none"
    )


def redact_url(url: str) -> str:
    """``url`` with every secret replaced by ``***``: the password of its userinfo and any password-like query
    parameter (``?password=``). A URL that does not parse loses its userinfo password all the same."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port, like every consumer of the URL would
    except ValueError:
        # A Sentinel URL or a cluster's seed list names several hosts ("a:1,b:2"), which urlsplit cannot read:
        # mask by hand, the query's secrets too.
        head, mark, rest = _USERINFO.sub(rf"\1:{_MASK}@", url).partition("?")
        query, hash_, fragment = rest.partition("#")
        return head + mark + _masked_query(query) + hash_ + fragment
    netloc = parts.netloc
    if not netloc and "@" in url:  # 'redis:secret@host', a '//' short: whatever stands before the '@' is masked
        return _NO_AUTHORITY.sub(rf"\1{_MASK}@", url)
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{_MASK}@{hostinfo}"
    query = _masked_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _masked_query(query: str) -> str:
    """``query`` with the value of every password-like parameter replaced by ``***``."""
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name.lower() in SECRET_PARAMETERS for name, _ in pairs):
            return urlencode(
                [(name, _MASK if name.lower() in SECRET_PARAMETERS else value) for name, value in pairs], safe="*:/"
            )
    return query


def clock_skew_text(skew: float | None) -> str:
    """``producer's clock 88 s ahead of the bus's`` — or ``""`` for a skew unknown or under a second, which
    no time shown to the second would reveal."""
    if skew is None or abs(skew) < 1:
        return ""
    return f"producer's clock {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the bus's"
