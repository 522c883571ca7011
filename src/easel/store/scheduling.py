"""The fair scheduler's records: rounds, the class clock, queue caps' counts, model speeds and the
queue estimates (position, ETA).

Fair queuing by rounds (start-time fair queuing with one unit per job). Every queued job carries a
round, `generations.fair_tag`, set when it is queued (created or retried) in the create transaction,
under the project's row lock:

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

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from easel.domain.generation import Status
from easel.domain.scheduling import TIMING_WEIGHT, Work, estimate_seconds
from easel.store.tables import generation_keys, generations, model_timings, queue_clock, workers

_UNFINISHED = (Status.QUEUED.value, Status.RUNNING.value)


def _insert(conn: Connection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def claim_order() -> list[Any]:
    """The order jobs are claimed in: priority class, round, age, id."""
    g = generations.c
    return [g.priority.desc(), g.fair_tag, g.created_at, g.id]


def next_round(conn: Connection, project_id: str, priority: int) -> int:
    """The round of a job this project queues now in this class (see the module's docstring)."""
    clock = conn.execute(select(queue_clock.c.round).where(queue_clock.c.priority == priority)).scalar()
    last = conn.execute(
        select(func.max(generations.c.fair_tag)).where(
            generations.c.project_id == project_id,
            generations.c.status.in_(_UNFINISHED),
            generations.c.priority == priority,
        )
    ).scalar()
    now = int(clock or 0)
    return now if last is None else max(now, int(last) + 1)


def advance_clock(conn: Connection, priority: int, round_: int) -> None:
    """Move the class's clock forward to `round_` (never back). On PostgreSQL a clock row another
    claimer holds is skipped, not waited for: that claimer is moving it to about the same round."""
    q = select(queue_clock.c.round).where(queue_clock.c.priority == priority)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    current = conn.execute(q).scalar()
    if current is None:  # no row (a class first seen), or locked by a concurrent claimer
        stmt = _insert(conn)(queue_clock).values(priority=priority, round=round_).on_conflict_do_nothing()
        conn.execute(stmt)
    elif current < round_:
        conn.execute(
            update(queue_clock)
            .where(queue_clock.c.priority == priority, queue_clock.c.round < round_)
            .values(round=round_)
        )


def queued_count(conn: Connection, project_id: str, key_id: str | None, at_most: int) -> int:
    """Queued jobs of this project (of this key, when given), counted up to `at_most`."""
    q = select(generations.c.id).where(
        generations.c.project_id == project_id, generations.c.status == Status.QUEUED.value
    )
    if key_id is not None:
        q = q.join(generation_keys, generation_keys.c.generation_id == generations.c.id).where(
            generation_keys.c.key_id == key_id
        )
    return int(conn.execute(select(func.count()).select_from(q.limit(at_most).subquery())).scalar_one())


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
        _insert(conn)(model_timings)
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


def timings(conn: Connection) -> dict[str, float]:
    """Each measured model's seconds per step and image."""
    rows = conn.execute(select(model_timings.c.model, model_timings.c.seconds_per_step)).all()
    return {r.model: float(r.seconds_per_step) for r in rows}


def not_expired(now: datetime) -> Any:
    return or_(generations.c.deadline_at.is_(None), generations.c.deadline_at > now)


def _ahead_of(row: Any) -> Any:
    """Queued jobs that a claim takes before `row` (the claim order)."""
    g = generations.c
    return or_(
        g.priority > row.priority,
        and_(
            g.priority == row.priority,
            or_(
                g.fair_tag < row.fair_tag,
                and_(
                    g.fair_tag == row.fair_tag,
                    or_(g.created_at < row.created_at, and_(g.created_at == row.created_at, g.id < row.id)),
                ),
            ),
        ),
    )


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

    The cost does not grow with the queue: the position is a count of at most POSITION_CAP index
    entries (queued jobs whose deadline passed count until a claim or a read sweeps them), and the work
    ahead is measured on at most ETA_SAMPLE of those jobs, scaled to their number."""
    active = [r for r in rows if r.status in _UNFINISHED]
    if not active:
        return {}
    g = generations.c
    speeds = timings(conn)
    live = int(
        conn.execute(
            select(func.count()).select_from(workers).where(workers.c.last_seen_at >= now - live_within)
        ).scalar_one()
    )
    running = [
        Work(r.model, float(r.work or 0))
        for r in conn.execute(
            select(g.model, func.sum((g.progress_total - g.progress_step) * g.n).label("work"))
            .where(g.status == Status.RUNNING.value)
            .group_by(g.model)
        )
    ]
    out: dict[str, tuple[int | None, float | None]] = {}
    for r in active:
        if r.status == Status.RUNNING.value:
            left = Work(r.model, float(max(0, r.progress_total - r.progress_step) * r.n))
            out[r.id] = (None, estimate_seconds([], left, speeds, live) if live else None)
            continue
        ahead = [g.status == Status.QUEUED.value, _ahead_of(r)]
        counted = select(g.id).where(*ahead).limit(POSITION_CAP).subquery()
        jobs_ahead = int(conn.execute(select(func.count()).select_from(counted)).scalar_one())
        position = 1 + jobs_ahead
        if not live:
            out[r.id] = (position, None)
            continue
        sample = (
            select(g.model, (g.progress_total * g.n).label("work"))
            .where(*ahead, not_expired(now))
            .limit(ETA_SAMPLE)
            .subquery()
        )
        sampled = conn.execute(
            select(
                sample.c.model, func.count().label("jobs"), func.sum(sample.c.work).label("work")
            ).group_by(sample.c.model)
        ).all()
        seen = sum(int(a.jobs) for a in sampled)
        scale = jobs_ahead / seen if seen else 0.0
        work = running + [Work(a.model, float(a.work or 0) * scale) for a in sampled]
        mine = Work(r.model, float(r.progress_total * r.n)) if own else None
        out[r.id] = (position, estimate_seconds(work, mine, speeds, live))
    return out
