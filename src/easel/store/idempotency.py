"""Idempotency-Key records: the first response to a key is kept and replayed to its retries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from easel.store.tables import idempotency_keys, utcnow

STALE_IN_FLIGHT = timedelta(minutes=10)


@dataclass(frozen=True)
class Stored:
    """What a key's record says: in flight (status None), or the first response."""

    request_hash: str
    status_code: int | None
    body: str | None
    headers: dict[str, str]


class IdempotencyStore:
    def __init__(self, engine: Engine, ttl: timedelta) -> None:
        self.engine = engine
        self.ttl = ttl

    def _where(self, project_id: str, key: str, route: str) -> Any:
        c = idempotency_keys.c
        return and_(c.project_id == project_id, c.key == key, c.route == route)

    def begin(self, project_id: str, key: str, route: str, request_hash: str) -> Stored | None:
        """Claim `key` for a new request (None), or return the record already there."""
        now = utcnow()
        where = self._where(project_id, key, route)
        with self.engine.begin() as conn:
            c = idempotency_keys.c
            # Expired records go; so does an in-flight one abandoned by a crashed server.
            stale = or_(
                c.expires_at < now, and_(c.status_code.is_(None), c.created_at < now - STALE_IN_FLIGHT)
            )
            conn.execute(delete(idempotency_keys).where(where, stale))
            try:
                with conn.begin_nested():
                    conn.execute(
                        idempotency_keys.insert().values(
                            project_id=project_id,
                            key=key,
                            route=route,
                            request_hash=request_hash,
                            created_at=now,
                            expires_at=now + self.ttl,
                        )
                    )
                return None
            except IntegrityError:
                row = conn.execute(select(idempotency_keys).where(where)).first()
        if row is None:  # expired and removed between our insert and select: treat as new next time
            return Stored(request_hash, None, None, {})
        return Stored(row.request_hash, row.status_code, row.response_body, dict(row.response_headers or {}))

    def finish(
        self, project_id: str, key: str, route: str, status: int, body: str, headers: dict[str, str]
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(idempotency_keys)
                .where(self._where(project_id, key, route))
                .values(status_code=status, response_body=body, response_headers=headers)
            )

    def abandon(self, project_id: str, key: str, route: str) -> None:
        """Forget a key whose request failed (validation errors and failures are not replayed)."""
        with self.engine.begin() as conn:
            conn.execute(delete(idempotency_keys).where(self._where(project_id, key, route)))
