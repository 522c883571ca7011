"""The gateway's records (docs/gateway.md): the call ledger and the providers' circuits.

Every call to a provider (its retries included) is one `upstream_calls` row, written when the call ends:
listed newest first on the admin API (filters: provider, status, time; keyset pages), summed per provider
and day, and read by /metrics (latency histogram, errors by code). A circuit's state is one
`upstream_circuits` row per provider, written by the gateway workers when it changes (open, half-open,
closed), so every worker skips a provider one of them opened and /metrics shows it.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, func, select, tuple_

from easel.domain.upstream import LATENCY_BUCKETS, CallRecord, Circuit
from easel.store.db import reading
from easel.store.scheduling import insert_for
from easel.store.tables import upstream_calls, upstream_circuits, utcnow


def _record(row: Any) -> CallRecord:
    return CallRecord(**{k: row._mapping[k] for k in CallRecord.__dataclass_fields__})


class UpstreamLedger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, call: CallRecord) -> str:
        """Write one call; its id."""
        values = asdict(call)
        values["id"] = call.id or str(uuid.uuid4())
        if values["error_message"] is not None:
            values["error_message"] = values["error_message"][:500]
        with self.engine.begin() as conn:
            conn.execute(upstream_calls.insert().values(**values))
        return str(values["id"])

    def calls(
        self,
        *,
        provider: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        generation_id: str | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[CallRecord]:
        """Calls newest first; `after` (created_at, id) of the last row of the previous page."""
        c = upstream_calls.c
        q = select(upstream_calls)
        if provider is not None:
            q = q.where(c.provider == provider)
        if status is not None:
            q = q.where(c.status == status)
        if since is not None:
            q = q.where(c.created_at >= since)
        if until is not None:
            q = q.where(c.created_at < until)
        if generation_id is not None:
            q = q.where(c.generation_id == generation_id)
        if after is not None:
            q = q.where(tuple_(c.created_at, c.id) < tuple_(*after))
        q = q.order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        with reading(self.engine) as conn:
            return [_record(r) for r in conn.execute(q)]

    def daily(self, since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
        """Sums per provider and day: calls, by status, images, bytes, credits, retries, time."""
        c = upstream_calls.c
        where = []
        if since is not None:
            where.append(c.created_at >= since)
        if until is not None:
            where.append(c.created_at < until)
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(
                    c.provider, c.created_at, c.status, c.images, c.bytes, c.credits, c.retries, c.duration_ms
                ).where(*where)
            ).all()
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            day = r.created_at.strftime("%Y-%m-%d")
            b = out.setdefault(
                (r.provider, day),
                {
                    "provider": r.provider,
                    "day": day,
                    "calls": 0,
                    "ok": 0,
                    "failed": 0,
                    "rejected": 0,
                    "canceled": 0,
                    "skipped": 0,
                    "images": 0,
                    "bytes": 0,
                    "credits": 0.0,
                    "retries": 0,
                    "durationMs": 0,
                },
            )
            b["calls"] += 1
            b[r.status] = b.get(r.status, 0) + 1
            b["images"] += r.images
            b["bytes"] += r.bytes
            b["credits"] = round(b["credits"] + r.credits, 6)
            b["retries"] += r.retries
            b["durationMs"] += r.duration_ms
        return [out[k] for k in sorted(out)]

    def metrics(self) -> dict[str, Any]:
        """What /metrics exports: per provider, the latency histogram of its calls (bucket counts,
        cumulative, the sum and the count), its errors by code, and every circuit."""
        c = upstream_calls.c
        seconds = c.duration_ms / 1000.0
        buckets = [func.sum(case((seconds <= b, 1), else_=0)) for b in LATENCY_BUCKETS]
        called = c.status != "skipped"
        with reading(self.engine) as conn:
            hist = conn.execute(
                select(c.provider, func.count(), func.sum(seconds), *buckets)
                .where(called)
                .group_by(c.provider)
            ).all()
            errors = conn.execute(
                select(c.provider, c.error_code, func.count())
                .where(c.error_code.is_not(None))
                .group_by(c.provider, c.error_code)
            ).all()
        return {
            "latency": {
                r[0]: {"count": int(r[1]), "sum": float(r[2] or 0), "buckets": [int(v or 0) for v in r[3:]]}
                for r in hist
            },
            "errors": [(r[0], r[1], int(r[2])) for r in errors],
            "circuits": self.circuits(),
        }

    # -- circuits -----------------------------------------------------------------------------------

    def circuits(self) -> list[Circuit]:
        with reading(self.engine) as conn:
            rows = conn.execute(select(upstream_circuits).order_by(upstream_circuits.c.provider)).all()
        return [Circuit(r.provider, r.state, r.failures, r.opened_until, r.cooldown_seconds) for r in rows]

    def save_circuit(self, circuit: Circuit) -> None:
        values = asdict(circuit) | {"updated_at": utcnow()}
        with self.engine.begin() as conn:
            stmt = insert_for(conn)(upstream_circuits).values(**values)
            conn.execute(stmt.on_conflict_do_update(index_elements=["provider"], set_=values))
