"""Signed, expiring image URLs: HMAC-SHA256 over the image id and the expiry time."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode


class UrlSigner:
    def __init__(self, key: bytes, ttl_seconds: int) -> None:
        self._key = key
        self.ttl = ttl_seconds

    def _mac(self, image_id: str, expires: int) -> str:
        msg = f"image:{image_id}:{expires}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def query(self, image_id: str, ttl: int | None = None, now: float | None = None) -> str:
        """`expires=...&signature=...` for a link to `image_id`."""
        expires = int((now if now is not None else time.time()) + (ttl if ttl is not None else self.ttl))
        return urlencode({"expires": expires, "signature": self._mac(image_id, expires)})

    def verify(self, image_id: str, expires: int, signature: str, now: float | None = None) -> bool:
        if expires < (now if now is not None else time.time()):
            return False
        # Bytes: compare_digest refuses a str with non-ASCII characters (a forged link may hold any).
        given = signature.encode("utf-8", "replace")
        return hmac.compare_digest(self._mac(image_id, expires).encode(), given)
