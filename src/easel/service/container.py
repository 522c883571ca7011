"""`Services`: what the API layer is given (built by easel.runtime, the composition root).

Routes receive these through typed dependencies (api/deps.py); they never see the store, the blob store
or the database engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from easel.domain.catalog import Catalog
from easel.service.admin import AdminService
from easel.service.auth import Access
from easel.service.events import EventHub
from easel.service.gateway import GatewayService
from easel.service.generations import GenerationService
from easel.service.idempotency import Idempotency
from easel.service.library import LibraryService
from easel.service.links import LinkService
from easel.service.metrics import MetricsService
from easel.service.models import ModelAdminService
from easel.service.webhooks import WebhookService
from easel.settings import Settings


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    access: Access
    generations: GenerationService
    library: LibraryService
    links: LinkService
    admin: AdminService
    webhooks: WebhookService
    idempotency: Idempotency
    events: EventHub
    metrics: MetricsService
    models: ModelAdminService  # the server admin's load / unload of models (service/models.py)
    gateway: GatewayService  # the gateway's providers, circuits and call ledger (service/gateway.py)
    catalog_mtime: int  # when the catalog file last changed (GET /v1/models `created`)
