"""The gateway end to end (docs/gateway.md), on SQLite and on PostgreSQL + S3: the official `openai` SDK
pointed at Easel gets images a second real Easel made, stored in Easel's own library; with the first
upstream stopped, a 50-job burst completes through the fallback, each job exactly once, and the ledger
shows both providers; retries honour Retry-After; a refusal fails at once, sanitised; the circuit opens
and closes; a cancel reaches the provider; Replicate's shape works; keys appear nowhere."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_provider import FakeProvider, picture
from gateway_rig import FAKE_KEY, Gateway
from PIL import Image
from sqlalchemy import select, text

from support import wait_for

GEN = "/api/v1/generations"


def create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    r = http.post(GEN, json={"prompt": "a red circle", "size": "64x64"} | body)
    assert r.status_code == 201, r.text
    return dict(r.json()["data"])


def wait(http: httpx.Client, gid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data = http.get(f"{GEN}/{gid}").json()["data"]
        if data["status"] in ("success", "failed", "canceled"):
            return dict(data)
        assert time.monotonic() < deadline, data
        time.sleep(0.05)


def calls(gw: Gateway, **params: Any) -> list[dict[str, Any]]:
    with gw.http() as http:
        r = http.get("/api/v1/admin/upstream/calls", params={"limit": 500} | params)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_the_openai_sdk_gets_images_the_upstream_made_stored_in_our_library(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0, timeout=60)
    result = client.images.generate(
        model="remote-b", prompt="a red circle", size="64x64", n=2, response_format="b64_json"
    )
    assert len(result.data) == 2
    for item in result.data:
        assert item.b64_json is not None
        assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (64, 64)
    [call] = calls(gateway)
    assert (call["provider"], call["model"], call["status"], call["images"]) == (
        "upstream-b",
        "remote-b",
        "ok",
        2,
    )
    assert call["credential"] == "env:UPSTREAM_B_KEY" and call["credits"] == 2
    assert call["requestId"] is None  # an Easel upstream sends no x-request-id (the fake provider does)
    with gateway.http() as http:
        gen = http.get(f"{GEN}/{call['generationId']}").json()["data"]
        assert gen["status"] == "success"
        assert gen["servedBy"] == {
            "model": "remote-b",
            "provider": "upstream-b",
            "requestId": call["requestId"],
        }
        images = http.get("/api/v1/images", params={"model": "remote-b"}).json()["data"]
        assert len(images) == 2
        link = images[0]["storageUrl"]  # Easel's own signed link, never the provider's
        assert link.startswith(gateway.url)
        stored = http.get(link)
        assert stored.status_code == 200 and stored.content.startswith(b"\x89PNG")


def test_a_burst_completes_through_the_fallback_exactly_once(gateway: Gateway) -> None:
    """upstream-a is stopped: every job of 50 is served by upstream-b, once, and the ledger shows both."""
    with gateway.http() as http:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            made = list(pool.map(lambda i: create(http, model="remote-a", seed=i), range(50)))
        ended = [wait(http, g["id"], timeout=180) for g in made]
    assert [g["status"] for g in ended] == ["success"] * 50, [g["errorMessage"] for g in ended]
    assert {g["servedBy"]["provider"] for g in ended} == {"upstream-b"}
    assert all(len(g["outputImageIds"]) == 1 for g in ended)
    rows = calls(gateway)
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted(r["generationId"] for r in ok) == sorted(g["id"] for g in made)  # each exactly once
    assert {r["provider"] for r in ok} == {"upstream-b"}
    first = [r for r in rows if r["provider"] == "upstream-a"]
    assert {r["status"] for r in first} <= {"failed", "skipped"} and first
    assert any(r["errorCode"] == "circuit_open" for r in first)  # after 3 failures it was skipped
    with gateway.http() as http:
        providers = {p["id"]: p for p in http.get("/api/v1/admin/upstream/providers").json()["data"]}
        assert providers["upstream-a"]["circuit"]["state"] == "open"
        assert providers["upstream-b"]["circuit"]["state"] == "closed"
        usage = http.get("/api/v1/admin/upstream/usage").json()["data"]
        by_provider = {u["provider"]: u for u in usage}
        assert by_provider["upstream-b"]["ok"] == 50 and by_provider["upstream-b"]["images"] == 50
        metrics = http.get("/metrics").text
    assert 'easel_upstream_circuit_open{provider="upstream-a"} 1.0' in metrics
    assert 'easel_upstream_call_duration_seconds_count{provider="upstream-b"} 50.0' in metrics


def test_retries_honour_retry_after_then_succeed(gateway: Gateway, fake: FakeProvider) -> None:
    fake.modes = ["429", "500"]
    with gateway.http() as http:
        gen = wait(http, create(http, model="flaky")["id"])
    assert gen["status"] == "success", gen
    [call] = calls(gateway, provider="fake")
    assert (call["status"], call["retries"], call["requestId"]) == ("ok", 2, "fake-3")
    assert len(fake.calls) == 3
    sent = fake.calls[-1]
    assert sent["body"]["model"] == "fake-model" and sent["body"]["size"] == "64x64"
    assert sent["headers"]["authorization"] == f"Bearer {FAKE_KEY}"
    assert sent["headers"]["traceparent"].split("-")[1] == call["traceId"]


def test_a_broken_provider_falls_back_after_its_retries(gateway: Gateway, fake: FakeProvider) -> None:
    fake.default = "malformed"
    with gateway.http() as http:
        gen = wait(http, create(http, model="flaky-then-b")["id"])
    assert gen["status"] == "success" and gen["servedBy"]["provider"] == "upstream-b", gen
    first, second = sorted(calls(gateway), key=lambda c: c["createdAt"])
    assert (first["provider"], first["status"], first["errorCode"], first["retries"]) == (
        "fake",
        "failed",
        "upstream_malformed",
        2,
    )
    assert (second["provider"], second["status"]) == ("upstream-b", "ok")


def test_a_refusal_fails_at_once_with_a_sanitised_message(
    gateway: Gateway, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.default = "policy"
    with gateway.http() as http:
        gen = wait(http, create(http, model="flaky-then-b")["id"])
        metrics = http.get("/metrics").text
    assert 'easel_upstream_errors_total{code="upstream_rejected",provider="fake"} 1.0' in metrics
    assert FAKE_KEY not in metrics and FAKE_KEY not in caplog.text  # nor in the logs
    assert gen["status"] == "failed" and gen["errorCode"] == "upstream_rejected", gen
    assert "safety system" in gen["errorMessage"] and FAKE_KEY not in gen["errorMessage"]
    assert len(fake.calls) == 1  # not retried, no fallback
    [call] = calls(gateway)
    assert call["status"] == "rejected" and FAKE_KEY not in call["errorMessage"]
    with gateway.runtime.repo.engine.connect() as conn:  # the key is nowhere in the database
        for table in ("upstream_calls", "generations", "upstream_circuits"):
            dump = str(conn.execute(text(f"SELECT * FROM {table}")).all())
            assert FAKE_KEY not in dump, table


def test_the_circuit_opens_and_closes_again(gateway: Gateway, fake: FakeProvider) -> None:
    fake.default = "500"
    with gateway.http() as http:
        for _ in range(2):  # failures_to_open = 2, retries = 2: two jobs of three calls each
            assert wait(http, create(http, model="flaky")["id"])["errorCode"] == "upstream_unavailable"
        skipped = wait(http, create(http, model="flaky")["id"])
        assert skipped["status"] == "failed" and "circuit_open" in skipped["errorMessage"]
        assert len(fake.calls) == 6  # the third job did not reach the provider
        state = {p["id"]: p["circuit"] for p in http.get("/api/v1/admin/upstream/providers").json()["data"]}
        assert state["fake"]["state"] == "open"
        fake.default = "ok"
        time.sleep(0.6)  # the cooldown (0.5 s): the next job is the probe
        probe = wait(http, create(http, model="flaky")["id"])
        assert probe["status"] == "success", probe
        state = {p["id"]: p["circuit"] for p in http.get("/api/v1/admin/upstream/providers").json()["data"]}
        assert state["fake"]["state"] == "closed"


def test_a_cancel_aborts_the_call_in_flight(gateway: Gateway, fake: FakeProvider) -> None:
    fake.default = "slow"
    with gateway.http() as http:
        gen = create(http, model="flaky")
        wait_for(lambda: fake.calls, 30, "the call to reach the provider")
        assert http.post(f"{GEN}/{gen['id']}/cancel").status_code == 200
        wait_for(lambda: fake.disconnects, 30, "the provider to see the call aborted")
        assert wait(http, gen["id"])["status"] == "canceled"
    wait_for(lambda: calls(gateway), 10, "the canceled call's ledger row")
    assert calls(gateway)[0]["status"] == "canceled"


def test_replicate_predictions_are_polled_fetched_and_canceled(gateway: Gateway, fake: FakeProvider) -> None:
    with gateway.http() as http:
        gen = wait(http, create(http, model="replicated", n=2, seed=7)["id"])
        assert gen["status"] == "success" and len(gen["outputImageIds"]) == 2, gen
        sent = fake.calls[0]["body"]
        assert sent["input"]["num_outputs"] == 2 and sent["input"]["seed"] == 7
        assert gen["servedBy"]["requestId"] == "p1"
        fake.default = "slow"
        running = create(http, model="replicated")
        polled = lambda: fake.predictions.get("p2", {}).get("polls", 0) >= 1  # noqa: E731
        wait_for(polled, 30, "the second prediction to be polled")
        http.post(f"{GEN}/{running['id']}/cancel")
        wait_for(lambda: fake.cancels, 30, "the prediction to be canceled upstream")
    assert fake.cancels == ["p2"]


def test_what_a_remote_model_cannot_take_is_a_400_before_queueing(gateway: Gateway) -> None:
    with gateway.http() as http:
        r = http.post(GEN, json={"prompt": "x", "model": "flaky", "size": "512x512"})
        assert r.status_code == 400, r.text
        assert http.get(GEN).json()["data"] == []


def test_a_worker_that_stops_gives_its_jobs_back(gateway: Gateway, fake: FakeProvider) -> None:
    """Stopping the gateway worker aborts its calls and requeues their jobs (not failed, not lost)."""
    from easel.store.tables import generations

    fake.default = "slow"
    with gateway.http() as http:
        gen = create(http, model="flaky")
        wait_for(lambda: fake.calls, 30, "the call to reach the provider")
    gateway.app.state.upstream_worker.stop()
    with gateway.runtime.repo.engine.connect() as conn:
        row = conn.execute(
            select(generations.c.status, generations.c.attempts).where(generations.c.id == gen["id"])
        ).one()
    assert (row.status, row.attempts) == ("queued", 0)
    wait_for(lambda: fake.disconnects, 10, "the call in flight to be aborted")


def test_a_local_job_no_worker_claims_goes_to_its_remote_fallback(gateway: Gateway) -> None:
    """ "Our GPUs first": no local worker runs here, so after fallback_after_seconds the gateway serves it."""
    from datetime import datetime

    with gateway.http() as http:
        gen = wait(http, create(http, model="local-first")["id"])
    assert gen["status"] == "success", gen
    assert gen["servedBy"]["model"] == "remote-b" and gen["servedBy"]["provider"] == "upstream-b"
    waited = datetime.fromisoformat(gen["startedAt"]) - datetime.fromisoformat(gen["createdAt"])
    assert waited.total_seconds() >= 0.5  # not before it had waited


def test_an_inpaint_passes_its_source_and_mask_to_the_upstream(gateway: Gateway) -> None:
    source = Image.new("RGB", (64, 64), (30, 90, 200))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))  # white: paint here

    def data_uri(img: Image.Image) -> str:
        out = io.BytesIO()
        img.save(out, "PNG")
        return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()

    with gateway.http() as http:
        gen = create(
            http,
            model="remote-b",
            prompt="a red circle",
            sourceImageUrl=data_uri(source),
            maskImageUrl=data_uri(mask),
        )
        assert gen["task"] == "inpaint"
        done = wait(http, gen["id"])
    assert done["status"] == "success", done
    assert done["servedBy"]["provider"] == "upstream-b"


def test_the_output_check_refuses_a_blocklisted_image_before_it_is_stored(
    gateway: Gateway, fake: FakeProvider, tmp_path: Path
) -> None:
    from easel.service.output_checks import phash_blocklist

    (tmp_path / "blocked").mkdir()
    picture(96, 96, 0).save(tmp_path / "blocked" / "first.png")  # the fake's first image, at another size
    settings = gateway.runtime.settings.model_copy(update={"output_blocklist_dir": tmp_path / "blocked"})
    gateway.app.state.upstream_worker.output_check = phash_blocklist(settings)
    with gateway.http() as http:
        refused = wait(http, create(http, model="flaky", n=1)["id"])
        assert refused["status"] == "failed" and refused["errorCode"] == "output_rejected", refused
        assert "first.png" in refused["errorMessage"]
        assert http.get("/api/v1/images", params={"model": "flaky"}).json()["data"] == []  # nothing stored
