"""Workers' heartbeats: one row per worker process in the `workers` table.

A worker upserts its row when it starts, on every lease heartbeat while busy and every time its idle
loop wakes (at least every `idle_check_seconds`), and deletes it when it stops gracefully. A killed
worker's row stays behind with an old `last_seen_at`; the metrics count a worker as live only while its
row is recent. Only the worker itself writes its row, so update-then-insert is race free.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert, select, update

from easel.domain.metrics import WorkerRecord
from easel.store.tables import utcnow, workers


class WorkerRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def seen(
        self, worker_id: str, *, hostname: str, pid: int, models: list[str], started_at: datetime
    ) -> None:
        """Record that this worker is alive now (creating its row on first call)."""
        now = utcnow()
        with self.engine.begin() as conn:
            res = conn.execute(update(workers).where(workers.c.id == worker_id).values(last_seen_at=now))
            if not res.rowcount:
                conn.execute(
                    insert(workers).values(
                        id=worker_id,
                        hostname=hostname[:200],
                        pid=pid,
                        models=models,
                        started_at=started_at,
                        last_seen_at=now,
                    )
                )

    def remove(self, worker_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(workers).where(workers.c.id == worker_id))

    def recent(self, within: timedelta) -> list[WorkerRecord]:
        """Workers seen in the last `within` (older rows are workers that died long ago)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(workers).where(workers.c.last_seen_at >= utcnow() - within).order_by(workers.c.id)
            ).all()
        return [
            WorkerRecord(r.id, r.hostname, r.pid, list(r.models), r.started_at, r.last_seen_at) for r in rows
        ]
