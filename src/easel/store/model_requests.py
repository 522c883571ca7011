"""Load / unload requests (the `model_requests` table): created by the server admin, one row per worker,
performed by that worker between batches.

Every change of status is fenced by the status it changes from, so a request marked `lost` (its worker
stopped heartbeating) is never taken up or finished afterwards by a worker that comes back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, Engine, Row, and_, insert, select, true, update

from easel.domain.model_requests import (
    PENDING,
    ModelAction,
    ModelRequest,
    RequestStatus,
    lost_message,
)
from easel.store.db import reading
from easel.store.repository import notify_workers
from easel.store.tables import model_requests, utcnow

_PENDING = [s.value for s in PENDING]


def _record(r: Row[tuple[object, ...]]) -> ModelRequest:
    return ModelRequest(
        id=r.id,
        model=r.model,
        action=ModelAction(r.action),
        worker_id=r.worker_id,
        status=RequestStatus(r.status),
        error=r.error,
        created_at=r.created_at,
        finished_at=r.finished_at,
    )


class ModelRequestStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, model: str, action: ModelAction, worker_ids: Sequence[str]) -> list[ModelRequest]:
        """One queued request per worker, in one transaction that also wakes LISTENing workers (on
        PostgreSQL, on commit)."""
        now = utcnow()
        made = [
            ModelRequest(str(uuid.uuid4()), model, action, w, RequestStatus.QUEUED, None, now, None)
            for w in worker_ids
        ]
        with self.engine.begin() as conn:
            if made:
                conn.execute(
                    insert(model_requests),
                    [
                        {
                            "id": r.id,
                            "model": r.model,
                            "action": r.action.value,
                            "worker_id": r.worker_id,
                            "status": r.status.value,
                            "created_at": r.created_at,
                        }
                        for r in made
                    ],
                )
                notify_workers(conn)
        return made

    def get(self, request_id: str) -> ModelRequest | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(model_requests).where(model_requests.c.id == request_id)).first()
        return None if row is None else _record(row)

    def queued_for(self, worker_id: str) -> list[ModelRequest]:
        """The worker's queued requests, oldest first."""
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(model_requests)
                .where(
                    model_requests.c.worker_id == worker_id,
                    model_requests.c.status == RequestStatus.QUEUED.value,
                )
                .order_by(model_requests.c.created_at, model_requests.c.id)
            ).all()
        return [_record(r) for r in rows]

    def start(self, request_id: str) -> bool:
        """queued -> running; False when it is no longer queued (marked lost meanwhile)."""
        return self._move(request_id, RequestStatus.QUEUED, RequestStatus.RUNNING)

    def finish(self, request_id: str, error: str | None = None) -> bool:
        """running -> done (or failed, with `error`); False when it is no longer running."""
        status = RequestStatus.DONE if error is None else RequestStatus.FAILED
        return self._move(request_id, RequestStatus.RUNNING, status, error=error, finished_at=utcnow())

    def _move(self, request_id: str, old: RequestStatus, new: RequestStatus, **values: object) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(model_requests)
                .where(model_requests.c.id == request_id, model_requests.c.status == old.value)
                .values(status=new.value, **values)
            )
        return bool(res.rowcount)

    def abandon(self, worker_id: str) -> int:
        """A worker stopping gracefully: its queued and running requests are lost (it says so)."""
        return self._lose(model_requests.c.worker_id == worker_id, stopped=True)

    def sweep(self, live_worker_ids: Iterable[str]) -> int:
        """Mark lost every pending request whose worker is not live (it died before doing it)."""
        live = list(live_worker_ids)
        return self._lose(model_requests.c.worker_id.not_in(live) if live else true())

    def _lose(self, which: ColumnElement[bool], *, stopped: bool = False) -> int:
        """Pending requests matching `which` become lost, each with its worker named in the error."""
        pending = and_(which, model_requests.c.status.in_(_PENDING))
        lost = 0
        with self.engine.begin() as conn:
            found = conn.execute(select(model_requests.c.worker_id).where(pending).distinct()).scalars()
            for worker_id in list(found):
                res = conn.execute(
                    update(model_requests)
                    .where(pending, model_requests.c.worker_id == worker_id)
                    .values(
                        status=RequestStatus.LOST.value,
                        error=lost_message(worker_id, stopped=stopped),
                        finished_at=utcnow(),
                    )
                )
                lost += res.rowcount
        return lost

    def recent(self, limit: int, *, status: RequestStatus | None = None) -> list[ModelRequest]:
        """The newest requests first (of one status, when given)."""
        query = select(model_requests)
        if status is not None:
            query = query.where(model_requests.c.status == status.value)
        query = query.order_by(model_requests.c.created_at.desc(), model_requests.c.id).limit(limit)
        with reading(self.engine) as conn:
            return [_record(r) for r in conn.execute(query).all()]
