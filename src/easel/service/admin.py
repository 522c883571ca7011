"""Projects, API keys and the usage report.

An admin key manages its own project's keys; an admin key of the `local` project (the server owner,
created on first start) manages every project. Another project's ids are a 404, exactly like ids that
do not exist (a key id answers "key <id> not found" either way, so a 404 never tells that a key exists
or which project holds it).

A project's budget, rate limit, cap on queued jobs (`max_queued`) and whether its keys may queue
priority "high" are the server admin's to set: a project admin may change its project's
`record_parameters`, but changing any of those is a 403, and so is giving one of its keys a rate limit
above the project's (or unlimited) when the project has one. A key's own cap on queued jobs only
narrows what its project's cap allows, so any admin of the project sets it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from easel.domain.errors import Forbidden, NotFound, ValidationFailed
from easel.domain.keys import SCOPES, KeyInfo, Principal, ProjectInfo
from easel.store.keys import KeyStore
from easel.store.repository import Repository

_UNSET: Any = object()


@dataclass(frozen=True)
class Usage:
    period: str
    by_period: list[dict[str, Any]]  # rows of (model, period, generations, images, credits)
    by_model: list[dict[str, Any]]
    totals: dict[str, Any]
    budget: dict[str, float] | None  # credits, spent, remaining (when the project has a budget)


class AdminService:
    def __init__(self, keys: KeyStore, repo: Repository, default_project_id: str) -> None:
        self.keys = keys
        self.repo = repo
        self.default_project_id = default_project_id

    def _is_server_admin(self, caller: Principal) -> bool:
        return caller.project_id == self.default_project_id

    def _may_manage(self, caller: Principal, project_id: str) -> None:
        """Server admins (admins of the local project) manage every project; others only their own."""
        if caller.project_id not in (project_id, self.default_project_id):
            raise NotFound("project", project_id)

    # -- projects ------------------------------------------------------------------------------------

    def create_project(
        self,
        caller: Principal,
        name: str,
        budget_credits: float | None,
        rate_limit_per_hour: int | None,
        *,
        max_queued: int | None = None,
        allow_high_priority: bool = False,
    ) -> ProjectInfo:
        if not self._is_server_admin(caller):
            raise Forbidden("Only the server's admin (the local project) creates projects")
        pid = self.repo.ensure_project(name)
        return self.keys.set_project_limits(
            pid,
            budget_credits=budget_credits,
            rate_limit_per_hour=rate_limit_per_hour,
            max_queued=max_queued,
            allow_high_priority=allow_high_priority,
        )

    def projects(self, caller: Principal) -> list[ProjectInfo]:
        return [p for p in self.keys.list_projects() if caller.project_id in (self.default_project_id, p.id)]

    def update_project(
        self,
        caller: Principal,
        project_id: str,
        *,
        budget_credits: float | None = _UNSET,
        rate_limit_per_hour: int | None = _UNSET,
        record_parameters: bool | None = None,
        max_queued: int | None = _UNSET,
        allow_high_priority: bool | None = None,
    ) -> ProjectInfo:
        """PATCH: a limit not given keeps its value (None sets "no limit", for `max_queued` "the server
        default"). Only the server admin changes a budget, a rate limit, a cap on queued jobs or the
        right to priority high (sending the current value is no change)."""
        self._may_manage(caller, project_id)
        current = self.keys.project(project_id)
        if not self._is_server_admin(caller):
            changed = [
                name
                for name, given, now in (
                    ("budget", budget_credits, current.budget_credits),
                    ("rate limit", rate_limit_per_hour, current.rate_limit_per_hour),
                    ("cap on queued generations", max_queued, current.max_queued),
                    (
                        "right to priority high",
                        _UNSET if allow_high_priority is None else allow_high_priority,
                        current.allow_high_priority,
                    ),
                )
                if given is not _UNSET and given != now
            ]
            if changed:
                raise Forbidden(
                    "Only the server's admin (the local project) changes a project's budget, rate limit, "
                    "cap on queued generations and priority "
                    f"(this request changes its {' and '.join(changed)})"
                )
        return self.keys.set_project_limits(
            project_id,
            budget_credits=current.budget_credits if budget_credits is _UNSET else budget_credits,
            rate_limit_per_hour=(
                current.rate_limit_per_hour if rate_limit_per_hour is _UNSET else rate_limit_per_hour
            ),
            record_parameters=record_parameters,
            max_queued=current.max_queued if max_queued is _UNSET else max_queued,
            allow_high_priority=allow_high_priority,
        )

    # -- keys ----------------------------------------------------------------------------------------

    def create_key(
        self,
        caller: Principal,
        *,
        project_id: str | None,
        name: str,
        scopes: Sequence[str],
        expires_at: datetime | None,
        rate_limit_per_hour: int | None,
        budget_credits: float | None,
        max_queued: int | None = None,
    ) -> tuple[str, KeyInfo]:
        """A new key (its plaintext is returned once)."""
        target = project_id or caller.project_id
        self._may_manage(caller, target)
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise ValidationFailed.for_field(
                "scopes", f"unknown scopes {unknown}; allowed: {', '.join(SCOPES)}"
            )
        project = self.keys.project(target)  # 404 for a project that does not exist
        cap = project.rate_limit_per_hour
        over = rate_limit_per_hour is not None and not 0 < rate_limit_per_hour <= (cap or 0)
        if cap and over and not self._is_server_admin(caller):
            raise Forbidden(
                f"A key's rate limit may not exceed its project's ({cap} per window; 0 is unlimited): "
                "only the server's admin raises it"
            )
        return self.keys.create(
            target,
            name,
            list(scopes),
            expires_at=expires_at,
            rate_limit_per_hour=rate_limit_per_hour,
            budget_credits=budget_credits,
            max_queued=max_queued,
        )

    def list_keys(self, caller: Principal, project_id: str | None) -> list[KeyInfo]:
        target = project_id or caller.project_id
        self._may_manage(caller, target)
        return self.keys.all(target)

    def revoke_key(self, caller: Principal, key_id: str) -> KeyInfo:
        """Another project's key is "not found", exactly like an unknown id."""
        try:
            self._may_manage(caller, self.keys.get(key_id).project_id)
        except NotFound:
            raise NotFound("key", key_id) from None
        return self.keys.revoke(key_id)

    # -- usage ---------------------------------------------------------------------------------------

    def usage(self, project_id: str, since: datetime | None, until: datetime | None, period: str) -> Usage:
        """Credits and images by model and period, over queued, running and succeeded generations."""
        rows = self.repo.usage(project_id, since, until, period)
        info = self.keys.project(project_id)
        by_model: dict[str, dict[str, Any]] = {}
        for r in rows:
            m = by_model.setdefault(
                r["model"], {"model": r["model"], "generations": 0, "images": 0, "credits": 0.0}
            )
            for k in ("generations", "images"):
                m[k] += r[k]
            m["credits"] = round(m["credits"] + r["credits"], 6)
        totals: dict[str, Any] = {k: sum(m[k] for m in by_model.values()) for k in ("generations", "images")}
        totals["credits"] = round(sum(m["credits"] for m in by_model.values()), 6)
        budget = None
        if info.budget_credits is not None:
            spent = round(sum(r["credits"] for r in self.repo.usage(project_id, None, None, "month")), 6)
            budget = {
                "credits": info.budget_credits,
                "spent": spent,
                "remaining": max(0.0, info.budget_credits - spent),
            }
        return Usage(period, rows, list(by_model.values()), totals, budget)
