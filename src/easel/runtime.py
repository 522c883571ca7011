"""The composition root: builds every long-lived object from one Settings, once, at start-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from easel.domain.catalog import Catalog
from easel.service.events import EventHub
from easel.service.generations import GenerationService
from easel.settings import Settings
from easel.storage.base import BlobStore
from easel.storage.local import LocalBlobStore
from easel.storage.signing import UrlSigner
from easel.store import migrate
from easel.store.db import make_engine
from easel.store.notify import Doorbell
from easel.store.queue import JobQueue
from easel.store.repository import Repository

if TYPE_CHECKING:
    from easel.engine.backends.base import Backend
    from easel.engine.worker import Worker

log = logging.getLogger(__name__)

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

    @classmethod
    def build(cls, settings: Settings, *, migrate_db: bool = True) -> Runtime:
        settings.ensure_dirs()
        catalog = Catalog.load(settings.catalog)
        engine = make_engine(settings.resolved_database_url)
        if migrate_db:
            migrate.upgrade(engine)
        repo = Repository(engine)
        blobs = LocalBlobStore(settings.data_dir / "images")
        doorbell = Doorbell(settings.data_dir / "run")
        events = EventHub()
        service = GenerationService(settings, catalog, repo, blobs, doorbell, events)
        return cls(
            settings=settings,
            catalog=catalog,
            repo=repo,
            queue=JobQueue(engine, lease_seconds=settings.lease_seconds),
            blobs=blobs,
            doorbell=doorbell,
            events=events,
            signer=UrlSigner(settings.signing_key(), settings.image_url_ttl_seconds),
            generations=service,
            default_project_id=repo.ensure_project(LOCAL_PROJECT),
        )

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
            backend=backend,
        )

    def close(self) -> None:
        self.repo.engine.dispose()
