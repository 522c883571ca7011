"""Workers' heartbeats: one row per worker process in the `workers` table.

A worker upserts its row when it starts, on every lease heartbeat while busy and every time its idle
loop wakes (at least every `idle_check_seconds`), and deletes it when it stops gracefully. A killed
worker's row stays behind with an old `last_seen_at`; the metrics count a worker as live only while its
row is recent. Only the worker itself writes its row, so update-then-insert is race free.

The row also holds what the worker reports it has loaded (`loaded`, JSON: a list of
`{source, models, since, memory_bytes}`), written when that changes: after a load or unload request and
after a batch that loaded a model lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from easel.domain.metrics import WorkerRecord
from easel.domain.model_requests import LoadedModel
from easel.store.db import reading
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

    def report_loaded(self, worker_id: str, loaded: Sequence[LoadedModel]) -> bool:
        """Record what this worker has loaded now; False when it has no row (not registered yet)."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(workers)
                .where(workers.c.id == worker_id)
                .values(loaded=[_loaded_json(m) for m in loaded])
            )
        return bool(res.rowcount)

    def remove(self, worker_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(workers).where(workers.c.id == worker_id))

    def recent(self, within: timedelta) -> list[WorkerRecord]:
        """Workers seen in the last `within` (older rows are workers that died long ago)."""
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(workers).where(workers.c.last_seen_at >= utcnow() - within).order_by(workers.c.id)
            ).all()
        return [
            WorkerRecord(
                r.id,
                r.hostname,
                r.pid,
                list(r.models),
                r.started_at,
                r.last_seen_at,
                None if r.loaded is None else tuple(_loaded_model(m) for m in r.loaded),
            )
            for r in rows
        ]


def _loaded_json(m: LoadedModel) -> dict[str, Any]:
    return {
        "source": m.source,
        "models": list(m.models),
        "since": m.since.isoformat(),
        "memory_bytes": m.memory_bytes,
    }


def _loaded_model(d: dict[str, Any]) -> LoadedModel:
    return LoadedModel(
        source=str(d["source"]),
        models=tuple(str(n) for n in d.get("models", ())),
        since=datetime.fromisoformat(d["since"]),
        memory_bytes=d.get("memory_bytes"),
    )
