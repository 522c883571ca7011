"""Webhooks: endpoint management (URLs vetted like image fetches), Standard Webhooks signing, and the
dispatcher that delivers the outbox (store/outbox.py). docs/webhooks.md is the long form.

The dispatcher runs as a thread inside `easel serve` (`EASEL_WEBHOOKS_ENABLED`, default on). Every
`serve` process may run one: claims are exclusive (FOR UPDATE SKIP LOCKED on PostgreSQL, the write lock
on SQLite), so several never send the same attempt. Delivery is at least once: a process killed after
a receiver answered but before the result was written sends that attempt again, with the same
`webhook-id`, which receivers use to drop duplicates.

One attempt: the URL is vetted again (scheme, port, every resolved address; `fetch_allow_hosts`), the
request goes to the vetted address itself with the original Host header, no proxies, no redirects
followed (a 3xx is a failure), one deadline (`webhook_timeout_seconds`). 2xx: delivered. 410 Gone: an
endpoint is disabled, a request's URL is not tried again. Anything else (other statuses, connection
errors, timeouts): retried on the schedule below, with jitter, until MAX_ATTEMPTS.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import logging
import random
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from easel.domain.errors import ValidationFailed
from easel.domain.pages import Page, PageRequest
from easel.domain.webhooks import EVENT_TYPES, MAX_ATTEMPTS, MESSAGE_STATES, Delivery, Endpoint, Message
from easel.service.fetch import ImageFetcher, VettedTarget, ssl_context
from easel.settings import Settings
from easel.store.outbox import WebhookStore
from easel.store.tables import utcnow

log = logging.getLogger(__name__)

USER_AGENT = "Easel-Webhooks/1.0"
# Delay before attempt k+1, in units of `webhook_retry_base_seconds` (5 s by default): 5 s, 5 min,
# 30 min, 2 h, 5 h, 10 h, 14 h -- about 31.6 hours from the first attempt to the eighth and last.
RETRY_MULTIPLIERS = (1, 60, 360, 1440, 3600, 7200, 10080)
JITTER = 0.2  # each delay is drawn from [0.8, 1.2] x its nominal value
RESPONSE_KEPT = 1000  # characters of a receiver's answer kept in the delivery log
assert len(RETRY_MULTIPLIERS) == MAX_ATTEMPTS - 1

# Refusals of the URL check that may pass later (DNS trouble) are retried; the rest are final.
_TRANSIENT_REFUSALS = ("could not be resolved", "has no IPv4 or IPv6 address", "took longer than")


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """A Standard Webhooks signature: `v1,` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")),
    the key being the base64 part of the `whsec_` secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: str) -> str:
    """Space-separated signatures, one per secret (two while a rotated-out secret is still valid)."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def retry_delay(attempt: int, base_seconds: float, rng: random.Random | None = None) -> timedelta:
    """How long after failed attempt number `attempt` (1-based) the next one is made."""
    nominal = base_seconds * RETRY_MULTIPLIERS[min(attempt, len(RETRY_MULTIPLIERS)) - 1]
    jitter = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return timedelta(seconds=nominal * jitter)


@dataclass(frozen=True)
class AttemptResult:
    outcome: str  # delivered | retry | failed | disabled
    status_code: int | None
    error: str | None
    response_body: str | None


class WebhookService:
    """What the API calls: endpoints (URLs vetted at creation), secrets, the delivery log."""

    def __init__(self, settings: Settings, store: WebhookStore, fetcher: ImageFetcher) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.grace = timedelta(hours=settings.webhook_secret_grace_hours)
        self._wake: threading.Event | None = None  # set by a running dispatcher

    def check_events(self, event_types: Sequence[str], field: str = "eventTypes") -> list[str]:
        unknown = [e for e in event_types if e not in EVENT_TYPES]
        if unknown:
            raise ValidationFailed.for_field(
                field, f"unknown event types {unknown}; allowed: {', '.join(EVENT_TYPES)}"
            )
        return list(dict.fromkeys(event_types))

    def create_endpoint(
        self, project_id: str, url: str, event_types: Sequence[str], description: str | None = None
    ) -> Endpoint:
        """A new endpoint; its URL must pass the SSRF checks now (and again at every delivery)."""
        self.fetcher.vet_url(url, field="url")
        events = self.check_events(event_types)
        return self.store.create_endpoint(project_id, url.strip(), events, description)

    def endpoints(self, project_id: str) -> list[Endpoint]:
        return self.store.endpoints(project_id)

    def endpoint(self, project_id: str, endpoint_id: str) -> Endpoint:
        return self.store.endpoint(project_id, endpoint_id)

    def update_endpoint(
        self,
        project_id: str,
        endpoint_id: str,
        *,
        enabled: bool | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
    ) -> Endpoint:
        """Enable (after a 410 disabled it) or disable an endpoint; change its event filter."""
        events = None if event_types is None else self.check_events(event_types)
        return self.store.update_endpoint(
            project_id, endpoint_id, enabled=enabled, event_types=events, description=description
        )

    def delete_endpoint(self, project_id: str, endpoint_id: str) -> None:
        self.store.delete_endpoint(project_id, endpoint_id)

    def project_secret(self, project_id: str) -> tuple[str, str | None, datetime | None]:
        return self.store.project_secret(project_id)

    def messages(
        self,
        project_id: str,
        *,
        generation_id: str | None,
        endpoint_id: str | None,
        status: str | None,
        page: PageRequest,
    ) -> Page[Message]:
        """The delivery log, newest first; `status` one of MESSAGE_STATES (400 otherwise)."""
        if status is not None and status not in MESSAGE_STATES:
            raise ValidationFailed.for_field(
                "status", f"unknown status {status!r}; allowed: {', '.join(MESSAGE_STATES)}"
            )
        return self.store.messages(
            project_id,
            generation_id=generation_id,
            endpoint_id=endpoint_id,
            status=status,
            page=page,
        )

    def message(self, project_id: str, message_id: str) -> Message:
        return self.store.message(project_id, message_id)

    def rotate_endpoint_secret(self, project_id: str, endpoint_id: str) -> Endpoint:
        return self.store.rotate_endpoint_secret(project_id, endpoint_id, self.grace)

    def rotate_project_secret(self, project_id: str) -> tuple[str, str | None, datetime | None]:
        return self.store.rotate_project_secret(project_id, self.grace)

    def redeliver(self, project_id: str, message_id: str) -> Message:
        msg = self.store.redeliver(project_id, message_id)
        if self._wake is not None:
            self._wake.set()
        return msg


class WebhookDispatcher:
    """Delivers due outbox messages. `run_forever` in a thread; `stop()` from another."""

    def __init__(
        self,
        settings: Settings,
        store: WebhookStore,
        fetcher: ImageFetcher,
        *,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.timeout = settings.webhook_timeout_seconds
        # A claim outlives the attempt (URL check + request) by a margin; after it, the message is due again.
        self.lease = timedelta(seconds=settings.fetch_timeout_seconds + 2 * self.timeout + 30)
        self._verify = verify
        self._stop = threading.Event()
        self.wake_event = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.webhook_concurrency, thread_name_prefix="easel-webhook"
        )
        self._thread: threading.Thread | None = None
        self.sent = 0  # attempts made by this dispatcher (tests, logs)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="easel-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self.wake_event.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5 if timeout is None else timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        self.wake_event.set()

    def run_forever(self) -> None:
        log.info("webhook dispatcher ready")
        while not self._stop.is_set():
            try:
                busy = self.run_once() > 0
            except Exception:
                log.exception("webhook dispatcher: claiming failed")
                busy = False
            if not busy:
                self.wake_event.wait(self._idle_timeout())
                self.wake_event.clear()

    def _idle_timeout(self) -> float:
        timeout = self.settings.webhook_poll_seconds
        try:
            due = self.store.next_due()
        except Exception:
            return timeout
        if due is not None:
            timeout = min(timeout, max(0.01, (due - utcnow()).total_seconds()))
        return timeout

    def run_once(self) -> int:
        """Claim due messages and make one attempt each (in parallel); the number of attempts made."""
        due = self.store.next_due()  # a read first: no write lock taken while nothing is due
        if due is None or due > utcnow():
            return 0
        deliveries = self.store.claim_due(self.settings.webhook_concurrency, self.lease)
        if not deliveries:
            return 0
        futures = [self._pool.submit(self.attempt, d) for d in deliveries]
        for f in concurrent.futures.as_completed(futures):
            try:
                f.result()
            except Exception:
                log.exception("webhook attempt failed unexpectedly")
        return len(deliveries)

    # -- one attempt -------------------------------------------------------------------------------

    def attempt(self, d: Delivery) -> AttemptResult:
        started, t0 = utcnow(), time.monotonic()
        result = self._send(d)
        next_at = None
        if result.outcome == "retry":
            if d.attempt >= d.max_attempts:
                result = AttemptResult("failed", result.status_code, result.error, result.response_body)
            else:
                next_at = utcnow() + retry_delay(d.attempt, self.settings.webhook_retry_base_seconds)
        self.sent += 1
        log.info(
            "webhook %s attempt %d to %s: %s%s",
            d.message_id,
            d.attempt,
            _safe(d.url),
            result.outcome,
            f" ({result.status_code})" if result.status_code is not None else f" ({result.error})",
        )
        self.store.record_attempt(
            d,
            outcome=result.outcome,
            started_at=started,
            duration_ms=int((time.monotonic() - t0) * 1000),
            status_code=result.status_code,
            error=result.error,
            response_body=result.response_body,
            next_attempt_at=next_at,
        )
        return result

    def _send(self, d: Delivery) -> AttemptResult:
        try:
            targets = self.fetcher.vet_url(d.url, field="url")
        except ValidationFailed as e:
            why = e.fields[0].message if e.fields else e.message
            transient = any(t in why for t in _TRANSIENT_REFUSALS)
            return AttemptResult("retry" if transient else "failed", None, f"URL refused: {why}", None)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": d.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(d.secrets, d.message_id, timestamp, d.body),
            "Easel-Webhook-Attempt": str(d.attempt),
        }
        body = d.body.encode()
        deadline = time.monotonic() + self.timeout
        failures = []
        for target in targets:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return self._post(target, headers, body, remaining)
            except httpx.ConnectError as e:  # refused or unreachable: the next vetted address
                failures.append(f"{target.address}: {e or type(e).__name__}")
            except httpx.TimeoutException:
                return AttemptResult("retry", None, f"no answer within {self.timeout:g} s", None)
            except (httpx.HTTPError, ssl.SSLError, OSError) as e:
                return AttemptResult("retry", None, f"{type(e).__name__}: {e}", None)
        return AttemptResult(
            "retry", None, "could not connect: " + ("; ".join(failures) or "timed out"), None
        )

    def _post(
        self, target: VettedTarget, headers: dict[str, str], body: bytes, timeout: float
    ) -> AttemptResult:
        extensions = {"sni_hostname": target.sni} if target.sni else {}
        with (
            httpx.Client(
                verify=ssl_context(self._verify),
                trust_env=False,  # never an environment proxy: it would connect elsewhere
                follow_redirects=False,  # a redirect is a failed attempt, never followed
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_keepalive_connections=0),
            ) as client,
            client.stream(
                "POST",
                target.url,
                content=body,
                headers=headers | {"Host": target.host_header},
                extensions=extensions,
            ) as resp,
        ):
            kept = b""
            for chunk in resp.iter_raw():
                kept += chunk
                if len(kept) >= RESPONSE_KEPT:
                    break
            text = kept[:RESPONSE_KEPT].decode("utf-8", "replace")
            code = resp.status_code
        if 200 <= code < 300:
            return AttemptResult("delivered", code, None, text)
        if code == 410:
            return AttemptResult("disabled", code, "the receiver answered 410 Gone", text)
        if 300 <= code < 400:
            where = resp.headers.get("location", "")
            return AttemptResult("retry", code, f"redirect to {where!r} not followed", text)
        return AttemptResult("retry", code, f"HTTP {code}", text)


def _safe(url: str) -> str:
    """The URL without its query (which may carry tokens), for logs."""
    return url.split("?", 1)[0]
