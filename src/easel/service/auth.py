"""Authentication (API key -> principal) and authorisation (scopes)."""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass

from easel.domain.errors import Forbidden, NotFound, Unauthorized
from easel.domain.keys import allows, hash_secret, parse
from easel.store.keys import KeyStore
from easel.store.tables import utcnow

_TOUCH_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key of a project, with its scopes and limits."""

    project_id: str
    key_id: str | None
    scopes: frozenset[str]
    rate_limit_per_hour: int | None  # None: the server default; 0: unlimited
    budget_credits: float | None

    def require(self, scope: str) -> None:
        if not allows(self.scopes, scope):
            raise Forbidden(f"This API key lacks the {scope!r} scope")


class Caller(str):
    """A project id that also knows who is calling (its key's id and budget).

    Dialects pass the project id through to the service as a plain string; this subclass lets the
    service charge the right key without every dialect threading a principal through.
    """

    principal: Principal

    def __new__(cls, principal: Principal) -> Caller:
        self = super().__new__(cls, principal.project_id)
        self.principal = principal
        return self


class Authenticator:
    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def verify(self, plaintext: str | None) -> Principal:
        """The principal of a valid, unexpired, unrevoked key; Unauthorized for anything else."""
        if not plaintext:
            raise Unauthorized("Missing API key")
        parts = parse(plaintext.strip())
        if parts is None:
            raise Unauthorized("Invalid API key")
        try:
            info = self.keys.get(parts.key_id)
        except NotFound:
            raise Unauthorized("Invalid API key") from None
        if not hmac.compare_digest(info.secret_hash, hash_secret(parts.secret)):
            raise Unauthorized("Invalid API key")
        now = utcnow()
        if info.revoked_at is not None:
            raise Unauthorized("This API key has been revoked")
        if info.expires_at is not None and info.expires_at <= now:
            raise Unauthorized("This API key has expired")
        self._touch(info.id)
        project = self.keys.project(info.project_id)
        rate = (
            info.rate_limit_per_hour if info.rate_limit_per_hour is not None else project.rate_limit_per_hour
        )
        return Principal(info.project_id, info.id, info.scopes, rate, info.budget_credits)

    def _touch(self, key_id: str) -> None:
        """Record last use at most once a minute per key (not a write per request)."""
        mono = time.monotonic()
        with self._lock:
            if mono - self._touched.get(key_id, -1e9) < _TOUCH_EVERY_SECONDS:
                return
            self._touched[key_id] = mono
        self.keys.touch(key_id, utcnow())
