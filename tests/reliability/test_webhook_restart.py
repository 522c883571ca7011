"""`easel serve` killed (SIGKILL) after a job succeeded and before its webhook went out: the outbox row
committed with the job, so the server started again delivers it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from processes import EaselProcess, easel_env, start_serve
from webhook_receiver import Receiver

pytestmark = pytest.mark.slow


def serve(settings: Any, log: Path, *, webhooks: bool, worker: bool) -> tuple[EaselProcess, str]:
    env = easel_env(
        settings,
        fetch_allow_hosts="127.0.0.1",
        webhooks_enabled="true" if webhooks else "false",
        webhook_poll_seconds="0.1",
    )
    return start_serve(env, log, "--log-level", "warning", *([] if worker else ["--no-worker"]))


def test_success_committed_then_killed_is_delivered_after_restart(runtime, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver()
    log = tmp_path / "serve.log"
    pid = runtime.default_project_id
    key, _ = runtime.keys.create(pid, "t", ["generations:write", "generations:read"], rate_limit_per_hour=0)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        # First life: a worker, and (standing in for "killed before it got to it") no dispatcher.
        first, url = serve(settings, log, webhooks=False, worker=True)
        try:
            body = {"prompt": "a red circle", "size": "64x64", "steps": 2, "webhook": receiver.url("/done")}
            r = httpx.post(f"{url}/api/v1/generations", json=body, headers=headers, timeout=30)
            assert r.status_code == 201, r.text
            gid = r.json()["data"]["id"]
            deadline = time.monotonic() + 180
            while runtime.repo.get_generation(pid, gid).status.value != "succeeded":
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
        finally:
            first.kill()
        msgs = runtime.webhooks.store.messages(pid, generation_id=gid).items
        assert [(m.status, m.attempts) for m in msgs] == [("pending", 0)]
        assert receiver.requests == []

        # Second life: the same database, dispatcher on (API only).
        second, _ = serve(settings, log, webhooks=True, worker=False)
        try:
            [got] = receiver.wait(1, timeout=60)
            # the receiver has the request before the server has recorded the delivery
            deadline = time.monotonic() + 60
            while runtime.webhooks.store.messages(pid, generation_id=gid).items[0].status != "delivered":
                assert time.monotonic() < deadline, "the delivery was never recorded"
                time.sleep(0.05)
        finally:
            second.stop(60)
        assert got.path == "/done" and got.headers["webhook-id"] == msgs[0].id
        secret, _, _ = runtime.webhooks.store.project_secret(pid)
        payload = Webhook(secret).verify(got.body, got.headers)
        assert payload["type"] == "generation.succeeded" and payload["data"]["id"] == gid
        assert len(payload["data"]["images"]) == 1
        [done] = runtime.webhooks.store.messages(pid, generation_id=gid).items
        assert done.status == "delivered" and done.attempts == 1
    finally:
        receiver.close()
