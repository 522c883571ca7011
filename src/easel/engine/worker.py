"""The worker: claim a batch of compatible jobs, run it as one pipeline call, store the images.

Runs as a thread inside `easel serve` or as the main loop of `easel worker`. It never polls for new
jobs: it sleeps on its doorbell until a job is queued, waking on its own only to rescue jobs whose
worker died (at the earliest lease expiry, or every `idle_check_seconds`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from PIL.Image import Image as PILImage

from easel.domain.catalog import Catalog, ModelEntry, Task
from easel.domain.generation import ImageFile, Status
from easel.engine.backends import make_backend
from easel.engine.backends.base import Backend, BatchRequest, Interrupted, ModelUnavailable
from easel.engine.batch import BatchPart, build_batch, image_seeds
from easel.engine.sources import model_source
from easel.imaging import encode, generation_params
from easel.service.events import JobEvent
from easel.settings import Settings
from easel.storage.base import BlobStore
from easel.storage.keys import generated_image_key
from easel.store.notify import Doorbell
from easel.store.queue import DEADLINE_EXCEEDED, ClaimedJob, JobQueue
from easel.store.repository import Repository, new_id
from easel.store.tables import utcnow
from easel.store.workers import WorkerRegistry

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    batches: int = 0
    jobs: int = 0
    images: int = 0
    last_batch_jobs: int = 0


class Worker:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        repo: Repository,
        queue: JobQueue,
        blobs: BlobStore,
        doorbell: Doorbell,
        publish: Callable[[JobEvent], None] = lambda e: None,
        backend: Backend | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.repo = repo
        self.queue = queue
        self.blobs = blobs
        self.doorbell = doorbell
        self.publish = publish
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._backends: dict[str, Backend] = {}
        if backend is not None:
            self._backends["diffusers"] = backend
        self.models = [self.catalog.resolve(m).name for m in settings.worker_models] or None
        self.stats = WorkerStats()
        self.registry = WorkerRegistry(queue.engine)
        self._started_at = utcnow()
        self._last_seen = 0.0
        self._stop = threading.Event()
        self._listener = doorbell.listener()
        if queue.engine.dialect.name == "postgresql":
            self._listener.listen_postgres(queue.engine.url.render_as_string(hide_password=False))

    def backend(self, entry: ModelEntry) -> Backend:
        if entry.backend not in self._backends:
            self._backends[entry.backend] = make_backend(entry.backend, self.settings)
        return self._backends[entry.backend]

    # -- loop ------------------------------------------------------------------------------------------

    def run_forever(self) -> None:
        log.info("worker %s ready (models: %s)", self.id, self.models or "all")
        try:
            while not self._stop.is_set():
                self.report_alive()
                if not self.run_once():
                    self._listener.wait(self._idle_timeout())
        finally:
            self._listener.close()
            try:
                self.registry.remove(self.id)
            except Exception:
                log.exception("could not remove the worker's heartbeat row")

    def report_alive(self, *, every: float | None = None) -> None:
        """Upsert this worker's heartbeat row (the metrics' live workers), at most every `every` seconds
        (default: half the smaller of the heartbeat interval and the idle check)."""
        if every is None:
            every = min(self.settings.heartbeat_interval, self.settings.idle_check_seconds) / 2
        now = time.monotonic()
        if now - self._last_seen < every:
            return
        self._last_seen = now
        try:
            self.registry.seen(
                self.id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                models=self.models or [],
                started_at=self._started_at,
            )
        except Exception:
            log.exception("worker heartbeat failed")

    def stop(self) -> None:
        self._stop.set()
        self._listener.interrupt()

    def _idle_timeout(self) -> float:
        timeout = self.settings.idle_check_seconds
        expiry = self.queue.next_lease_expiry()
        if expiry is not None:
            timeout = min(timeout, max(0.05, (expiry - utcnow()).total_seconds() + 0.05))
        return timeout

    def run_once(self) -> bool:
        """Claim and run one batch; False if there was nothing to do."""
        jobs = self.queue.claim_batch(
            self.id,
            models=self.models,
            max_images=self.settings.max_batch_images,
            job_timeout=self.settings.job_timeout_seconds,
        )
        if not jobs:
            return False
        self._run_batch(jobs)
        return True

    # -- one batch -------------------------------------------------------------------------------------

    def _run_batch(self, jobs: list[ClaimedJob]) -> None:
        spec = jobs[0].spec
        entry = self.catalog.resolve(spec.model)
        started = time.monotonic()
        log.info(
            "batch: %d jobs, %d images, model=%s %dx%d steps=%s",
            len(jobs),
            sum(j.spec.n for j in jobs),
            entry.name,
            spec.width,
            spec.height,
            spec.steps,
        )
        active = list(jobs)
        beat = _Heartbeat(self.queue, active, self.settings.heartbeat_interval, on_beat=self.report_alive)
        beat.start()
        timeout = timedelta(seconds=self.settings.job_timeout_seconds)
        try:
            request, owners = self._request(entry, jobs)

            def on_step(step: int, total: int) -> bool:
                now = utcnow()
                late = [j for j in active if (j.started_at or now) + timeout < now]
                if late:  # past the deadline: fail them at this step, run on with the rest
                    message = f"The job ran longer than its deadline ({timeout.total_seconds():g} s)"
                    for j in late:
                        self.queue.fail(j, DEADLINE_EXCEEDED, message)
                    active[:] = [j for j in active if j not in late]
                held = self.queue.progress(active, step, total)
                active[:] = [j for j in active if j.id in held]
                for j in active:
                    self.publish(JobEvent(j.id, "progress", {"step": step, "total": total}))
                return bool(active) and not self._stop.is_set()

            images = self.backend(entry).generate(request, on_step)
        except Interrupted:
            if self._stop.is_set():
                for j in active:
                    self.queue.release(j)
            self._finish_events(jobs)
            return
        except ModelUnavailable as e:
            self._fail_all(active, "model_unavailable", str(e))
            return
        except Exception as e:
            log.exception("batch failed")
            self._fail_all(active, "generation_failed", f"{type(e).__name__}: {e}")
            return
        finally:
            beat.stop()

        elapsed_ms = int((time.monotonic() - started) * 1000)
        self.stats.batches += 1
        self.stats.jobs += len(jobs)
        self.stats.last_batch_jobs = len(jobs)
        by_job: dict[str, list[tuple[int, int, PILImage]]] = {}
        for (owner, idx, seed), img in zip(owners, images, strict=True):
            by_job.setdefault(owner, []).append((idx, seed, img))
        for job in active:
            self._store(job, by_job[job.id], elapsed_ms)
        self._finish_events(jobs)

    def _request(
        self, entry: ModelEntry, jobs: Sequence[ClaimedJob]
    ) -> tuple[BatchRequest, list[tuple[str, int, int]]]:
        parts: list[BatchPart] = []
        owners: list[tuple[str, int, int]] = []
        for job in jobs:
            s = job.spec
            source = mask = None
            if s.task is not Task.TEXT_TO_IMAGE:
                source = self._load_image(job.project_id, s.source_image_ids[0])
                if s.mask_image_id:
                    mask = self._load_image(job.project_id, s.mask_image_id)
            parts.append(BatchPart(s, source, mask))
            owners.extend((job.id, idx, seed) for idx, seed in enumerate(image_seeds(s)))
        return build_batch(entry, model_source(self.catalog, entry), parts), owners

    def _load_image(self, project_id: str, image_id: str) -> PILImage:
        import io

        from PIL import Image

        record = self.repo.get_image(project_id, image_id)
        with Image.open(io.BytesIO(self.blobs.get(record.storage_key))) as im:
            im.load()
            return im.copy()

    def _store(self, job: ClaimedJob, images: list[tuple[int, int, PILImage]], elapsed_ms: int) -> None:
        spec = job.spec
        records = []
        for idx, seed, img in images:
            params = generation_params(spec, seed) if spec.record_parameters else None
            enc = encode(img, spec.output_format, spec.output_compression, params)
            key = generated_image_key(job.project_id, job.id, idx, spec.output_format.value)
            self.blobs.put(key, enc.data, enc.mime)
            records.append(
                ImageFile(
                    id=new_id(),
                    index=idx,
                    seed=seed,
                    storage_key=key,
                    mime=enc.mime,
                    width=enc.width,
                    height=enc.height,
                    bytes=len(enc.data),
                    sha256=enc.sha256,
                )
            )
        if self.queue.complete(job, records, elapsed_ms):
            self.stats.images += len(records)
            return
        # The job was canceled or taken over meanwhile. A job another worker now runs keeps the keys
        # (it writes the same ones); a canceled or failed one leaves no orphaned blobs behind.
        current = self.repo.get_generation(job.project_id, job.id, include_deleted=True)
        if current.status in (Status.CANCELED, Status.FAILED) or current.deleted_at is not None:
            for r in records:
                self.blobs.delete(r.storage_key)

    def _fail_all(self, jobs: Sequence[ClaimedJob], code: str, message: str) -> None:
        for j in jobs:
            self.queue.fail(j, code, message)
        self._finish_events(jobs)

    def _finish_events(self, jobs: Sequence[ClaimedJob]) -> None:
        for j in jobs:
            self.publish(JobEvent(j.id, "finished"))


class _Heartbeat:
    """Extends the leases of a running batch until stopped."""

    def __init__(
        self,
        queue: JobQueue,
        jobs: list[ClaimedJob],
        interval: float,
        on_beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.queue, self.jobs, self.interval, self.on_beat = queue, jobs, interval, on_beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="easel-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.queue.heartbeat(list(self.jobs))
            except Exception:
                log.exception("heartbeat failed")
            self.on_beat()
