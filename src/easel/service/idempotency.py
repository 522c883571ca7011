"""Idempotency-Key records: the first response to a key is kept and replayed to its retries.

The API's idempotency piece (api/idempotency.py) fingerprints the request and calls `begin` before the
route runs, then `finish` (a 2xx) or `abandon` (anything else) with the rendered response.
"""

from __future__ import annotations

from easel.store.idempotency import IdempotencyStore, Stored

__all__ = ["Idempotency", "Stored"]


class Idempotency:
    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    def begin(self, project_id: str, key: str, route: str, fingerprint: str) -> Stored | None:
        """None: this request is the first with the key and now owns it; else what the key holds
        (another request's fingerprint, an in-flight marker, or the first response)."""
        return self.store.begin(project_id, key, route, fingerprint)

    def finish(
        self, project_id: str, key: str, route: str, status: int, body: str, headers: dict[str, str]
    ) -> None:
        self.store.finish(project_id, key, route, status, body, headers)

    def abandon(self, project_id: str, key: str, route: str) -> None:
        self.store.abandon(project_id, key, route)
