"""Credits held against budgets, and the admission of a queued job: budgets and caps on queued jobs.

A project and an API key each keep `spent_credits`, the credits of their charged generations (queued,
running or succeeded; a failed or canceled job is not charged), so that a create checks a budget with
one conditional UPDATE instead of summing every generation of the project:

- a job entering the charged states (a create, a retry) is charged by
  `UPDATE ... SET spent = spent + c WHERE id = ? AND spent + c <= budget`, only while a budget is set;
  no row updated means over budget, and nothing of the transaction is kept;
- a job leaving them (canceled, failed, expired) is refunded, always (`refund`);
- setting a project's budget recounts its counter from its generations, with the row locked
  (`recount_project`), so the counter is exact whenever a budget holds (a key's budget is fixed when
  the key is made, with nothing spent yet).

Locks, on PostgreSQL (on SQLite every write transaction already holds the one write lock): a create reads
the limits with FOR KEY SHARE, which concurrent creates share and which only a budget change
(FOR UPDATE, `recount_project`) waits for, so no create can slip past a recount. The row's exclusive lock
(FOR NO KEY UPDATE, compatible with the shared one, so two creates cannot deadlock upgrading) is taken
last, after the job's rows are written, and only when the project or the key has a budget or a cap on
queued jobs: a project without either admits creates in parallel. Rows are always locked project first,
then key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from easel.domain.errors import NotFound, QueueFull, QuotaExceeded
from easel.domain.generation import Status
from easel.store import scheduling
from easel.store.tables import api_keys, generation_keys, generations, projects

CHARGED = (Status.QUEUED.value, Status.RUNNING.value, Status.SUCCEEDED.value)
# Credits are floats: a budget of 0.3 holds three jobs of 0.1 whose sum is 0.30000000000000004.
EPSILON = 1e-9
# Retry-After of a 429 for a full queue when no estimate can be made (no worker, nothing measured).
QUEUE_FULL_RETRY_SECONDS = 10


@dataclass(frozen=True)
class QueueCaps:
    """Caps on queued jobs (0: none): the key's (its own, else EASEL_MAX_QUEUED_PER_KEY) and the
    project's default (EASEL_MAX_QUEUED_PER_PROJECT; a project's own `max_queued` replaces it)."""

    per_key: int = 0
    per_project: int = 0


@dataclass(frozen=True)
class Limits:
    """What a create must respect, read at the start of its transaction, and its job's round."""

    project_id: str
    budget: float | None
    max_queued: int | None
    key_id: str | None
    key_budget: float | None
    round: int


def _limits(with_key: bool, lock: bool) -> Any:
    p = projects.c
    cols: list[Any] = [p.id, p.budget_credits, p.max_queued]
    q = select(*cols, *scheduling.round_columns()).where(p.id == bindparam("pid"))
    of: list[Any] = [projects]
    if with_key:
        q = q.add_columns(api_keys.c.budget_credits.label("key_budget")).where(
            api_keys.c.id == bindparam("kid"), api_keys.c.project_id == p.id
        )
        of.append(api_keys)
    return q.with_for_update(read=True, key_share=True, of=of) if lock else q


# (with a key, locked): built once, like every statement of the create path.
_LIMITS = {(k, lock): _limits(k, lock) for k in (False, True) for lock in (False, True)}
_CHARGE = {
    table.name: update(table)
    .where(
        table.c.id == bindparam("row_id"),
        table.c.spent_credits + bindparam("credits") <= table.c.budget_credits + EPSILON,
    )
    .values(spent_credits=table.c.spent_credits + bindparam("credits"))
    for table in (projects, api_keys)
}
_LOCK = {
    table.name: select(table.c.id).where(table.c.id == bindparam("row_id")).with_for_update(key_share=True)
    for table in (projects, api_keys)
}
_SPENT = {
    table.name: select(table.c.spent_credits).where(table.c.id == bindparam("row_id"))
    for table in (projects, api_keys)
}
_REFUND_PROJECT = (
    update(projects)
    .where(projects.c.id == bindparam("row_id"))
    .values(spent_credits=projects.c.spent_credits - bindparam("credits"))
)
_REFUND_KEY = (
    update(api_keys)
    .where(
        api_keys.c.id
        == select(generation_keys.c.key_id)
        .where(generation_keys.c.generation_id == bindparam("gid"))
        .scalar_subquery()
    )
    .values(spent_credits=api_keys.c.spent_credits - bindparam("credits"))
)


def read_limits(conn: Connection, project_id: str, key_id: str | None, priority: int) -> Limits:
    """The project's (and the key's) limits and the job's round, in one statement; on PostgreSQL the rows
    share-locked until the transaction ends (see the module's docstring). NotFound for no such project."""
    lock = conn.dialect.name == "postgresql"
    params = {"pid": project_id, "kid": key_id, "prio": priority}
    row = conn.execute(_LIMITS[(key_id is not None, lock)], params).first()
    if row is None and key_id is not None:  # a key of no row (the server's admin key): no key limits
        key_id = None
        row = conn.execute(_LIMITS[(False, lock)], params).first()
    if row is None:
        raise NotFound("project", project_id)
    m = row._mapping
    return Limits(
        project_id=project_id,
        budget=m["budget_credits"],
        max_queued=m["max_queued"],
        key_id=key_id,
        key_budget=m["key_budget"] if key_id is not None else None,
        round=scheduling.round_of(row),
    )


def admit(
    conn: Connection,
    limits: Limits,
    credits: float,
    caps: QueueCaps,
    key_words: str,
    *,
    live_within: timedelta,
    now: datetime,
) -> None:
    """Charge a job that has just been written as queued against the budgets and check the caps on
    queued jobs (its own row counted), project first, then key; QuotaExceeded or QueueFull otherwise
    (the caller's transaction then rolls back). `key_words` names the key in a message."""
    project_cap = caps.per_project if limits.max_queued is None else limits.max_queued
    rows: list[tuple[Any, str, float | None, int, str, str]] = [
        (projects, limits.project_id, limits.budget, project_cap, "the project", "this project")
    ]
    if limits.key_id is not None:
        rows.append((api_keys, limits.key_id, limits.key_budget, caps.per_key, key_words, "this API key"))
    for table, row_id, budget, cap, whose, who in rows:
        if budget is not None:
            params = {"row_id": row_id, "credits": credits}
            if not conn.execute(_CHARGE[table.name], params).rowcount:
                spent = float(conn.execute(_SPENT[table.name], {"row_id": row_id}).scalar_one())
                raise QuotaExceeded(
                    f"This generation costs {credits:g} credits; {whose} has "
                    f"{max(0.0, budget - spent):g} of its {budget:g} left"
                )
        if cap > 0:
            if budget is None and conn.dialect.name == "postgresql":
                conn.execute(_LOCK[table.name], {"row_id": row_id})  # the budget's UPDATE locked it
            key = row_id if table is api_keys else None
            if scheduling.queued_count(conn, limits.project_id, key, cap + 1) > cap:
                raise _queue_full(conn, limits.project_id, key, cap, who, live_within, now)


def _queue_full(
    conn: Connection,
    project_id: str,
    key_id: str | None,
    cap: int,
    who: str,
    live_within: timedelta,
    now: datetime,
) -> QueueFull:
    """429 for a full queue; Retry-After is the estimated time until the first queued job starts."""
    retry = QUEUE_FULL_RETRY_SECONDS
    first = scheduling.first_queued(conn, project_id, key_id)
    if first is not None:
        eta = scheduling.estimates(conn, [first], now, live_within, own=False)[first.id][1]
        if eta is not None:
            retry = min(3600, max(1, math.ceil(eta)))
    whose = "the key's cap" if key_id is not None else "the project's cap"
    return QueueFull(
        f"Queue limit reached: {who} has {cap} queued generations, {whose} ({cap}); "
        f"retry when one has started (in about {retry} s)",
        retry_after=retry,
    )


def refund(conn: Connection, ended: Iterable[Any]) -> None:
    """Give back the credits of generations that have just left the charged states (rows with `id`,
    `project_id` and `credits`), to their projects and keys, in the caller's transaction."""
    by_project: dict[str, float] = {}
    by_generation: list[dict[str, Any]] = []
    for r in ended:
        if r.credits:
            by_project[r.project_id] = by_project.get(r.project_id, 0.0) + r.credits
            by_generation.append({"gid": r.id, "credits": r.credits})
    if not by_project:
        return
    for project_id in sorted(by_project):  # one order of row locks for every transaction
        conn.execute(_REFUND_PROJECT, {"row_id": project_id, "credits": by_project[project_id]})
    conn.execute(_REFUND_KEY, by_generation)


def recount_project(conn: Connection, project_id: str) -> None:
    """Set the project's counter from its generations, with its row locked (FOR UPDATE on PostgreSQL,
    which waits for the creates in flight: they share-lock it)."""
    conn.execute(select(projects.c.id).where(projects.c.id == project_id).with_for_update())
    spent = (
        select(func.coalesce(func.sum(generations.c.credits), 0.0))
        .where(generations.c.project_id == project_id, generations.c.status.in_(CHARGED))
        .scalar_subquery()
    )
    conn.execute(update(projects).where(projects.c.id == project_id).values(spent_credits=spent))
