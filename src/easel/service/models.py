"""The server admin's view of the models: every catalog entry with its load state on each live worker,
and load / unload requests (GET /api/v1/admin/models, POST .../{name}/load and /unload).

Only the server admin (an admin key of the `local` project) may use it: loaded models are the whole
fleet's memory, not one project's. A request is one row per live worker serving the model (its
`EASEL_WORKER_MODELS` admit it); the doorbell (and NOTIFY on PostgreSQL) wakes an idle worker, which
performs it before its next batch. A request whose worker stopped heartbeating before doing it is
marked `lost` when the admin next looks (or asks again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from easel.domain.catalog import Catalog, ModelEntry
from easel.domain.errors import Conflict, EaselError, Forbidden, NotFound
from easel.domain.keys import Principal
from easel.domain.metrics import WorkerRecord
from easel.domain.model_requests import (
    RECENT_REQUESTS,
    LoadedModel,
    ModelAction,
    ModelRequest,
    RequestStatus,
)
from easel.settings import Settings
from easel.store.model_requests import ModelRequestStore
from easel.store.notify import Doorbell
from easel.store.workers import WorkerRegistry


@dataclass(frozen=True)
class WorkerLoad:
    """One model on one live worker that serves it: loaded or not (None: the worker never reported)."""

    worker_id: str
    loaded: bool | None
    since: datetime | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class ModelState:
    entry: ModelEntry
    workers: list[WorkerLoad]


@dataclass(frozen=True)
class ModelsOverview:
    models: list[ModelState]
    workers: list[WorkerRecord]  # the live ones
    requests: list[ModelRequest]  # the latest RECENT_REQUESTS, newest first
    lost: list[ModelRequest]  # the latest lost ones, newest first


def serves(worker: WorkerRecord, model: str) -> bool:
    """Whether a worker runs jobs of this model ([] = every model)."""
    return not worker.models or model in worker.models


def loaded_on(worker: WorkerRecord, model: str) -> LoadedModel | None:
    return next((m for m in worker.loaded or () if model in m.models), None)


class ModelAdminService:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        requests: ModelRequestStore,
        registry: WorkerRegistry,
        doorbell: Doorbell,
        default_project_id: str,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.requests = requests
        self.registry = registry
        self.doorbell = doorbell
        self.default_project_id = default_project_id

    @property
    def live_within(self) -> timedelta:
        """A worker is live while its heartbeat is this recent (as /healthz and /metrics count them)."""
        return self.settings.worker_live_within

    def _only_server_admin(self, caller: Principal) -> None:
        if caller.project_id != self.default_project_id:
            raise Forbidden("Only the server's admin (the local project) loads, unloads and lists models")

    def _live(self) -> list[WorkerRecord]:
        """The live workers, after marking lost the requests of workers that are not."""
        live = self.registry.recent(self.live_within)
        self.requests.sweep(w.id for w in live)
        return live

    def _entry(self, name: str) -> ModelEntry:
        try:
            return self.catalog.resolve(name)
        except EaselError:
            raise NotFound("model", name) from None

    def overview(self, caller: Principal) -> ModelsOverview:
        self._only_server_admin(caller)
        # The requests before the workers' state: a worker writes its state, then marks its request
        # done, so a request read as done here is never newer than the state read after it.
        self._live()  # marks lost the requests of workers that are gone
        requests = self.requests.recent(RECENT_REQUESTS)
        lost = self.requests.recent(RECENT_REQUESTS, status=RequestStatus.LOST)
        live = self.registry.recent(self.live_within)
        models = []
        for entry in self.catalog.models.values():
            states = []
            for w in live:
                if not serves(w, entry.name):
                    continue
                found = loaded_on(w, entry.name)
                states.append(
                    WorkerLoad(
                        w.id,
                        None if w.loaded is None else found is not None,
                        found.since if found else None,
                        found.memory_bytes if found else None,
                    )
                )
            models.append(ModelState(entry, states))
        return ModelsOverview(
            models=models,
            workers=live,
            requests=requests,
            lost=lost,
        )

    def request(self, caller: Principal, name: str, action: ModelAction) -> list[ModelRequest]:
        """Ask every live worker that serves the model to load (unload) it; the requests, queued. An
        unknown model is a 404, no live worker serving it a 409 (`no_worker`)."""
        self._only_server_admin(caller)
        entry = self._entry(name)
        if entry.is_upstream:
            raise Conflict(
                f"Cannot {action.value} model {entry.name}: provider {entry.provider!r} serves it",
                "remote_model",
            )
        live = self._live()
        targets = [w.id for w in live if serves(w, entry.name)]
        if not targets:
            why = "no worker is running" if not live else f"no live worker serves {entry.name!r}"
            raise Conflict(f"Cannot {action.value} model {entry.name}: {why}", "no_worker")
        made = self.requests.create(entry.name, action, targets)
        self.doorbell.ring()
        return made
