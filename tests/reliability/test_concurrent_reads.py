"""Readers never block and nothing reports a locked database: one `easel serve` (its worker and its
webhook dispatcher running) takes concurrent creates, lists, gets and delivery-log reads for a few
seconds while the worker completes jobs and the dispatcher delivers their webhooks. Afterwards every
create answered 201 is a row, every request was answered, and the server's log has no "database is
locked" (SQLite) or deadlock (PostgreSQL) and no error line."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from processes import easel_env, start_serve
from support import key_headers
from webhook_receiver import Receiver

pytestmark = pytest.mark.slow

SECONDS, CREATORS, READERS, PER_CREATOR = 6.0, 6, 6, 12


def test_creates_reads_worker_and_dispatcher_side_by_side(
    settings: Any, admin_key: str, tmp_path: Path
) -> None:
    receiver = Receiver()
    env = easel_env(
        settings, fetch_allow_hosts="127.0.0.1", webhook_poll_seconds="0.2", idle_check_seconds="0.2"
    )
    proc, url = start_serve(env, tmp_path / "serve.log")
    created: list[str] = []
    answers: dict[str, int] = {}
    try:
        h = key_headers(admin_key)
        r = httpx.post(f"{url}/api/v1/webhooks/endpoints", json={"url": receiver.url()}, headers=h)
        assert r.status_code == 201, r.text

        async def load() -> None:
            limits = httpx.Limits(max_connections=CREATORS + READERS)
            async with httpx.AsyncClient(base_url=url, headers=h, timeout=60, limits=limits) as client:
                stop = time.monotonic() + SECONDS

                def count(resp: httpx.Response) -> None:
                    key = f"{resp.request.method} {resp.status_code}"
                    answers[key] = answers.get(key, 0) + 1

                async def creator(i: int) -> None:
                    n = 0
                    while time.monotonic() < stop and n < PER_CREATOR:
                        body = {"prompt": f"c{i}-{n}", "size": "32x32", "steps": 2, "seed": n}
                        resp = await client.post("/api/v1/generations", json=body)
                        count(resp)
                        if resp.status_code == 201:
                            created.append(resp.json()["data"]["id"])
                        n += 1

                async def reader(i: int) -> None:
                    rng = random.Random(i)
                    while time.monotonic() < stop:
                        path, params = rng.choice(
                            [
                                ("/api/v1/generations", {"limit": 50}),
                                ("/api/v1/generations", {"status": "pending,processing", "limit": 20}),
                                ("/api/v1/images", {"limit": 50}),
                                ("/api/v1/webhooks/messages", {"limit": 20}),
                                ("/api/v1/folders", {}),
                            ]
                        )
                        if created and rng.random() < 0.3:
                            path, params = f"/api/v1/generations/{rng.choice(created)}", {}
                        count(await client.get(path, params=params))

                await asyncio.gather(
                    *(creator(i) for i in range(CREATORS)), *(reader(i) for i in range(READERS))
                )

        asyncio.run(load())
        assert created, answers
        assert set(answers) <= {"POST 201", "GET 200"}, answers
        deadline = time.monotonic() + 120
        while True:  # the worker finishes what was queued; the dispatcher delivers as it goes
            listed = httpx.get(
                f"{url}/api/v1/generations", params={"status": "pending,processing", "limit": 1}, headers=h
            ).json()["pagination"]
            if not listed["hasMore"] and listed["total"] == 0:
                break
            assert time.monotonic() < deadline, listed
            time.sleep(0.5)
        everything = httpx.get(f"{url}/api/v1/generations", params={"includeTotal": "true"}, headers=h).json()
        assert everything["pagination"]["total"] == len(created)
        assert receiver.wait(1, timeout=30), "no webhook was delivered"
    finally:
        proc.stop(60)
        receiver.close()
    log = proc.output()
    for bad in ("database is locked", "deadlock detected", "Traceback", " ERROR ", " CRITICAL "):
        assert bad not in log, proc.tail(8000)
