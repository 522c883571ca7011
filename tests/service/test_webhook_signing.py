"""Webhook signing, the retry schedule and URL vetting, without a database."""

from __future__ import annotations

import base64
import random
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook

from easel.domain.errors import ValidationFailed
from easel.domain.webhooks import MAX_ATTEMPTS, Delivery
from easel.service.fetch import ImageFetcher
from easel.service.webhooks import (
    RETRY_MULTIPLIERS,
    WebhookDispatcher,
    retry_delay,
    sign,
    signature_header,
)
from easel.settings import Settings
from easel.store.outbox import new_secret
from webhook_receiver import Receiver


def settings(**kw: Any) -> Settings:
    return Settings(**kw)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_secret_format() -> None:
    s = new_secret()
    assert s.startswith("whsec_") and len(base64.b64decode(s[6:])) == 32
    assert new_secret() != s


def test_signature_matches_the_reference_library() -> None:
    secret, body, ts = new_secret(), '{"type":"generation.succeeded","data":{"x":"é"}}', int(time.time())
    ours = sign(secret, "msg_1", ts, body)
    theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(ts, UTC), body)
    assert ours == theirs and ours.startswith("v1,")
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": ours}
    assert Webhook(secret).verify(body.encode(), headers)["data"]["x"] == "é"


def test_two_secrets_two_signatures_each_verifies() -> None:
    new, old, ts = new_secret(), new_secret(), int(time.time())
    header = signature_header([new, old], "msg_2", ts, "{}")
    assert len(header.split(" ")) == 2
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(ts), "webhook-signature": header}
    for s in (new, old):
        Webhook(s).verify(b"{}", headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(b"{}", headers)


def test_retry_schedule() -> None:
    assert len(RETRY_MULTIPLIERS) == MAX_ATTEMPTS - 1
    nominal = [5 * m for m in RETRY_MULTIPLIERS]
    assert nominal == [5, 300, 1800, 7200, 18000, 36000, 50400]  # 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h
    assert 31 * 3600 < sum(nominal) < 32 * 3600
    rng = random.Random(1)
    for attempt, expected in enumerate(nominal, start=1):
        delays = [retry_delay(attempt, 5.0, rng).total_seconds() for _ in range(200)]
        assert all(0.8 * expected <= d <= 1.2 * expected for d in delays)
        assert len(set(delays)) > 100  # jittered


def test_vet_url_rules() -> None:
    f = ImageFetcher(settings(fetch_allow_hosts=["127.0.0.1"]))
    for url, why in [
        ("http://10.0.0.1/h", "private"),
        ("http://127.0.0.2/h", "loopback"),
        ("http://[::ffff:169.254.169.254]/h", "metadata"),
        ("http://93.184.216.34:8080/h", "port 8080"),
        ("file:///etc/passwd", "scheme"),
        ("http://a:b@93.184.216.34/h", "user names"),
    ]:
        with pytest.raises(ValidationFailed) as e:
            f.vet_url(url, field="url")
        assert e.value.fields[0].field == "url" and why in e.value.message, (url, e.value.message)
    [target] = f.vet_url("http://127.0.0.1:9/x?y=1", field="url")
    assert target.address == "127.0.0.1:9" and target.host_header == "127.0.0.1:9"


def test_request_goes_to_the_vetted_address_with_the_original_host(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    """A name is resolved once, checked, and the request is sent to that address: a second DNS answer
    (rebinding) is never consulted. The Host header keeps the name."""
    answers = iter(["127.0.0.1", "10.9.9.9"])  # the second answer would point elsewhere
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *a: Any, **k: Any) -> Any:
        if host == "hooks.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]
        return real(host, port, *a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    s = settings(fetch_allow_hosts=["hooks.test"], webhook_timeout_seconds=5)
    dispatcher = WebhookDispatcher(s, store=None, fetcher=ImageFetcher(s))  # type: ignore[arg-type]
    secret = new_secret()
    d = Delivery(
        message_id="msg_x",
        project_id="p",
        endpoint_id=None,
        url=f"http://hooks.test:{receiver.port}/in",
        body='{"a":1}',
        attempt=1,
        max_attempts=MAX_ATTEMPTS,
        claim_token="t",
        secrets=[secret],
    )
    result = dispatcher._send(d)
    assert result.outcome == "delivered" and result.status_code == 200
    [got] = receiver.wait(1)
    assert got.headers["host"] == f"hooks.test:{receiver.port}" and got.path == "/in"
    assert Webhook(secret).verify(got.body, got.headers) == {"a": 1}


def test_refused_and_unreachable_outcomes(receiver: Receiver) -> None:
    s = settings(fetch_allow_hosts=["127.0.0.1"], webhook_timeout_seconds=2)
    dispatcher = WebhookDispatcher(s, store=None, fetcher=ImageFetcher(s))  # type: ignore[arg-type]

    def delivery(url: str) -> Delivery:
        return Delivery("msg_y", "p", None, url, "{}", 1, MAX_ATTEMPTS, "t", [new_secret()])

    refused = dispatcher._send(delivery("http://10.1.2.3/h"))
    assert refused.outcome == "failed" and "private" in (refused.error or "")
    with socket.socket() as closed:  # a port with nobody listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = dispatcher._send(delivery(f"http://127.0.0.1:{port}/h"))
    assert down.outcome == "retry" and "could not connect" in (down.error or "")
    receiver.default = 500
    err = dispatcher._send(delivery(receiver.url()))
    assert (err.outcome, err.status_code, err.response_body) == ("retry", 500, "nope")
