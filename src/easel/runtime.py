"""The composition root: builds every long-lived object from one Settings, once, at start-up."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from easel.api.native.protocol import webhook_payload
from easel.domain.catalog import Catalog
from easel.domain.keys import Principal
from easel.engine.backends import check_catalog
from easel.service.admin import AdminService
from easel.service.auth import Access, Authenticator
from easel.service.container import Services
from easel.service.enhance import PromptEnhancer
from easel.service.events import EventHub, JobEvent
from easel.service.fetch import ImageFetcher
from easel.service.gateway import GatewayService
from easel.service.generations import GenerationService
from easel.service.idempotency import Idempotency
from easel.service.library import LibraryService
from easel.service.links import LinkService
from easel.service.metrics import MetricsService
from easel.service.models import ModelAdminService
from easel.service.ratelimit import DatabaseRateLimiter, MemoryRateLimiter, RateLimiter
from easel.service.webhooks import WebhookDispatcher, WebhookService
from easel.settings import Settings
from easel.storage.base import BlobStore
from easel.storage.factory import make_blob_store
from easel.storage.signing import UrlSigner
from easel.store import migrate
from easel.store.db import is_postgres, make_engine
from easel.store.idempotency import IdempotencyStore
from easel.store.keys import KeyStore
from easel.store.model_requests import ModelRequestStore
from easel.store.notify import ENDED, FINISHED, FINISHED_CHANNEL, PREVIEW, Doorbell
from easel.store.outbox import WebhookStore
from easel.store.queue import JobQueue
from easel.store.repository import Repository
from easel.store.upstream import UpstreamLedger
from easel.store.workers import WorkerRegistry

if TYPE_CHECKING:
    from easel.engine.backends.base import Backend
    from easel.engine.worker import Worker
    from easel.gateway.worker import UpstreamWorker

log = logging.getLogger(__name__)


def _mtime(path: Path) -> int:
    """When a file last changed (0 if it cannot be read): the catalog's `created` in GET /v1/models."""
    try:
        return int(path.stat().st_mtime)
    except OSError:
        return 0


LOCAL_PROJECT = "local"


@dataclass
class Runtime:
    settings: Settings
    catalog: Catalog
    repo: Repository
    queue: JobQueue
    blobs: BlobStore
    doorbell: Doorbell
    events: EventHub
    signer: UrlSigner
    generations: GenerationService
    default_project_id: str
    keys: KeyStore
    auth: Authenticator
    limiter: RateLimiter
    idempotency: IdempotencyStore
    webhooks: WebhookService
    services: Services

    @classmethod
    def build(cls, settings: Settings, *, migrate_db: bool = True) -> Runtime:
        settings.ensure_dirs()
        catalog = settings.load_catalog()
        check_catalog(catalog)
        engine = make_engine(settings.resolved_database_url)
        if migrate_db:
            migrate.upgrade(engine)
        # A worker seen this recently is live (the queue's ETAs share the work among the live workers).
        repo = Repository(engine, render_event=webhook_payload, live_within=settings.worker_live_within)
        blobs = make_blob_store(settings)
        doorbell = Doorbell(settings.data_dir / "run")
        events = EventHub()
        fetcher = ImageFetcher(settings)
        service = GenerationService(
            settings, catalog, repo, blobs, doorbell, events, fetcher, PromptEnhancer(settings)
        )
        keys = KeyStore(engine)
        limiter: RateLimiter = (
            DatabaseRateLimiter(engine) if settings.rate_limit_storage == "database" else MemoryRateLimiter()
        )
        default_project_id = repo.ensure_project(LOCAL_PROJECT)
        auth = Authenticator(keys)
        signer = UrlSigner(settings.signing_key(), settings.image_url_ttl_seconds)
        idempotency = IdempotencyStore(engine, timedelta(hours=settings.idempotency_ttl_hours))
        webhooks = WebhookService(settings, WebhookStore(engine), fetcher)
        services = Services(
            settings=settings,
            catalog=catalog,
            access=Access(settings, auth, limiter, default_project_id),
            generations=service,
            library=LibraryService(repo, blobs, fetcher),
            links=LinkService(signer, blobs, settings.public_url),
            admin=AdminService(keys, repo, default_project_id),
            webhooks=webhooks,
            idempotency=Idempotency(idempotency),
            events=events,
            metrics=MetricsService(engine),
            models=ModelAdminService(
                settings,
                catalog,
                ModelRequestStore(engine),
                WorkerRegistry(engine),
                doorbell,
                default_project_id,
            ),
            gateway=GatewayService(catalog, UpstreamLedger(engine), default_project_id),
            catalog_mtime=_mtime(settings.catalog),
        )
        services.metrics.policy_counts = lambda: dict(service.policy_counts)
        return cls(
            settings=settings,
            catalog=catalog,
            repo=repo,
            queue=JobQueue(engine, lease_seconds=settings.lease_seconds, render_event=webhook_payload),
            blobs=blobs,
            doorbell=doorbell,
            events=events,
            signer=signer,
            generations=service,
            default_project_id=default_project_id,
            keys=keys,
            auth=auth,
            limiter=limiter,
            idempotency=idempotency,
            webhooks=webhooks,
            services=services,
        )

    def principal(self, project_id: str | None = None) -> Principal:
        """The server acting for a project (default: the local one), as the CLI and tests do."""
        return Principal.system(project_id or self.default_project_id)

    def bootstrap_admin_key(self) -> Path | None:
        """On first start, an admin key for the local project, written to <data_dir>/admin-key.txt (0600).
        Returns the file's path when a key was created, None when the project already has keys."""
        if self.keys.all(self.default_project_id):
            return None
        plaintext, _ = self.keys.create(
            self.default_project_id, "local admin (first start)", ["admin"], rate_limit_per_hour=0
        )
        path = self.settings.data_dir / "admin-key.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(plaintext + "\n")
        return path

    def make_worker(self, backend: Backend | None = None) -> Worker:
        """A worker sharing this runtime's store and events (imports the engine lazily)."""
        from easel.engine.worker import Worker

        return Worker(
            self.settings,
            self.catalog,
            self.repo,
            self.queue,
            self.blobs,
            self.doorbell,
            publish=self.events.publish,
            publish_tag=self.events.tag,
            backend=backend,
        )

    def make_upstream_worker(self) -> UpstreamWorker:
        """The gateway worker of this runtime's catalog (docs/gateway.md); never imports torch."""
        from easel.gateway.worker import UpstreamWorker

        return UpstreamWorker(
            self.settings,
            self.catalog,
            self.repo,
            self.queue,
            self.blobs,
            self.doorbell,
            self.generations.fetcher,
            publish=self.events.publish,
            publish_tag=self.events.tag,
        )

    def make_webhook_dispatcher(self) -> WebhookDispatcher:
        """A dispatcher delivering this runtime's webhook outbox (start() it; stop() it)."""
        w = self.webhooks
        dispatcher = WebhookDispatcher(self.settings, w.store, w.fetcher)
        w._wake = dispatcher.wake_event  # redelivery wakes it at once
        return dispatcher

    def make_finished_relay(self) -> FinishedRelay:
        """A relay of jobs that ended in other processes to this runtime's waiters (start(); stop())."""
        engine = self.repo.engine
        url = engine.url.render_as_string(hide_password=False) if is_postgres(engine) else None
        return FinishedRelay(self.doorbell, self.events, url)

    def close(self) -> None:
        self.repo.engine.dispose()


def relayed_events(message: bytes) -> list[JobEvent]:
    """The EventHub events of one FINISHED message (store/notify.py): `finished` for each id of an ENDED
    message; one `preview` (its JPEG bytes as `jpeg`) for a PREVIEW message."""
    kind, body = message[:1], message[1:]
    if kind == ENDED:
        return [JobEvent(gid, "finished") for gid in body.decode("ascii").split(",") if gid]
    if kind == PREVIEW:
        header, _, picture = body.partition(b"\n")
        data = json.loads(header)
        return [JobEvent(str(data.pop("id")), "preview", data | {"jpeg": picture})]
    return []


class FinishedRelay:
    """One thread of an API process that turns "these jobs ended" and previews from other processes into
    events on its EventHub, so that `Prefer: wait`, OpenAI requests and event streams answer the moment
    a job ends wherever it ran: the FINISHED doorbell (workers on this host ring it with the ids) and, on
    PostgreSQL, LISTEN easel_finished (every transaction that ends a job notifies its id). Waiters still
    re-read the store every second, which covers a lost connection or datagram."""

    def __init__(self, doorbell: Doorbell, events: EventHub, postgres_url: str | None) -> None:
        self.events = events
        self.listener = doorbell.listener(FINISHED, tag=events.tag)
        if postgres_url is not None:
            self.listener.listen_postgres(postgres_url, FINISHED_CHANNEL, connect=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="easel-finished-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self.listener.receive(5.0)
            except Exception:  # never let the relay die; waiters fall back to re-reading
                log.exception("the finished relay failed to receive; retrying")
                self._stop.wait(1.0)
                continue
            for message in messages or ():
                try:
                    for event in relayed_events(message):
                        self.events.publish(event)
                except Exception:  # a malformed message must not end the relay
                    log.warning("the finished relay dropped a message it could not read", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self.listener.interrupt()
        self._thread.join(timeout=10)
        self.listener.close()
