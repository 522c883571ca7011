"""Authentication (API key -> principal), authorisation (scopes) and rate limits: `Access.authorize`
is what every dialect's auth dependency calls."""

from __future__ import annotations

import dataclasses
import hmac
import threading
import time
from datetime import datetime

from easel.domain.errors import NotFound, RateLimited, Unauthorized
from easel.domain.keys import SCOPES, Principal, hash_secret, parse
from easel.service.ratelimit import RateDecision, RateLimiter
from easel.settings import Settings
from easel.store.keys import KeyStore
from easel.store.tables import utcnow

_TOUCH_EVERY_SECONDS = 60.0


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
            info, project = self.keys.with_project(parts.key_id)
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
        rate = (
            info.rate_limit_per_hour if info.rate_limit_per_hour is not None else project.rate_limit_per_hour
        )
        return Principal(
            info.project_id,
            info.id,
            info.scopes,
            rate,
            info.budget_credits,
            max_queued=info.max_queued,
            high_priority=project.allow_high_priority,
            record_parameters=project.record_parameters,
        )

    def _touch(self, key_id: str) -> None:
        """Record last use at most once a minute per key (not a write per request)."""
        mono = time.monotonic()
        with self._lock:
            if mono - self._touched.get(key_id, -1e9) < _TOUCH_EVERY_SECONDS:
                return
            self._touched[key_id] = mono
        self.keys.touch(key_id, utcnow())


class Access:
    """Who a request's credential is, whether it may act under a scope, and its rate limit."""

    def __init__(
        self, settings: Settings, auth: Authenticator, limiter: RateLimiter, default_project_id: str
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.limiter = limiter
        self.default_project_id = default_project_id

    def principal_for(self, credential: str | None) -> Principal:
        """With auth disabled (loopback `--no-auth`) everyone is the local project's admin. The local
        project's keys (the server admin's) may always queue priority high."""
        if not self.settings.auth_enabled:
            return Principal.system(self.default_project_id)
        principal = self.auth.verify(credential)
        if principal.project_id == self.default_project_id and not principal.high_priority:
            principal = dataclasses.replace(principal, high_priority=True)
        return principal

    def rate_limit(self, principal: Principal) -> RateDecision | None:
        """Count one request of this principal; None when it is unlimited."""
        limit = principal.rate_limit_per_hour
        if limit is None:
            limit = self.settings.rate_limit_per_hour
        if limit == 0:
            return None
        bucket = f"key:{principal.key_id}" if principal.key_id else f"project:{principal.project_id}"
        return self.limiter.hit(bucket, limit, self.settings.rate_limit_window_seconds)

    def authorize(self, credential: str | None, scope: str | None) -> tuple[Principal, RateDecision | None]:
        """The principal of a valid key (401) holding `scope` (403; None: any valid key) within its rate
        limit. The decision is returned even when the request is refused (RateLimited carries it in
        `decision`)."""
        if scope is not None and scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; known: {', '.join(SCOPES)}")
        principal = self.principal_for(credential)
        if scope is not None:
            principal.require(scope)
        decision = self.rate_limit(principal)
        if decision is not None and not decision.allowed:
            err = RateLimited(
                f"Rate limit of {decision.limit} requests per {decision.window_seconds} s exceeded; "
                f"retry in {decision.reset_seconds} s",
                retry_after=decision.reset_seconds,
            )
            err.headers.update(decision.headers())
            raise err
        return principal, decision

    def describe(self, principal: Principal) -> KeyView:
        """What GET /api/v1/me tells a key about itself (the console's sign-in): its name, project and
        scopes. With auth disabled there is no key: the local project's admin."""
        project = self.auth.keys.project(principal.project_id)
        info = self.auth.keys.get(principal.key_id) if principal.key_id else None
        return KeyView(
            key_id=principal.key_id,
            key_name=info.name if info else None,
            project_id=project.id,
            project_name=project.name,
            scopes=tuple(sorted(principal.scopes)),
            rate_limit_per_hour=principal.rate_limit_per_hour,
            budget_credits=principal.budget_credits,
            expires_at=info.expires_at if info else None,
            server_admin=principal.is_admin and principal.project_id == self.default_project_id,
            auth_enabled=self.settings.auth_enabled,
        )


@dataclasses.dataclass(frozen=True)
class KeyView:
    key_id: str | None
    key_name: str | None
    project_id: str
    project_name: str
    scopes: tuple[str, ...]
    rate_limit_per_hour: int | None
    budget_credits: float | None
    expires_at: datetime | None
    server_admin: bool
    auth_enabled: bool
