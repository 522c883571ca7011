"""The fair scheduler's records: rounds, the class clock, queue caps' counts, model speeds and the
queue estimates (position, ETA).

Fair queuing by rounds (start-time fair queuing with one unit per job). Every queued job carries a
round, `generations.fair_tag`, set when it is queued (created or retried) in the create transaction,
with the project's limits (store/credits.py):

    round = clock[class]                       when the project has no unfinished job in that class
    round = max(clock[class], last + 1)        else, `last` = its latest queued or running job's round

where `clock[class]` (`queue_clock`) is the round of the job claimed last at the head of that class. A
claim takes jobs in (priority class desc, round, created_at, id) order, so a project with 1,000 queued
jobs holds rounds r..r+999 while a project that queues one job now gets the current round: it is next
(ties go to the older job), and from then on the two alternate. A batch's compatible jobs are taken in
the same order, so they too come round-robin from the projects that have some. The claim is one
ordered index scan (ix_generations_claim); the clock advance is one row, skipped (SKIP LOCKED) when a
concurrent claimer is advancing it; a create reads the clock and one index probe
(ix_generations_project_round).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Integer, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from easel.domain.generation import Status
from easel.domain.scheduling import TIMING_WEIGHT, Work, estimate_seconds
from easel.store.tables import generation_keys, generations, model_timings, queue_clock, workers

_UNFINISHED = (Status.QUEUED.value, Status.RUNNING.value)


def insert_for(conn: Connection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def claim_order() -> list[Any]:
    """The order jobs are claimed in: priority class, round, age, id."""
    g = generations.c
    return [g.priority.desc(), g.fair_tag, g.created_at, g.id]


def round_columns() -> list[Any]:
    """The class's clock and the project's latest rounds (queued, running) as labelled scalar subqueries
    on the parameters `pid` and `prio`, for a statement that reads them with other columns."""
    tops = [
        latest_round(bindparam("pid"), status, bindparam("prio")).label(f"round_{status}")
        for status in _UNFINISHED
    ]
    clock = select(queue_clock.c.round).where(queue_clock.c.priority == bindparam("prio")).scalar_subquery()
    return [clock.label("round_clock"), *tops]


def round_of(row: Any) -> int:
    """The round of a job this project queues now in this class (see the module's docstring), from a row
    with the `round_columns`."""
    m = row._mapping
    rounds = [int(m[f"round_{s}"]) for s in _UNFINISHED if m[f"round_{s}"] is not None]
    now = int(m["round_clock"] or 0)
    return max(now, max(rounds) + 1) if rounds else now


def next_round(conn: Connection, project_id: str, priority: int) -> int:
    """The round of a job this project queues now in this class."""
    return round_of(conn.execute(_ROUNDS, {"pid": project_id, "prio": priority}).one())


def latest_round(project_id: Any, status: str, priority: Any) -> Any:
    """The highest round of the project's jobs in this status and class: the top of one range of
    ix_generations_project_round (project_id, status, priority, fair_tag)."""
    g = generations.c
    return (
        select(g.fair_tag)
        .where(g.project_id == project_id, g.status == status, g.priority == priority)
        .order_by(g.fair_tag.desc())
        .limit(1)
        .scalar_subquery()
    )


_ROUNDS = select(*round_columns())  # one statement, built once


def advance_clock(conn: Connection, priority: int, round_: int) -> None:
    """Move the class's clock forward to `round_` (never back). On PostgreSQL a clock row another
    claimer holds is skipped, not waited for: that claimer is moving it to about the same round."""
    q = select(queue_clock.c.round).where(queue_clock.c.priority == priority)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    current = conn.execute(q).scalar()
    if current is None:  # no row (a class first seen), or locked by a concurrent claimer
        stmt = insert_for(conn)(queue_clock).values(priority=priority, round=round_).on_conflict_do_nothing()
        conn.execute(stmt)
    elif current < round_:
        conn.execute(
            update(queue_clock)
            .where(queue_clock.c.priority == priority, queue_clock.c.round < round_)
            .values(round=round_)
        )


def _queued_count(by_key: bool) -> Any:
    q = select(generations.c.id).where(
        generations.c.project_id == bindparam("pid"), generations.c.status == Status.QUEUED.value
    )
    if by_key:
        q = q.join(generation_keys, generation_keys.c.generation_id == generations.c.id).where(
            generation_keys.c.key_id == bindparam("kid")
        )
    return select(func.count()).select_from(q.limit(bindparam("at_most", type_=Integer)).subquery())


_QUEUED_COUNT = {by_key: _queued_count(by_key) for by_key in (True, False)}


def queued_count(conn: Connection, project_id: str, key_id: str | None, at_most: int) -> int:
    """Queued jobs of this project (of this key, when given), counted up to `at_most`."""
    params = {"pid": project_id, "kid": key_id, "at_most": at_most}
    return int(conn.execute(_QUEUED_COUNT[key_id is not None], params).scalar_one())


def first_queued(conn: Connection, project_id: str, key_id: str | None) -> Any:
    """The project's (the key's) queued job that will be claimed first, or None."""
    q = select(generations).where(
        generations.c.project_id == project_id, generations.c.status == Status.QUEUED.value
    )
    if key_id is not None:
        q = q.join(generation_keys, generation_keys.c.generation_id == generations.c.id).where(
            generation_keys.c.key_id == key_id
        )
    return conn.execute(q.order_by(*claim_order()).limit(1)).first()


def record_timing(conn: Connection, model: str, seconds_per_step: float, now: datetime) -> None:
    """Fold one measurement (seconds per denoising step and image) into the model's moving average."""
    t = model_timings.c
    keep = 1 - TIMING_WEIGHT
    stmt = (
        insert_for(conn)(model_timings)
        .values(model=model, seconds_per_step=seconds_per_step, samples=1, updated_at=now)
        .on_conflict_do_update(
            index_elements=["model"],
            set_={
                "seconds_per_step": t.seconds_per_step * keep + seconds_per_step * TIMING_WEIGHT,
                "samples": t.samples + 1,
                "updated_at": now,
            },
        )
    )
    conn.execute(stmt)


# Statements of the estimates, built once (GET, lists and creates run them: building a Select per call
# costs more CPU than the query; store/keys.py says the same of the key lookup).
_TIMINGS = select(model_timings.c.model, model_timings.c.seconds_per_step)
_LIVE_WORKERS = select(func.count()).select_from(workers).where(workers.c.last_seen_at >= bindparam("since"))
_RUNNING_WORK = (
    select(
        generations.c.model,
        func.sum((generations.c.progress_total - generations.c.progress_step) * generations.c.n).label(
            "work"
        ),
    )
    .where(generations.c.status == Status.RUNNING.value)
    .group_by(generations.c.model)
)


def _ahead_of_params() -> Any:
    """Queued jobs that a claim takes before a row (the claim order), the row's claim key bound as
    parameters p (priority), f (round), c (created_at), i (id)."""
    g = generations.c
    p, f = bindparam("p", type_=g.priority.type), bindparam("f", type_=g.fair_tag.type)
    c, i = bindparam("c", type_=g.created_at.type), bindparam("i", type_=g.id.type)
    return or_(
        g.priority > p,
        and_(
            g.priority == p,
            or_(
                g.fair_tag < f,
                and_(g.fair_tag == f, or_(g.created_at < c, and_(g.created_at == c, g.id < i))),
            ),
        ),
    )


_AHEAD = select(func.count()).select_from(
    select(generations.c.id)
    .where(generations.c.status == Status.QUEUED.value, _ahead_of_params())
    .limit(bindparam("cap", type_=Integer))
    .subquery()
)


def timings(conn: Connection) -> dict[str, float]:
    """Each measured model's seconds per step and image."""
    rows = conn.execute(_TIMINGS).all()
    return {r.model: float(r.seconds_per_step) for r in rows}


def not_expired(now: datetime) -> Any:
    return or_(generations.c.deadline_at.is_(None), generations.c.deadline_at > now)


# A queued job's position counts at most this many jobs ahead of it (an index-only range of
# ix_generations_claim); a job further back shows POSITION_CAP + 1. Its ETA sums the work of at most
# ETA_SAMPLE of those jobs and scales it to the count.
POSITION_CAP = 10_000
ETA_SAMPLE = 1_000


def estimates(
    conn: Connection, rows: Sequence[Any], now: datetime, live_within: timedelta, *, own: bool = True
) -> dict[str, tuple[int | None, float | None]]:
    """(queue position, ETA in seconds) of each queued or running row: the 1-based place in the claim
    order among queued jobs (None while running), and the estimated seconds until it finishes (`own`
    False: until it starts), None when no worker is live or no model speed has been measured.

    The cost does not grow with the queue, nor with the rows asked about: the positions are one count
    (one row) or one ranking (a page of rows) over at most POSITION_CAP entries of the claim index
    (queued jobs whose deadline passed count until a claim or a read sweeps them); the work ahead is read
    from the first ETA_SAMPLE queued jobs in claim order, exactly for a job within them, scaled to the
    count for a job further back."""
    active = [r for r in rows if r.status in _UNFINISHED]
    if not active:
        return {}
    speeds = timings(conn)
    live = int(conn.execute(_LIVE_WORKERS, {"since": now - live_within}).scalar_one())
    running = [Work(r.model, float(r.work or 0)) for r in conn.execute(_RUNNING_WORK)]
    queued = [r for r in active if r.status == Status.QUEUED.value]
    ahead = _jobs_ahead(conn, queued)
    head = _head_work(conn, min(ETA_SAMPLE, max(ahead.values(), default=0))) if live and queued else []
    out: dict[str, tuple[int | None, float | None]] = {}
    for r in active:
        if r.status == Status.RUNNING.value:
            left = Work(r.model, float(max(0, r.progress_total - r.progress_step) * r.n))
            out[r.id] = (None, estimate_seconds([], left, speeds, live) if live else None)
            continue
        jobs_ahead = ahead[r.id]
        if not live:
            out[r.id] = (1 + jobs_ahead, None)
            continue
        sample = head[:jobs_ahead]
        scale = jobs_ahead / len(sample) if sample else 0.0
        by_model: dict[str, float] = {}
        for model, work in sample:
            by_model[model] = by_model.get(model, 0.0) + work * scale
        work_ahead = running + [Work(m, w) for m, w in by_model.items()]
        mine = Work(r.model, float(r.progress_total * r.n)) if own else None
        out[r.id] = (1 + jobs_ahead, estimate_seconds(work_ahead, mine, speeds, live))
    return out


def _jobs_ahead(conn: Connection, queued: Sequence[Any]) -> dict[str, int]:
    """How many queued jobs a claim takes before each of these (at most POSITION_CAP)."""
    g = generations.c
    if len(queued) == 1:
        r = queued[0]
        key = {"p": r.priority, "f": r.fair_tag, "c": r.created_at, "i": r.id, "cap": POSITION_CAP}
        return {r.id: int(conn.execute(_AHEAD, key).scalar_one())}
    if not queued:
        return {}
    head = (
        select(g.id, func.row_number().over(order_by=claim_order()).label("place"))
        .where(g.status == Status.QUEUED.value)
        .order_by(*claim_order())
        .limit(POSITION_CAP)
        .subquery()
    )
    ids = [r.id for r in queued]
    found = dict(conn.execute(select(head.c.id, head.c.place).where(head.c.id.in_(ids))).tuples().all())
    return {i: int(found[i]) - 1 if i in found else POSITION_CAP for i in ids}


def _head_work(conn: Connection, limit: int) -> list[tuple[str, float]]:
    """(model, steps x images) of the first `limit` queued jobs in claim order."""
    if limit <= 0:
        return []
    g = generations.c
    rows = conn.execute(
        select(g.model, g.progress_total * g.n)
        .where(g.status == Status.QUEUED.value)
        .order_by(*claim_order())
        .limit(limit)
    ).tuples()
    return [(str(m), float(w or 0)) for m, w in rows]
