"""Webhooks in the database: endpoints, signing secrets, the outbox of messages and their attempts.

`record_generation_event` is called with the open connection of the transaction that ends a job
(JobQueue.complete/fail, the queue's worker-lost sweep, Repository.cancel), so a job's final state and
its webhook messages commit together or not at all: a process killed after the commit still has the
messages to deliver when it (or any other API process) starts again.

A message row is both the outbox entry and its delivery state. The dispatcher (service/webhooks.py)
claims due messages (`status = 'pending' AND next_attempt_at <= now`; FOR UPDATE SKIP LOCKED on
PostgreSQL, the write lock on SQLite), each with a claim token and a lease: the claim pushes
`next_attempt_at` past the attempt's deadline, so a message whose dispatcher died mid-attempt becomes
due again by itself. The result of an attempt is written only while the claim token still matches.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update

from easel.domain.errors import NotFound
from easel.domain.generation import ImageFile, Status
from easel.domain.pages import Page, PageRequest
from easel.domain.spec import GenerationSpec
from easel.domain.webhooks import (
    DELIVERED,
    DISABLED,
    EVENT_OF_STATUS,
    FAILED_STATE,
    MAX_ATTEMPTS,
    OUTSTANDING,
    Attempt,
    Delivery,
    Endpoint,
    EventRenderer,
    GenerationEvent,
    Message,
)
from easel.store import pages
from easel.store.db import is_postgres, reading
from easel.store.notify import FINISHED_CHANNEL
from easel.store.tables import (
    utcnow,
    webhook_attempts,
    webhook_endpoints,
    webhook_messages,
    webhook_secrets,
)


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b")


def record_generation_event(
    conn: Connection,
    status: Status,
    *,
    generation_id: str,
    project_id: str,
    spec: GenerationSpec,
    images: Sequence[ImageFile] = (),
    error_code: str | None = None,
    error_message: str | None = None,
    now: datetime | None = None,
    render: EventRenderer,
) -> list[str]:
    """Queue the webhook messages of a job that has just ended, in the caller's transaction: one for
    the request's own `webhook_url` (if any) and one per enabled endpoint of the project whose event
    filter matches. Returns the message ids. On PostgreSQL it also notifies `easel_finished` with the
    job's id (delivered on commit), so API processes waiting for the job wake at once (store/notify.py)."""
    event = EVENT_OF_STATUS.get(status)
    if event is None:
        return []
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(FINISHED_CHANNEL, generation_id)))
    now = now or utcnow()
    targets: list[tuple[str | None, str]] = []
    if spec.webhook_url:
        targets.append((None, spec.webhook_url))
    endpoints = conn.execute(
        select(webhook_endpoints.c.id, webhook_endpoints.c.url, webhook_endpoints.c.event_types).where(
            webhook_endpoints.c.project_id == project_id, webhook_endpoints.c.enabled.is_(True)
        )
    ).all()
    targets += [(e.id, e.url) for e in endpoints if not e.event_types or event in e.event_types]
    if not targets:
        return []
    body = render(
        GenerationEvent(event, generation_id, project_id, spec, images, error_code, error_message, now)
    )
    rows = [
        {
            "id": _id("msg_"),
            "project_id": project_id,
            "endpoint_id": endpoint_id,
            "generation_id": generation_id,
            "url": url,
            "event_type": event,
            "body": body,
            "status": OUTSTANDING,
            "attempts": 0,
            "max_attempts": MAX_ATTEMPTS,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for endpoint_id, url in targets
    ]
    conn.execute(insert(webhook_messages), rows)
    return [str(r["id"]) for r in rows]


def _endpoint(row: Row[Any]) -> Endpoint:
    m = row._mapping
    return Endpoint(**{k: m[k] for k in Endpoint.__dataclass_fields__})


def _message(row: Row[Any], attempts: Sequence[Attempt] = ()) -> Message:
    m = row._mapping
    fields = {k: m[k] for k in Message.__dataclass_fields__ if k != "attempt_log"}
    return Message(**fields, attempt_log=list(attempts))


def _signing_secrets(secret: str, previous: str | None, expires: datetime | None, now: datetime) -> list[str]:
    if previous and expires is not None and expires > now:
        return [secret, previous]
    return [secret]


class WebhookStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._skip_locked = is_postgres(engine)

    # -- endpoints ---------------------------------------------------------------------------------

    def create_endpoint(
        self, project_id: str, url: str, event_types: Sequence[str], description: str | None = None
    ) -> Endpoint:
        now = utcnow()
        eid = _id("ep_")
        with self.engine.begin() as conn:
            conn.execute(
                insert(webhook_endpoints).values(
                    id=eid,
                    project_id=project_id,
                    url=url,
                    description=description,
                    event_types=list(event_types),
                    secret=new_secret(),
                    enabled=True,
                    created_at=now,
                    updated_at=now,
                )
            )
        return self.endpoint(project_id, eid)

    def endpoint(self, project_id: str, endpoint_id: str) -> Endpoint:
        with reading(self.engine) as conn:
            row = conn.execute(
                select(webhook_endpoints).where(
                    webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.project_id == project_id
                )
            ).first()
        if row is None:
            raise NotFound("webhook_endpoint", endpoint_id)
        return _endpoint(row)

    def endpoints(self, project_id: str) -> list[Endpoint]:
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(webhook_endpoints)
                .where(webhook_endpoints.c.project_id == project_id)
                .order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
            ).all()
        return [_endpoint(r) for r in rows]

    def update_endpoint(
        self,
        project_id: str,
        endpoint_id: str,
        *,
        enabled: bool | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
    ) -> Endpoint:
        self.endpoint(project_id, endpoint_id)
        values: dict[str, Any] = {"updated_at": utcnow()}
        if enabled is not None:
            values |= {"enabled": enabled, "disabled_reason": None if enabled else "disabled by request"}
        if event_types is not None:
            values["event_types"] = list(event_types)
        if description is not None:
            values["description"] = description
        with self.engine.begin() as conn:
            conn.execute(
                update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(**values)
            )
        return self.endpoint(project_id, endpoint_id)

    def delete_endpoint(self, project_id: str, endpoint_id: str) -> None:
        """Remove the endpoint; its undelivered messages end as `disabled` (the log keeps them)."""
        self.endpoint(project_id, endpoint_id)
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(webhook_messages)
                .where(
                    webhook_messages.c.endpoint_id == endpoint_id, webhook_messages.c.status == OUTSTANDING
                )
                .values(status=DISABLED, last_error="endpoint deleted", next_attempt_at=None, updated_at=now)
            )
            conn.execute(webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint_id))

    def rotate_endpoint_secret(self, project_id: str, endpoint_id: str, grace: timedelta) -> Endpoint:
        """A new secret; the old one keeps signing (a second signature) for `grace`."""
        old = self.endpoint(project_id, endpoint_id)
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(webhook_endpoints)
                .where(webhook_endpoints.c.id == endpoint_id)
                .values(
                    secret=new_secret(),
                    previous_secret=old.secret if grace.total_seconds() > 0 else None,
                    previous_secret_expires_at=now + grace if grace.total_seconds() > 0 else None,
                    updated_at=now,
                )
            )
        return self.endpoint(project_id, endpoint_id)

    # -- the project's secret for per-request webhook URLs --------------------------------------------

    def project_secret(self, project_id: str) -> tuple[str, str | None, datetime | None]:
        """(secret, previous secret, its expiry), the secret created on first use."""
        with self.engine.begin() as conn:
            row = self._project_secret(conn, project_id)
            return row.secret, row.previous_secret, row.previous_secret_expires_at

    def _project_secret(self, conn: Connection, project_id: str) -> Row[Any]:
        q = select(webhook_secrets).where(webhook_secrets.c.project_id == project_id)
        row = conn.execute(q).first()
        if row is None:
            # Under BEGIN IMMEDIATE (SQLite) nobody else inserts meanwhile; on PostgreSQL a concurrent
            # first use may win the race: then its row is used.
            stmt: Any
            if self._skip_locked:
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                stmt = pg_insert(webhook_secrets).on_conflict_do_nothing()
            else:
                stmt = insert(webhook_secrets)
            conn.execute(stmt.values(project_id=project_id, secret=new_secret(), created_at=utcnow()))
            row = conn.execute(q).first()
        assert row is not None
        return row

    def rotate_project_secret(
        self, project_id: str, grace: timedelta
    ) -> tuple[str, str | None, datetime | None]:
        now = utcnow()
        with self.engine.begin() as conn:
            old = self._project_secret(conn, project_id)
            keep = grace.total_seconds() > 0
            conn.execute(
                update(webhook_secrets)
                .where(webhook_secrets.c.project_id == project_id)
                .values(
                    secret=new_secret(),
                    previous_secret=old.secret if keep else None,
                    previous_secret_expires_at=now + grace if keep else None,
                )
            )
            row = self._project_secret(conn, project_id)
            return row.secret, row.previous_secret, row.previous_secret_expires_at

    # -- the dispatcher's side ---------------------------------------------------------------------

    def claim_due(self, limit: int, lease: timedelta) -> list[Delivery]:
        """Claim up to `limit` due messages for one attempt each. Messages of a deleted or disabled
        endpoint end as `disabled`; a message whose last attempt was cut short (its dispatcher died)
        ends as `failed`."""
        now = utcnow()
        q = (
            select(webhook_messages)
            .where(webhook_messages.c.status == OUTSTANDING, webhook_messages.c.next_attempt_at <= now)
            .order_by(webhook_messages.c.next_attempt_at, webhook_messages.c.id)
            .limit(limit)
        )
        if self._skip_locked:
            q = q.with_for_update(skip_locked=True)
        out: list[Delivery] = []
        with self.engine.begin() as conn:
            for row in conn.execute(q).all():
                end: dict[str, Any] | None = None
                signing: list[str] = []
                if row.attempts >= row.max_attempts:
                    end = {"status": FAILED_STATE, "last_error": "the last attempt was interrupted"}
                elif row.endpoint_id is not None:
                    ep = conn.execute(
                        select(webhook_endpoints).where(webhook_endpoints.c.id == row.endpoint_id)
                    ).first()
                    if ep is None or not ep.enabled:
                        why = "endpoint deleted" if ep is None else f"endpoint disabled: {ep.disabled_reason}"
                        end = {"status": DISABLED, "last_error": why}
                    else:
                        signing = _signing_secrets(
                            ep.secret, ep.previous_secret, ep.previous_secret_expires_at, now
                        )
                else:
                    ps = self._project_secret(conn, row.project_id)
                    signing = _signing_secrets(
                        ps.secret, ps.previous_secret, ps.previous_secret_expires_at, now
                    )
                if end is not None:
                    conn.execute(
                        update(webhook_messages)
                        .where(webhook_messages.c.id == row.id)
                        .values(**end, next_attempt_at=None, updated_at=now)
                    )
                    continue
                token = secrets.token_hex(16)
                conn.execute(
                    update(webhook_messages)
                    .where(webhook_messages.c.id == row.id)
                    .values(
                        attempts=row.attempts + 1,
                        claim_token=token,
                        next_attempt_at=now + lease,
                        updated_at=now,
                    )
                )
                out.append(
                    Delivery(
                        message_id=row.id,
                        project_id=row.project_id,
                        endpoint_id=row.endpoint_id,
                        url=row.url,
                        body=row.body,
                        attempt=row.attempts + 1,
                        max_attempts=row.max_attempts,
                        claim_token=token,
                        secrets=signing,
                    )
                )
        return out

    def record_attempt(
        self,
        delivery: Delivery,
        *,
        outcome: str,
        started_at: datetime,
        duration_ms: int,
        status_code: int | None,
        error: str | None,
        response_body: str | None,
        next_attempt_at: datetime | None,
    ) -> bool:
        """Log one attempt and move the message on: outcome `delivered`, `retry` (due again at
        `next_attempt_at`), `failed` or `disabled` (410: the endpoint is disabled too). False when the
        claim was lost (the message was taken over after its lease ran out)."""
        now = utcnow()
        state = {"delivered": DELIVERED, "retry": OUTSTANDING, "failed": FAILED_STATE, "disabled": DISABLED}[
            outcome
        ]
        values: dict[str, Any] = {
            "status": state,
            "claim_token": None,
            "next_attempt_at": next_attempt_at if state == OUTSTANDING else None,
            "last_status_code": status_code,
            "last_error": error,
            "updated_at": now,
        }
        if state == DELIVERED:
            values["delivered_at"] = now
        with self.engine.begin() as conn:
            conn.execute(
                insert(webhook_attempts).values(
                    message_id=delivery.message_id,
                    attempt=delivery.attempt,
                    url=delivery.url,
                    started_at=started_at,
                    duration_ms=duration_ms,
                    status_code=status_code,
                    outcome=outcome,
                    error=None if error is None else error[:2000],
                    response_body=None if response_body is None else response_body[:1000],
                )
            )
            res = conn.execute(
                update(webhook_messages)
                .where(
                    webhook_messages.c.id == delivery.message_id,
                    webhook_messages.c.claim_token == delivery.claim_token,
                )
                .values(**values)
            )
            if outcome == "disabled" and delivery.endpoint_id is not None:
                conn.execute(
                    update(webhook_endpoints)
                    .where(webhook_endpoints.c.id == delivery.endpoint_id)
                    .values(
                        enabled=False,
                        disabled_reason=f"the endpoint answered {status_code} Gone",
                        updated_at=now,
                    )
                )
            return bool(res.rowcount)

    def next_due(self) -> datetime | None:
        """When the earliest pending message is due (the dispatcher sleeps until then)."""
        with reading(self.engine) as conn:
            value: datetime | None = conn.execute(
                select(func.min(webhook_messages.c.next_attempt_at)).where(
                    webhook_messages.c.status == OUTSTANDING
                )
            ).scalar()
            return value

    # -- the delivery log ----------------------------------------------------------------------------

    def messages(
        self,
        project_id: str,
        *,
        generation_id: str | None = None,
        endpoint_id: str | None = None,
        status: str | None = None,
        page: PageRequest = PageRequest(),
    ) -> Page[Message]:
        """A page of the project's delivery log, newest first (store/pages.py). Filtered by generation,
        endpoint or status, the filter is applied to the project's range of the list index."""
        where = [webhook_messages.c.project_id == project_id]
        if generation_id is not None:
            where.append(webhook_messages.c.generation_id == generation_id)
        if endpoint_id is not None:
            where.append(webhook_messages.c.endpoint_id == endpoint_id)
        if status is not None:
            where.append(webhook_messages.c.status == status)
        with reading(self.engine) as conn:
            found = pages.read(conn, webhook_messages, where, page)
        return dataclasses.replace(found, items=[_message(r) for r in found.items])

    def message(self, project_id: str, message_id: str) -> Message:
        with reading(self.engine) as conn:
            row = conn.execute(
                select(webhook_messages).where(
                    webhook_messages.c.id == message_id, webhook_messages.c.project_id == project_id
                )
            ).first()
            if row is None:
                raise NotFound("webhook_message", message_id)
            attempts = conn.execute(
                select(webhook_attempts)
                .where(webhook_attempts.c.message_id == message_id)
                .order_by(webhook_attempts.c.attempt)
            ).all()
        return _message(
            row, [Attempt(**{k: a._mapping[k] for k in Attempt.__dataclass_fields__}) for a in attempts]
        )

    def redeliver(self, project_id: str, message_id: str) -> Message:
        """Send the message again now, with the same id and body. A finished message gets one more
        attempt (its retries are not restarted); a pending one is moved to now."""
        msg = self.message(project_id, message_id)
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(webhook_messages)
                .where(webhook_messages.c.id == message_id)
                .values(
                    status=OUTSTANDING,
                    next_attempt_at=now,
                    max_attempts=max(msg.max_attempts, msg.attempts + 1),
                    updated_at=now,
                )
            )
        return self.message(project_id, message_id)
