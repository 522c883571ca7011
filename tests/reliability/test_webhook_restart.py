"""`easel serve` killed (SIGKILL) after a job succeeded and before its webhook went out: the outbox row
committed with the job, so the server started again delivers it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from processes import free_port
from support import settings_env, wait_healthy
from webhook_receiver import Receiver

pytestmark = pytest.mark.slow


def serve(settings: Any, port: int, log: Path, *, webhooks: bool, worker: bool) -> subprocess.Popen[bytes]:
    env = settings_env(
        settings,
        fetch_allow_hosts="127.0.0.1",
        webhooks_enabled="true" if webhooks else "false",
        webhook_poll_seconds="0.1",
    )
    args = [sys.executable, "-m", "easel", "serve", "--port", str(port), "--log-level", "warning"]
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([*args] + ([] if worker else ["--no-worker"]), env=env, stdout=out, stderr=out)


def test_success_committed_then_killed_is_delivered_after_restart(runtime, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver()
    log = tmp_path / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pid = runtime.default_project_id
    key, _ = runtime.keys.create(pid, "t", ["generations:write", "generations:read"], rate_limit_per_hour=0)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        # First life: a worker, and (standing in for "killed before it got to it") no dispatcher.
        first = serve(settings, port, log, webhooks=False, worker=True)
        try:
            wait_healthy(url, lambda: first.poll() is None, log.read_text)
            body = {"prompt": "a red circle", "size": "64x64", "steps": 2, "webhook": receiver.url("/done")}
            r = httpx.post(f"{url}/api/v1/generations", json=body, headers=headers, timeout=30)
            assert r.status_code == 201, r.text
            gid = r.json()["data"]["id"]
            deadline = time.monotonic() + 180
            while runtime.repo.get_generation(pid, gid).status.value != "succeeded":
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        msgs, _ = runtime.webhooks.store.messages(pid, generation_id=gid)
        assert [(m.status, m.attempts) for m in msgs] == [("pending", 0)]
        assert receiver.requests == []

        # Second life: the same database, dispatcher on (API only).
        second = serve(settings, port, log, webhooks=True, worker=False)
        try:
            wait_healthy(url, lambda: second.poll() is None, log.read_text)
            [got] = receiver.wait(1, timeout=60)
            # the receiver has the request before the server has recorded the delivery
            deadline = time.monotonic() + 60
            while runtime.webhooks.store.messages(pid, generation_id=gid)[0][0].status != "delivered":
                assert time.monotonic() < deadline, "the delivery was never recorded"
                time.sleep(0.05)
        finally:
            second.terminate()
            second.wait(60)
        assert got.path == "/done" and got.headers["webhook-id"] == msgs[0].id
        secret, _, _ = runtime.webhooks.store.project_secret(pid)
        payload = Webhook(secret).verify(got.body, got.headers)
        assert payload["type"] == "generation.succeeded" and payload["data"]["id"] == gid
        assert len(payload["data"]["images"]) == 1
        [done], _ = runtime.webhooks.store.messages(pid, generation_id=gid)
        assert done.status == "delivered" and done.attempts == 1
    finally:
        receiver.close()
