"""The shape of URLs a client may hand us (pure: whether the server may fetch one is service/fetch.py's
SSRF check, made at fetch time)."""

from __future__ import annotations

from urllib.parse import urlsplit

# The longest http(s) URL accepted anywhere: request fields, webhook URLs, image fetches and redirects.
MAX_URL_LENGTH = 2048


def is_http_url(value: str, max_length: int = MAX_URL_LENGTH) -> bool:
    """An absolute http(s) URL with a host, no whitespace, no longer than `max_length`."""
    if not value or len(value) > max_length or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(host) and parts.username is None
