"""The job queue is the generations table itself: claims, leases, heartbeats, fenced completion.

A worker claims a batch of compatible queued jobs (same `batch_key`) in one transaction and holds each
with a lease (owner, token, expiry) that its heartbeat extends. Every later write of that worker is
fenced by the token and by `status = 'running'`: a job that was canceled, or whose lease expired and was
claimed by another worker, silently refuses the old worker's writes. A job whose worker died is claimed
again after its lease expires; `attempts` counts claims, and a job that has used `max_attempts` fails
with `worker_lost` instead of being claimed again. On PostgreSQL the claim skips rows locked by
concurrent claimers (FOR UPDATE SKIP LOCKED); on SQLite the claim transaction holds the write lock.

The claim order is fair (store/scheduling.py): priority class first, then the job's round, so projects
take turns within a class, for the head of a batch and for its compatible mates alike. A queued job
past its deadline is never claimed: the claim's sweep ends it (canceled, `deadline_exceeded`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, Select, case, func, insert, select, update

from easel.domain.failures import DEADLINE_EXCEEDED as DEADLINE_EXCEEDED
from easel.domain.failures import WORKER_LOST as WORKER_LOST
from easel.domain.generation import ImageFile, Served, Status
from easel.domain.spec import GenerationSpec
from easel.domain.webhooks import EventRenderer
from easel.store import scheduling
from easel.store.credits import refund
from easel.store.db import is_postgres, reading
from easel.store.outbox import record_generation_event
from easel.store.repository import ended, expire_overdue, image_row, notify_workers
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
    batch_images: int = 1  # images in the batch it was claimed with (its share of the batch's time)


def _held(job: ClaimedJob) -> Any:
    """An UPDATE of the job that matches only while this worker still holds it."""
    return update(generations).where(
        generations.c.id == job.id,
        generations.c.lease_token == job.lease_token,
        generations.c.status == Status.RUNNING.value,
    )


class JobQueue:
    def __init__(self, engine: Engine, *, lease_seconds: float, render_event: EventRenderer) -> None:
        self.engine = engine
        self.render_event = render_event  # webhook bodies (api/native/protocol.webhook_payload)
        self.lease = timedelta(seconds=lease_seconds)
        self._skip_locked = is_postgres(engine)

    def _claimable(
        self,
        now: datetime,
        models: Sequence[str] | None,
        batch_key: str | None,
        limit: int,
        waited: timedelta | None = None,
    ) -> list[Select[Any]]:
        """The claim's two selects, each in claim order: jobs whose lease expired (a dead worker's, to
        rescue) and queued jobs not past their deadline; both lock what they return (SKIP LOCKED).
        `waited`: only jobs created at least that long ago (a fallback's claim, docs/gateway.md)."""
        g = generations.c
        base = select(g.id, g.batch_key, g.n, g.priority, g.fair_tag, g.created_at).where(
            g.deleted_at.is_(None)
        )
        if models:
            base = base.where(g.model.in_(list(models)))
        if waited is not None:
            base = base.where(g.created_at <= now - waited)
        if batch_key is not None:
            base = base.where(g.batch_key == batch_key)
        rescue = base.where(g.status == Status.RUNNING.value, g.lease_expires_at < now)
        queued = base.where(g.status == Status.QUEUED.value, scheduling.not_expired(now))
        out = []
        for q in (rescue, queued):
            q = q.order_by(*scheduling.claim_order()).limit(limit)
            out.append(q.with_for_update(skip_locked=True) if self._skip_locked else q)
        return out

    def _candidates(
        self,
        conn: Connection,
        now: datetime,
        models: Sequence[str] | None,
        batch_key: str | None,
        limit: int,
        waited: timedelta | None = None,
    ) -> list[Row[Any]]:
        rows = [r for q in self._claimable(now, models, batch_key, limit, waited) for r in conn.execute(q)]
        rows.sort(key=lambda r: (-r.priority, r.fair_tag, r.created_at, r.id))
        return rows[:limit]

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
        expire_overdue(conn, now, self.render_event)  # queued jobs that did not start in time

    def _fail_where(self, conn: Connection, now: datetime, code: str, message: str, *where: Any) -> None:
        lost = conn.execute(
            update(generations)
            .where(generations.c.status == Status.RUNNING.value, *where)
            .values(**ended(Status.FAILED, now, code, message))
            .returning(generations.c.id, generations.c.project_id, generations.c.spec, generations.c.credits)
        ).all()
        refund(conn, lost)
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
        waited: timedelta | None = None,
    ) -> list[ClaimedJob]:
        """Claim the next job and as many queued jobs with the same batch key as fit in `max_images`.
        With `job_timeout`, the sweep before the claim also fails jobs stuck past their deadline;
        with `waited`, only jobs queued at least that long ago are taken."""
        now = utcnow()
        with self.engine.begin() as conn:
            self._sweep(conn, now, job_timeout)
            found = self._candidates(conn, now, models, None, 1, waited)
            if not found:
                return []
            head = found[0]
            ids, total = [head.id], head.n
            if total < max_images:
                # Compatible jobs in the same fair order: round-robin across the projects that have some.
                for m in self._candidates(conn, now, models, head.batch_key, max_images + 1, waited):
                    if m.id != head.id and total + m.n <= max_images:
                        ids.append(m.id)
                        total += m.n
            scheduling.advance_clock(conn, head.priority, head.fair_tag)
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
                batch_images=total,
            )
            for r in rows
        ]
        return sorted(jobs, key=lambda j: order[j.id])

    def _fenced(self, conn: Connection, job: ClaimedJob, values: dict[str, Any]) -> bool:
        """Update a job only while this worker still holds it; False if canceled or taken over."""
        return bool(conn.execute(_held(job).values(**values)).rowcount)

    def _each_held(self, jobs: Sequence[ClaimedJob], values: dict[str, Any]) -> set[str]:
        """Update every job still held in one statement per lease token (a batch shares one)."""
        by_token: dict[str, list[str]] = {}
        for j in jobs:
            by_token.setdefault(j.lease_token, []).append(j.id)
        held: set[str] = set()
        with self.engine.begin() as conn:
            for token, ids in by_token.items():
                rows = conn.execute(
                    update(generations)
                    .where(
                        generations.c.id.in_(ids),
                        generations.c.lease_token == token,
                        generations.c.status == Status.RUNNING.value,
                    )
                    .values(**values)
                    .returning(generations.c.id)
                )
                held.update(r.id for r in rows)
        return held

    def heartbeat(self, jobs: Sequence[ClaimedJob]) -> set[str]:
        """Extend the leases; returns the ids still held (the others were canceled or taken over)."""
        return self._each_held(jobs, {"lease_expires_at": utcnow() + self.lease})

    def progress(self, jobs: Sequence[ClaimedJob], step: int, total: int) -> set[str]:
        """Record step i of n; returns the ids still held. A canceled job drops out here, at its next step."""
        return self._each_held(jobs, {"progress_step": step, "progress_total": total, "updated_at": utcnow()})

    def complete(
        self,
        job: ClaimedJob,
        new_images: Sequence[ImageFile],
        processing_ms: int,
        served: Served | None = None,
        receipt: dict[str, Any] | None = None,
    ) -> bool:
        """Succeed the job and record its images in one transaction; False if the lease was lost.
        `served`: the remote entry, provider and call that made them (docs/gateway.md)."""
        now = utcnow()
        values = ended(Status.SUCCEEDED, now) | {
            "processing_ms": processing_ms,
            "progress_step": generations.c.progress_total,
        }
        if receipt is not None:
            values["receipt"] = receipt
        if served is not None:
            values |= {
                "served_by": served.model,
                "provider": served.provider,
                "upstream_request_id": served.request_id,
            }
        with self.engine.begin() as conn:
            if not self._fenced(conn, job, values):
                return False
            steps = job.spec.steps or 0
            if steps > 0 and processing_ms > 0:  # the model's speed, for the queue's ETAs
                per_step = processing_ms / 1000 / steps / max(1, job.batch_images)
                scheduling.record_timing(conn, job.spec.model or "", per_step, now)
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
            failed = conn.execute(
                _held(job)
                .values(**ended(Status.FAILED, utcnow(), code, message))
                .returning(generations.c.id, generations.c.project_id, generations.c.credits)
            ).all()
            if not failed:
                return False
            refund(conn, failed)
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
        with reading(self.engine) as conn:
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
        with reading(self.engine) as conn:
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
        with reading(self.engine) as conn:
            return int(conn.execute(q).scalar() or 0)
