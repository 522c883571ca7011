"""Wire-level checks shared by every dialect."""

from __future__ import annotations

from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


def is_http_url(value: str, max_length: int = MAX_URL_LENGTH) -> bool:
    """An absolute http(s) URL with a host, no whitespace, no longer than `max_length` (the shape check
    only: whether the server may fetch it is the fetcher's SSRF check)."""
    if not value or len(value) > max_length or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(host) and parts.username is None
