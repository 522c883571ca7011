"""API keys and project settings in the database. Only hashes of secrets are stored."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, bindparam, select, update

from easel.domain.errors import NotFound
from easel.domain.keys import (
    ALPHABET,
    ID_LEN,
    SECRET_LEN,
    KeyInfo,
    ParsedKey,
    ProjectInfo,
    format_key,
    hash_secret,
)
from easel.store.credits import recount_project
from easel.store.db import reading
from easel.store.tables import api_keys, projects, utcnow


def new_key() -> tuple[str, ParsedKey]:
    """A fresh key (shown once) and its parts."""
    key_id, secret = _random(ID_LEN), _random(SECRET_LEN)
    return format_key(key_id, secret), ParsedKey(key_id, secret)


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def _key(row: Row[Any]) -> KeyInfo:
    m = row._mapping
    return KeyInfo(
        id=m["id"],
        project_id=m["project_id"],
        name=m["name"],
        scopes=frozenset(m["scopes"]),
        rate_limit_per_hour=m["rate_limit_per_hour"],
        budget_credits=m["budget_credits"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
        secret_hash=m["secret_hash"],
        max_queued=m["max_queued"],
    )


# The key and what its project sets for it, in one statement built once (every authenticated request
# runs it: building a Select per request costs more CPU than the query).
_KEY_AND_PROJECT = (
    select(api_keys, *(c.label(f"project__{c.name}") for c in projects.c))
    .join(projects, projects.c.id == api_keys.c.project_id)
    .where(api_keys.c.id == bindparam("key_id"))
)


def _project(row: Row[Any], prefix: str = "") -> ProjectInfo:
    m = row._mapping
    return ProjectInfo(
        m[f"{prefix}id"],
        m[f"{prefix}name"],
        m[f"{prefix}budget_credits"],
        m[f"{prefix}rate_limit_per_hour"],
        m[f"{prefix}record_parameters"],
        max_queued=m[f"{prefix}max_queued"],
        allow_high_priority=bool(m[f"{prefix}allow_high_priority"]),
    )


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        project_id: str,
        name: str,
        scopes: list[str],
        *,
        expires_at: datetime | None = None,
        rate_limit_per_hour: int | None = None,
        budget_credits: float | None = None,
        max_queued: int | None = None,
    ) -> tuple[str, KeyInfo]:
        """A new key: returns the plaintext (shown once) and its record."""
        plaintext, parts = new_key()
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    id=parts.key_id,
                    project_id=project_id,
                    name=name,
                    secret_hash=hash_secret(parts.secret),
                    scopes=sorted(set(scopes)),
                    rate_limit_per_hour=rate_limit_per_hour,
                    budget_credits=budget_credits,
                    max_queued=max_queued,
                    created_at=utcnow(),
                    expires_at=expires_at,
                )
            )
        return plaintext, self.get(parts.key_id)

    def get(self, key_id: str) -> KeyInfo:
        with reading(self.engine) as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise NotFound("key", key_id)
        return _key(row)

    def with_project(self, key_id: str) -> tuple[KeyInfo, ProjectInfo]:
        """A key and its project: one read (every authenticated request)."""
        with reading(self.engine) as conn:
            row = conn.execute(_KEY_AND_PROJECT, {"key_id": key_id}).first()
        if row is None:
            raise NotFound("key", key_id)
        return _key(row), _project(row, "project__")

    def all(self, project_id: str | None = None) -> list[KeyInfo]:
        q = select(api_keys).order_by(api_keys.c.created_at)
        if project_id is not None:
            q = q.where(api_keys.c.project_id == project_id)
        with reading(self.engine) as conn:
            return [_key(r) for r in conn.execute(q)]

    def revoke(self, key_id: str, project_id: str | None = None) -> KeyInfo:
        q = update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        if project_id is not None:
            q = q.where(api_keys.c.project_id == project_id)
        with self.engine.begin() as conn:
            conn.execute(q.values(revoked_at=utcnow()))
        info = self.get(key_id)
        if project_id is not None and info.project_id != project_id:
            raise NotFound("key", key_id)
        return info

    def touch(self, key_id: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))

    def project(self, project_id: str) -> ProjectInfo:
        with reading(self.engine) as conn:
            row = conn.execute(select(projects).where(projects.c.id == project_id)).first()
        if row is None:
            raise NotFound("project", project_id)
        return _project(row)

    def project_by_name(self, name: str) -> ProjectInfo:
        with reading(self.engine) as conn:
            row = conn.execute(select(projects.c.id).where(projects.c.name == name)).first()
        if row is None:
            raise NotFound("project", name)
        return self.project(row.id)

    def list_projects(self) -> list[ProjectInfo]:
        with reading(self.engine) as conn:
            rows = conn.execute(select(projects.c.id).order_by(projects.c.created_at)).all()
        return [self.project(r.id) for r in rows]

    def set_project_limits(
        self,
        project_id: str,
        *,
        budget_credits: float | None,
        rate_limit_per_hour: int | None,
        record_parameters: bool | None = None,
        max_queued: int | None = None,
        allow_high_priority: bool | None = None,
    ) -> ProjectInfo:
        """Set a project's limits; `max_queued` is always written (None: the server default), the
        booleans only when given."""
        values: dict[str, Any] = {
            "budget_credits": budget_credits,
            "rate_limit_per_hour": rate_limit_per_hour,
            "max_queued": max_queued,
        }
        if record_parameters is not None:
            values["record_parameters"] = record_parameters
        if allow_high_priority is not None:
            values["allow_high_priority"] = allow_high_priority
        with self.engine.begin() as conn:
            if budget_credits is not None:  # the counter is kept only while a budget holds: recount it
                recount_project(conn, project_id)
            conn.execute(update(projects).where(projects.c.id == project_id).values(**values))
        return self.project(project_id)
