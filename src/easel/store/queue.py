"""The job queue is the generations table itself: claims, leases, heartbeats, fenced completion.

A worker claims a batch of compatible queued jobs (same `batch_key`) in one transaction and holds each
with a lease (owner, token, expiry) that its heartbeat extends. Every later write of that worker is
fenced by the token and by `status = 'running'`: a job that was canceled, or whose lease expired and was
claimed by another worker, silently refuses the old worker's writes. A job whose worker died is claimed
again after its lease expires; `attempts` counts claims, and a job that has used `max_attempts` fails
with `worker_lost` instead of being claimed again. On PostgreSQL the claim skips rows locked by
concurrent claimers (FOR UPDATE SKIP LOCKED); on SQLite the claim transaction holds the write lock.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, and_, case, func, insert, or_, select, update

from easel.domain.failures import DEADLINE_EXCEEDED as DEADLINE_EXCEEDED
from easel.domain.failures import WORKER_LOST as WORKER_LOST
from easel.domain.generation import ImageFile, Status
from easel.domain.spec import GenerationSpec
from easel.domain.webhooks import EventRenderer
from easel.store.db import is_postgres
from easel.store.outbox import record_generation_event
from easel.store.repository import ended, image_row, notify_workers
from easel.store.tables import generations, images, utcnow


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    project_id: str
    spec: GenerationSpec
    attempts: int
    lease_token: str
    created_at: datetime
    started_at: datetime | None = None  # the job's first start: its deadline counts from here


class JobQueue:
    def __init__(self, engine: Engine, *, lease_seconds: float, render_event: EventRenderer) -> None:
        self.engine = engine
        self.render_event = render_event  # webhook bodies (api/native/protocol.webhook_payload)
        self.lease = timedelta(seconds=lease_seconds)
        self._skip_locked = is_postgres(engine)

    def _claimable(self, now: datetime, models: Sequence[str] | None) -> Select[Any]:
        q = select(generations.c.id, generations.c.batch_key, generations.c.n).where(
            generations.c.deleted_at.is_(None),
            or_(
                generations.c.status == Status.QUEUED.value,
                and_(generations.c.status == Status.RUNNING.value, generations.c.lease_expires_at < now),
            ),
        )
        if models:
            q = q.where(generations.c.model.in_(list(models)))
        q = q.order_by(generations.c.priority.desc(), generations.c.created_at, generations.c.id)
        return q.with_for_update(skip_locked=True) if self._skip_locked else q

    def _sweep(self, conn: Connection, now: datetime, job_timeout: float | None = None) -> None:
        """Jobs whose worker died after their last allowed attempt end as failed; so do running jobs past
        their deadline by more than a lease (stuck, e.g. a hung pipeline, even if heartbeats go on)."""
        message = "The worker running this job stopped responding on every attempt"
        self._fail_where(
            conn,
            now,
            WORKER_LOST,
            message,
            generations.c.lease_expires_at < now,
            generations.c.attempts >= generations.c.max_attempts,
        )
        if job_timeout is not None:
            cutoff = now - timedelta(seconds=job_timeout) - self.lease
            message = f"The job ran longer than its deadline ({job_timeout:g} s) and was stopped"
            self._fail_where(conn, now, DEADLINE_EXCEEDED, message, generations.c.started_at < cutoff)

    def _fail_where(self, conn: Connection, now: datetime, code: str, message: str, *where: Any) -> None:
        lost = conn.execute(
            update(generations)
            .where(generations.c.status == Status.RUNNING.value, *where)
            .values(**ended(Status.FAILED, now, code, message))
            .returning(generations.c.id, generations.c.project_id, generations.c.spec)
        ).all()
        for r in lost:  # their webhooks, in this same transaction
            spec = GenerationSpec.model_validate(r.spec)
            record_generation_event(
                conn,
                Status.FAILED,
                render=self.render_event,
                generation_id=r.id,
                project_id=r.project_id,
                spec=spec,
                error_code=code,
                error_message=message,
                now=now,
            )

    def claim_batch(
        self,
        worker_id: str,
        *,
        models: Sequence[str] | None,
        max_images: int,
        job_timeout: float | None = None,
    ) -> list[ClaimedJob]:
        """Claim the next job and as many queued jobs with the same batch key as fit in `max_images`.
        With `job_timeout`, the sweep before the claim also fails jobs stuck past their deadline."""
        now = utcnow()
        with self.engine.begin() as conn:
            self._sweep(conn, now, job_timeout)
            head = conn.execute(self._claimable(now, models).limit(1)).first()
            if head is None:
                return []
            ids, total = [head.id], head.n
            if total < max_images:
                mates = conn.execute(
                    self._claimable(now, models)
                    .where(generations.c.batch_key == head.batch_key, generations.c.id != head.id)
                    .limit(max_images)
                ).all()
                for m in mates:
                    if total + m.n <= max_images:
                        ids.append(m.id)
                        total += m.n
            token = secrets.token_hex(16)
            conn.execute(
                update(generations)
                .where(generations.c.id.in_(ids))
                .values(
                    status=Status.RUNNING.value,
                    lease_owner=worker_id,
                    lease_token=token,
                    lease_expires_at=now + self.lease,
                    attempts=generations.c.attempts + 1,
                    started_at=func.coalesce(generations.c.started_at, now),
                    progress_step=0,
                    updated_at=now,
                )
            )
            rows = conn.execute(select(generations).where(generations.c.id.in_(ids))).all()
        order = {gid: i for i, gid in enumerate(ids)}
        jobs = [
            ClaimedJob(
                id=r.id,
                project_id=r.project_id,
                spec=GenerationSpec.model_validate(r.spec),
                attempts=r.attempts,
                lease_token=token,
                created_at=r.created_at,
                started_at=r.started_at,
            )
            for r in rows
        ]
        return sorted(jobs, key=lambda j: order[j.id])

    def _fenced(self, conn: Connection, job: ClaimedJob, values: dict[str, Any]) -> bool:
        """Update a job only while this worker still holds it; False if canceled or taken over."""
        res = conn.execute(
            update(generations)
            .where(
                generations.c.id == job.id,
                generations.c.lease_token == job.lease_token,
                generations.c.status == Status.RUNNING.value,
            )
            .values(**values)
        )
        return bool(res.rowcount)

    def _each_held(self, jobs: Sequence[ClaimedJob], values: dict[str, Any]) -> set[str]:
        with self.engine.begin() as conn:
            return {j.id for j in jobs if self._fenced(conn, j, values)}

    def heartbeat(self, jobs: Sequence[ClaimedJob]) -> set[str]:
        """Extend the leases; returns the ids still held (the others were canceled or taken over)."""
        return self._each_held(jobs, {"lease_expires_at": utcnow() + self.lease})

    def progress(self, jobs: Sequence[ClaimedJob], step: int, total: int) -> set[str]:
        """Record step i of n; returns the ids still held. A canceled job drops out here, at its next step."""
        return self._each_held(jobs, {"progress_step": step, "progress_total": total, "updated_at": utcnow()})

    def complete(self, job: ClaimedJob, new_images: Sequence[ImageFile], processing_ms: int) -> bool:
        """Succeed the job and record its images in one transaction; False if the lease was lost."""
        now = utcnow()
        values = ended(Status.SUCCEEDED, now) | {
            "processing_ms": processing_ms,
            "progress_step": generations.c.progress_total,
        }
        with self.engine.begin() as conn:
            if not self._fenced(conn, job, values):
                return False
            if new_images:
                conn.execute(
                    insert(images),
                    [
                        image_row(
                            im,
                            project_id=job.project_id,
                            generation_id=job.id,
                            folder=job.spec.folder,
                            uploaded=False,
                            now=now,
                        )
                        for im in new_images
                    ],
                )
            record_generation_event(
                conn,
                Status.SUCCEEDED,
                render=self.render_event,
                generation_id=job.id,
                project_id=job.project_id,
                spec=job.spec,
                images=new_images,
                now=now,
            )
            return True

    def fail(self, job: ClaimedJob, code: str, message: str) -> bool:
        with self.engine.begin() as conn:
            if not self._fenced(conn, job, ended(Status.FAILED, utcnow(), code, message)):
                return False
            record_generation_event(
                conn,
                Status.FAILED,
                render=self.render_event,
                generation_id=job.id,
                project_id=job.project_id,
                spec=job.spec,
                error_code=code,
                error_message=message,
            )
            return True

    def release(self, job: ClaimedJob) -> bool:
        """Give a claimed job back to the queue without counting the attempt (graceful shutdown)."""
        values = {
            "status": Status.QUEUED.value,
            "attempts": generations.c.attempts - 1,
            # A job given back on its first attempt never really started (queue wait, deadline).
            "started_at": case((generations.c.attempts <= 1, None), else_=generations.c.started_at),
            "updated_at": utcnow(),
            "lease_token": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "progress_step": 0,
        }
        with self.engine.begin() as conn:
            released = self._fenced(conn, job, values)
            if released:
                notify_workers(conn)
            return released

    def next_lease_expiry(self) -> datetime | None:
        """When the earliest running lease expires (an idle worker wakes then to rescue it)."""
        with self.engine.connect() as conn:
            value: datetime | None = conn.execute(
                select(generations.c.lease_expires_at)
                .where(
                    generations.c.status == Status.RUNNING.value, generations.c.lease_expires_at.is_not(None)
                )
                .order_by(generations.c.lease_expires_at)
                .limit(1)
            ).scalar()
            return value

    def held(self, jobs: Sequence[ClaimedJob]) -> set[str]:
        """The ids of `jobs` this worker still holds (running under its lease token), read without a
        write: the cancel watcher's check (engine/worker.py) when a cancel rings."""
        if not jobs:
            return set()
        tokens = {j.id: j.lease_token for j in jobs}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(generations.c.id, generations.c.lease_token).where(
                    generations.c.id.in_(list(tokens)), generations.c.status == Status.RUNNING.value
                )
            ).all()
        return {r.id for r in rows if tokens[r.id] == r.lease_token}

    def queued_images(self, models: Sequence[str] | None) -> int:
        """Images waiting in queued jobs (of `models`, when given): the worker's batch gathering asks it
        before a claim (engine/worker.py, `_gather`)."""
        q = select(func.coalesce(func.sum(generations.c.n), 0)).where(
            generations.c.status == Status.QUEUED.value, generations.c.deleted_at.is_(None)
        )
        if models:
            q = q.where(generations.c.model.in_(list(models)))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)
