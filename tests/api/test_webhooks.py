"""Webhooks end to end on both databases: a real HTTP receiver on loopback, deliveries checked with the
`standardwebhooks` library, retries, 410, redirects, SSRF refusals, the outbox's durability, the log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from easel.domain.generation import ImageFile
from easel.domain.spec import GenerationSpec
from easel.domain.webhooks import MAX_ATTEMPTS
from easel.runtime import Runtime
from easel.store.repository import new_id
from easel.store.tables import utcnow, webhook_messages
from webhook_receiver import Received, Receiver

GEN = "/api/v1/generations"
EP = "/api/v1/webhooks/endpoints"
MSG = "/api/v1/webhooks/messages"


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """conftest's settings, with the receiver's address allowed and retries in fractions of a second."""
    return settings.model_copy(
        update={
            "fetch_allow_hosts": ["127.0.0.1"],
            "webhook_retry_base_seconds": 0.01,  # retries after ~0.01 s, ~0.6 s, ~3.6 s, ...
            "webhook_poll_seconds": 0.05,
            "webhook_timeout_seconds": 5.0,
        }
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def img(gid: str, index: int = 0) -> ImageFile:
    return ImageFile(
        id=new_id(),
        index=index,
        seed=7 + index,
        storage_key=f"t/{gid}/{index}.png",
        mime="image/png",
        width=32,
        height=32,
        bytes=3,
        sha256="0" * 64,
    )


def create(api: Any, **body: Any) -> str:
    r = api.post(GEN, json={"prompt": "a red circle", **body})
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def succeed(runtime: Runtime, gid: str, n: int = 1) -> list[ImageFile]:
    """Run the job without a model: claim it and complete it with made-up image records."""
    [job] = runtime.queue.claim_batch("test-worker", models=None, max_images=8)
    assert job.id == gid
    images = [img(gid, i) for i in range(n)]
    assert runtime.queue.complete(job, images, 5)
    return images


def endpoint(api: Any, url: str, **body: Any) -> dict[str, Any]:
    r = api.post(EP, json={"url": url, **body})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    assert data["secret"].startswith("whsec_")
    return data


def messages(api: Any, **params: Any) -> list[dict[str, Any]]:
    r = api.get(MSG, params=params)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["data"]
    return out


def wait_message(api: Any, mid: str, done: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data: dict[str, Any] = api.get(f"{MSG}/{mid}").json()["data"]
        if done(data):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.02)


def flip(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


def verify(secret: str, got: Received) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(got.body, got.headers)
    return payload


# -- signing and payload ----------------------------------------------------------------------------


def test_endpoint_delivery_verifies_and_a_changed_byte_does_not(
    api: Any, runtime: Runtime, receiver: Receiver
) -> None:
    secret = endpoint(api, receiver.url())["secret"]
    gid = create(api, meta={"order": 42})
    images = succeed(runtime, gid, n=2)
    [got] = receiver.wait(1)

    payload = verify(secret, got)
    assert payload["type"] == "generation.succeeded"
    data = payload["data"]
    assert data["id"] == gid and data["status"] == "succeeded" and data["error"] is None
    assert [i["id"] for i in data["images"]] == [i.id for i in images]
    assert data["images"][0]["path"] == f"/api/v1/images/{images[0].id}"
    assert data["meta"] == {"order": 42} and data["prompt"] == "a red circle"
    assert got.headers["webhook-id"].startswith("msg_")
    assert got.headers["content-type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60

    # Any single changed byte of the body, or a changed id or timestamp, fails verification.
    for at in (0, len(got.body) // 2, len(got.body) - 1):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(flip(got.body, at), got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(got.body, got.headers | {"webhook-id": got.headers["webhook-id"] + "x"})
    ts = str(int(got.headers["webhook-timestamp"]) - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(got.body, got.headers | {"webhook-timestamp": ts})
    other = endpoint(api, receiver.url("/other"))["secret"]
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(got.body, got.headers)

    [msg] = messages(api, generationId=gid)
    # the receiver has the request before the dispatcher has read its answer and recorded the delivery
    msg = wait_message(api, msg["id"], lambda m: m["status"] == "delivered")
    assert msg["id"] == got.headers["webhook-id"] and msg["attempts"] == 1


def test_per_request_webhook_signed_with_the_project_secret(
    api: Any, runtime: Runtime, receiver: Receiver
) -> None:
    gid = create(api, webhook=receiver.url("/mine?token=abc"))
    succeed(runtime, gid)
    [got] = receiver.wait(1)
    assert got.path == "/mine?token=abc"
    secret = api.get("/api/v1/webhooks/secret").json()["data"]["secret"]
    assert verify(secret, got)["data"]["id"] == gid


def test_rotation_signs_with_both_secrets_during_the_grace(
    api: Any, runtime: Runtime, receiver: Receiver
) -> None:
    ep = endpoint(api, receiver.url())
    rotated = api.post(f"{EP}/{ep['id']}/rotate-secret").json()["data"]
    assert rotated["secret"] != ep["secret"] and rotated["previousSecretExpiresAt"] is not None
    assert "secret" not in api.get(f"{EP}/{ep['id']}").json()["data"]  # shown on create/rotate only
    succeed(runtime, create(api))
    [got] = receiver.wait(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    verify(ep["secret"], got)  # receivers still on the old secret keep working...
    verify(rotated["secret"], got)  # ...and those already on the new one too


# -- retries and failures ---------------------------------------------------------------------------


def test_500_500_200_delivers_attempt_3_with_the_same_id(api: Any, runtime: Runtime) -> None:
    receiver = Receiver([500, 500, 200])
    try:
        secret = endpoint(api, receiver.url())["secret"]
        gid = create(api)
        succeed(runtime, gid)
        got = receiver.wait(3)
    finally:
        receiver.close()
    assert len({g.headers["webhook-id"] for g in got}) == 1
    assert [g.headers["easel-webhook-attempt"] for g in got] == ["1", "2", "3"]
    assert len({g.body for g in got}) == 1  # the same bytes every time
    for g in got:
        assert verify(secret, g)["data"]["id"] == gid  # each attempt freshly signed
    mid = got[0].headers["webhook-id"]
    msg = wait_message(api, mid, lambda m: m["status"] == "delivered")
    assert msg["attempts"] == 3 and msg["lastStatusCode"] == 200
    assert [(a["attempt"], a["statusCode"], a["outcome"]) for a in msg["attemptLog"]] == [
        (1, 500, "retry"),
        (2, 500, "retry"),
        (3, 200, "delivered"),
    ]
    assert msg["payload"]["data"]["id"] == gid


def test_410_disables_the_endpoint(api: Any, runtime: Runtime) -> None:
    receiver = Receiver(default=410)
    try:
        ep = endpoint(api, receiver.url())
        succeed(runtime, create(api))
        [got] = receiver.wait(1)
        msg = wait_message(api, got.headers["webhook-id"], lambda m: m["status"] != "pending")
        assert msg["status"] == "disabled" and msg["lastStatusCode"] == 410
        data = api.get(f"{EP}/{ep['id']}").json()["data"]
        assert data["enabled"] is False and "410" in data["disabledReason"]
        # A disabled endpoint gets no new messages, until it is enabled again.
        gid = create(api)
        succeed(runtime, gid)
        assert messages(api, generationId=gid) == []
        assert api.patch(f"{EP}/{ep['id']}", json={"enabled": True}).json()["data"]["enabled"] is True
        time.sleep(0.3)
        assert len(receiver.requests) == 1
    finally:
        receiver.close()


def test_410_on_a_request_url_stops_retrying(api: Any, runtime: Runtime) -> None:
    receiver = Receiver(default=410)
    try:
        succeed(runtime, create(api, webhook=receiver.url()))
        [got] = receiver.wait(1)
        msg = wait_message(api, got.headers["webhook-id"], lambda m: m["status"] != "pending")
        assert msg["status"] == "disabled" and msg["nextAttemptAt"] is None
        time.sleep(0.8)  # past the second attempt's time: none is made
        assert len(receiver.requests) == 1
    finally:
        receiver.close()


def test_a_redirect_is_not_followed(api: Any, runtime: Runtime) -> None:
    target = Receiver()
    bouncer = Receiver(default=302, redirect_to=target.url("/stolen"))
    try:
        endpoint(api, bouncer.url())
        succeed(runtime, create(api))
        [got] = bouncer.wait(1)
        msg = wait_message(api, got.headers["webhook-id"], lambda m: m["attemptLog"])
        first = msg["attemptLog"][0]
        assert first["statusCode"] == 302 and first["outcome"] == "retry"
        assert "not followed" in first["error"] and msg["status"] == "pending"
        bouncer.wait(2)  # the retry goes to the endpoint again, not to the redirect's target
        assert target.requests == []
    finally:
        bouncer.close()
        target.close()


def test_every_attempt_failing_ends_failed(api: Any, runtime: Runtime) -> None:
    """All attempts of the schedule, then `failed`; redelivery grants one more attempt."""
    rt = runtime
    receiver = Receiver(default=503)
    try:
        gid = create(api, webhook=receiver.url())
        succeed(rt, gid)
        [msg] = messages(api, generationId=gid)
        # Jump over the waits: whenever the message waits for its next attempt, make it due now.
        deadline = time.monotonic() + 60
        while api.get(f"{MSG}/{msg['id']}").json()["data"]["status"] == "pending":
            assert time.monotonic() < deadline
            with rt.repo.engine.begin() as conn:
                conn.execute(
                    update(webhook_messages)
                    .where(
                        webhook_messages.c.id == msg["id"],
                        webhook_messages.c.status == "pending",
                        webhook_messages.c.claim_token.is_(None),  # not while an attempt is in flight
                    )
                    .values(next_attempt_at=utcnow())
                )
            time.sleep(0.02)
        data = wait_message(api, msg["id"], lambda m: m["status"] == "failed")
        assert data["attempts"] == MAX_ATTEMPTS and data["lastStatusCode"] == 503
        assert data["attemptLog"][-1]["outcome"] == "failed"
        time.sleep(0.2)
        assert len(receiver.requests) == MAX_ATTEMPTS

        receiver.default = 200
        r = api.post(f"{MSG}/{msg['id']}/redeliver")
        assert r.status_code == 202, r.text
        again = receiver.wait(MAX_ATTEMPTS + 1)[-1]
        assert again.headers["webhook-id"] == msg["id"]
        done = wait_message(api, msg["id"], lambda m: m["status"] == "delivered")
        assert done["attempts"] == MAX_ATTEMPTS + 1
    finally:
        receiver.close()


# -- SSRF ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "ftp://example.com/hook",
        "http://user:pw@127.0.0.1/hook",
    ],
)
def test_endpoint_at_a_refused_url_is_a_400_naming_the_field(api: Any, url: str) -> None:
    r = api.post(EP, json={"url": url})
    assert r.status_code == 400, r.text
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["url"]
    assert api.get(EP).json()["data"] == []


def test_private_address_never_connected(api: Any, runtime: Runtime) -> None:
    """A listener on 127.0.0.2 (loopback, not allow-listed): refused at creation, and a request's own
    webhook URL pointing there is refused at delivery, without a connection."""
    private = Receiver(host="127.0.0.2")
    try:
        r = api.post(EP, json={"url": private.url()})
        assert r.status_code == 400 and "loopback" in r.json()["error"]["message"]
        gid = create(api, webhook=private.url())
        succeed(runtime, gid)
        [msg] = messages(api, generationId=gid)
        msg = wait_message(api, msg["id"], lambda m: m["status"] != "pending")
        assert msg["status"] == "failed" and "loopback" in msg["lastError"]
        time.sleep(0.2)
        assert private.requests == []
    finally:
        private.close()


def test_native_webhook_field_must_be_http(api: Any) -> None:
    for bad in ("ftp://example.com/x", "example.com/hook", "javascript:alert(1)"):
        r = api.post(GEN, json={"prompt": "x", "webhook": bad})
        assert r.status_code == 400, r.text
        assert [f["field"] for f in r.json()["error"]["fields"]] == ["webhook"]


# -- events, filters, the outbox -----------------------------------------------------------------


def test_failed_and_canceled_events_and_filters(api: Any, runtime: Runtime, receiver: Receiver) -> None:
    only_failed = Receiver()
    try:
        endpoint(api, receiver.url())  # every event
        endpoint(api, only_failed.url(), eventTypes=["generation.failed"])
        failing = create(api)
        [job] = runtime.queue.claim_batch("w", models=None, max_images=8)
        assert runtime.queue.fail(job, "generation_failed", "boom")
        canceled = create(api)
        assert api.post(f"{GEN}/{canceled}/cancel").status_code == 200
        api.post(f"{GEN}/{canceled}/cancel")  # canceling again sends nothing more

        got = receiver.wait(2)
        by_type = {json.loads(g.body)["type"]: json.loads(g.body)["data"] for g in got}
        assert by_type["generation.failed"]["id"] == failing
        assert by_type["generation.failed"]["error"] == {"code": "generation_failed", "message": "boom"}
        assert by_type["generation.canceled"]["id"] == canceled
        [f] = only_failed.wait(1)
        assert json.loads(f.body)["data"]["id"] == failing
        time.sleep(0.3)
        assert len(receiver.requests) == 2 and len(only_failed.requests) == 1
    finally:
        only_failed.close()


def test_unknown_event_type_is_a_400(api: Any, receiver: Receiver) -> None:
    r = api.post(EP, json={"url": receiver.url(), "eventTypes": ["generation.exploded"]})
    assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == "eventTypes"


def test_no_message_when_the_completion_is_fenced_out(runtime: Runtime, receiver: Receiver) -> None:
    """The outbox row commits with the job's final state, or not at all."""
    pid = runtime.default_project_id
    runtime.webhooks.create_endpoint(pid, receiver.url(), [])
    gen = runtime.generations.submit(runtime.principal(pid), GenerationSpec(prompt="x"))
    [job] = runtime.queue.claim_batch("w", models=None, max_images=8)
    runtime.generations.cancel(pid, gen.id)  # canceled meanwhile: one generation.canceled message
    assert not runtime.queue.complete(job, [img(gen.id)], 5)
    assert not runtime.queue.fail(job, "x", "y")
    found = runtime.webhooks.store.messages(pid, generation_id=gen.id)
    msgs, total = found.items, found.total
    assert total == 1 and msgs[0].event_type == "generation.canceled"


def test_delivered_after_restart(settings: Any, receiver: Receiver) -> None:
    """A process that committed a job's success and died before delivering: any process started
    later delivers it (the outbox is in the database, written with the job's final state)."""
    first = Runtime.build(settings)
    pid = first.default_project_id
    secret = first.webhooks.create_endpoint(pid, receiver.url(), []).secret
    gen = first.generations.submit(
        first.principal(pid), GenerationSpec(prompt="x", webhook_url=receiver.url("/req"))
    )
    [job] = first.queue.claim_batch("w", models=None, max_images=8)
    assert first.queue.complete(job, [img(gen.id)], 5)
    first.close()  # "killed": no dispatcher ever ran
    assert receiver.requests == []

    second = Runtime.build(settings)
    dispatcher = second.make_webhook_dispatcher()
    dispatcher.start()
    try:
        got = sorted(receiver.wait(2), key=lambda g: g.path)
    finally:
        dispatcher.stop()
        second.close()
    assert [g.path for g in got] == ["/hook", "/req"]
    assert verify(secret, got[0])["data"]["id"] == gen.id
    assert got[0].headers["webhook-id"] != got[1].headers["webhook-id"]  # one message per destination


# -- the delivery log -------------------------------------------------------------------------------


def test_delivery_log_pagination_filters_and_isolation(
    api: Any, runtime: Runtime, receiver: Receiver
) -> None:
    endpoint(api, receiver.url())
    gids = []
    for _ in range(3):
        gid = create(api)
        succeed(runtime, gid)
        gids.append(gid)
    receiver.wait(3)
    page = api.get(MSG, params={"limit": 2}).json()
    assert len(page["data"]) == 2 and page["pagination"]["total"] == 3 and page["pagination"]["hasMore"]
    assert [m["generationId"] for m in messages(api, generationId=gids[1])] == [gids[1]]
    assert api.get(MSG, params={"status": "bogus"}).status_code == 400
    assert api.get(f"{MSG}/msg_nope").status_code == 404

    # Another project's key sees none of it.
    other = runtime.repo.ensure_project("other")
    key, _ = runtime.keys.create(other, "k", ["generations:read", "generations:write"], rate_limit_per_hour=0)
    headers = {"Authorization": f"Bearer {key}"}
    assert api.get(MSG, headers=headers).json()["data"] == []
    mid = messages(api)[0]["id"]
    assert api.get(f"{MSG}/{mid}", headers=headers).status_code == 404
    assert api.post(f"{MSG}/{mid}/redeliver", headers=headers).status_code == 404
    assert api.get(EP, headers=headers).status_code == 403  # endpoints need admin


def test_endpoint_delete_stops_pending_messages(api: Any, runtime: Runtime) -> None:
    receiver = Receiver(default=500)
    try:
        ep = endpoint(api, receiver.url())
        gid = create(api)
        succeed(runtime, gid)
        receiver.wait(1)
        assert api.delete(f"{EP}/{ep['id']}").status_code == 200
        [msg] = messages(api, generationId=gid)
        msg = wait_message(api, msg["id"], lambda m: m["status"] == "disabled")
        assert msg["lastError"] == "endpoint deleted"
        assert api.get(f"{EP}/{ep['id']}").status_code == 404
    finally:
        receiver.close()


def test_deleting_an_unfinished_generation_sends_canceled(api: Any, receiver: Receiver) -> None:
    gid = create(api, webhook=receiver.url())
    assert api.delete(f"{GEN}/{gid}").status_code == 200
    [got] = receiver.wait(1)
    payload = json.loads(got.body)
    assert payload["type"] == "generation.canceled" and payload["data"]["id"] == gid
    assert payload["data"]["error"] == {"code": "canceled", "message": "Deleted by request"}
    done = create(api, webhook=receiver.url())
    api.post(f"{GEN}/{done}/cancel")
    api.delete(f"{GEN}/{done}")  # already finished: deleting it sends nothing more
    assert messages(api, generationId=done)[0]["eventType"] == "generation.canceled"
    assert len(messages(api, generationId=done)) == 1


def test_native_webhook_is_echoed(api: Any) -> None:
    r = api.post(GEN, json={"prompt": "x", "webhook": " https://example.com/h?x=1 "})
    assert r.status_code == 201 and r.json()["data"]["webhook"] == "https://example.com/h?x=1"
    assert api.post(GEN, json={"prompt": "x"}).json()["data"]["webhook"] is None
