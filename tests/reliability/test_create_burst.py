"""An API process killed with SIGKILL during a burst of creates: every create answered 201 exists.

One `easel serve --no-worker` process takes 500 concurrent POST /api/v1/generations (50 in flight); once
150 have been answered 201 it is SIGKILLed. Every id that was answered 201 must then be in the database,
queued, and the database must be sound (SQLite: PRAGMA integrity_check).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from easel.domain.generation import Status
from easel.store.tables import generations
from processes import easel_env, start_api
from support import key_headers

pytestmark = pytest.mark.slow

TOTAL, IN_FLIGHT, KILL_AFTER = 500, 50, 150


def test_sigkill_during_create_burst_loses_no_answered_create(
    runtime, settings, admin_key, tmp_path: Path
) -> None:
    api, url = start_api(easel_env(settings), tmp_path / "api.log")
    answered: list[str] = []
    other: dict[str, int] = {}
    started = time.monotonic()

    async def burst() -> None:
        gate = asyncio.Semaphore(IN_FLIGHT)
        limits = httpx.Limits(max_connections=IN_FLIGHT)
        async with httpx.AsyncClient(
            base_url=url, headers=key_headers(admin_key), timeout=30, limits=limits
        ) as client:

            async def create(i: int) -> None:
                async with gate:
                    try:
                        r = await client.post(
                            "/api/v1/generations", json={"prompt": f"burst {i}", "size": "64x64", "steps": 2}
                        )
                    except httpx.TransportError as e:
                        other[type(e).__name__] = other.get(type(e).__name__, 0) + 1
                        return
                if r.status_code == 201:
                    answered.append(r.json()["data"]["id"])
                    if len(answered) == KILL_AFTER:
                        os.kill(api.pid, signal.SIGKILL)
                else:
                    other[str(r.status_code)] = other.get(str(r.status_code), 0) + 1

            await asyncio.gather(*(create(i) for i in range(TOTAL)))

    try:
        asyncio.run(burst())
        api.kill()
    except BaseException:
        api.kill()
        print(api.tail())
        raise
    print(f"answered 201: {len(answered)}, otherwise: {other}, in {time.monotonic() - started:.1f} s")
    assert len(answered) >= KILL_AFTER, api.tail()
    assert len(answered) < TOTAL, "the server was not killed mid-burst"
    assert set(other) <= {"ConnectError", "ReadError", "RemoteProtocolError", "WriteError"}, other

    engine = runtime.repo.engine
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        rows = dict(
            conn.execute(
                select(generations.c.id, generations.c.status).where(generations.c.id.in_(answered))
            ).all()
        )
        stored = conn.execute(select(func.count()).select_from(generations)).scalar()
    missing = [gid for gid in answered if gid not in rows]
    assert not missing, f"{len(missing)} answered creates are lost: {missing[:5]}"
    assert set(rows.values()) == {Status.QUEUED.value}
    assert len(answered) <= stored <= TOTAL  # some unanswered creates may have committed too
    pid = runtime.default_project_id
    for gid in answered[:: max(1, len(answered) // 20)]:  # a sample loads whole through the repository
        assert runtime.repo.get_generation(pid, gid).status is Status.QUEUED
