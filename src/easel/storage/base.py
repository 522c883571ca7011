"""The BlobStore contract: keys are deterministic, so a re-run overwrites instead of duplicating."""

from __future__ import annotations

from typing import Protocol


class BlobNotFound(Exception):
    pass


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key` atomically (a reader sees the old bytes or the new, never a part)."""

    def get(self, key: str) -> bytes:
        """The bytes under `key`; BlobNotFound if absent."""

    def delete(self, key: str) -> None:
        """Remove `key` if present."""

    def exists(self, key: str) -> bool: ...

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under `prefix` (for audits and tests)."""

    def public_url(self, key: str, ttl: int) -> str | None:
        """A link clients can download `key` from directly for `ttl` seconds (a presigned S3 URL), or
        None: the API then hands out its own signed link (`/api/v1/images/{id}/file`)."""
