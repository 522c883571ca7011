"""The queries behind GET /metrics (api/metrics.py): the database is the source of truth.

Every number is read at scrape time, so N API processes report the same fleet-wide values, whichever
process (or machine) ran the jobs. Costs per scrape: the queue depth reads only queued/running rows
(the claim index), the recent window reads rows finished in the last window (an index on finished_at),
and the two all-time totals count the failed rows and the generated image rows.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, func, select

from easel.domain.generation import Status
from easel.domain.metrics import FinishedJob, MetricsSnapshot, QueueRow
from easel.store.db import reading
from easel.store.tables import generations, images, utcnow


def read_snapshot(engine: Engine, window: timedelta) -> MetricsSnapshot:
    now = utcnow()
    g = generations
    with reading(engine) as conn:
        queue = [
            QueueRow(r.status, r.model, int(r.jobs), r.oldest)
            for r in conn.execute(
                select(
                    g.c.status,
                    g.c.model,
                    func.count().label("jobs"),
                    func.min(g.c.created_at).label("oldest"),
                )
                .where(g.c.status.in_([Status.QUEUED.value, Status.RUNNING.value]))
                .group_by(g.c.status, g.c.model)
            )
        ]
        images_by_model = {
            r.model: int(r.n)
            for r in conn.execute(
                select(g.c.model, func.count(images.c.id).label("n"))
                .select_from(images.join(g, images.c.generation_id == g.c.id))
                .where(images.c.uploaded.is_(False))
                .group_by(g.c.model)
            )
        }
        failed: dict[tuple[str, str], int] = {}
        for r in conn.execute(
            select(g.c.model, g.c.error_code, func.count().label("n"))
            .where(g.c.status == Status.FAILED.value)
            .group_by(g.c.model, g.c.error_code)
        ):
            key = (r.model, r.error_code or "unknown")
            failed[key] = failed.get(key, 0) + int(r.n)
        recent = [
            FinishedJob(
                r.model, r.status, r.error_code, r.created_at, r.started_at, r.finished_at, r.processing_ms
            )
            for r in conn.execute(
                select(
                    g.c.model,
                    g.c.status,
                    g.c.error_code,
                    g.c.created_at,
                    g.c.started_at,
                    g.c.finished_at,
                    g.c.processing_ms,
                ).where(g.c.finished_at >= now - window)
            )
        ]
    return MetricsSnapshot(now, queue, images_by_model, failed, recent)
