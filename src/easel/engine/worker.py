"""The worker: claim a batch of compatible jobs, run it as one pipeline call, store the images.

Runs as a thread inside `easel serve` or as the main loop of `easel worker`. It never polls for new
jobs: it sleeps on its doorbell until a job is queued, waking on its own only to rescue jobs whose
worker died (at the earliest lease expiry, or every `idle_check_seconds`).

The hot path overlaps: the loop's thread runs the pipeline calls one after another, and hands each
finished batch to one post-processing thread (encode, store, complete) through a hand-off of
POST_QUEUE_DEPTH batches, so batch k+1 is denoising while batch k's PNGs are written, and memory stays
bounded (the batch in the pipeline, the one being stored, POST_QUEUE_DEPTH waiting). A lease keeper
thread extends the leases of every job not yet ended, in the pipeline or in post-processing, and is the
cancel watcher: between beats it waits on the CANCELS doorbell (and NOTIFY on PostgreSQL) and, when
rung, reads which of its jobs it still holds; the step callback reads that in memory. Progress reaches
the database at the first step, then at most every PROGRESS_INTERVAL seconds per batch (completion sets
the last step); the in-process events (SSE, `Prefer: wait`) still get every step.

Between batches (never during a pipeline call) it performs the admin's load / unload requests addressed
to it (store/model_requests.py; the doorbell rings for them too), and it reports what its backends hold
loaded in its `workers` row whenever that changes: after such a request (before marking it done) and
after a batch that loaded a model lazily.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from PIL.Image import Image as PILImage

from easel.domain.catalog import Catalog, ModelEntry
from easel.domain.errors import EaselError
from easel.domain.failures import (
    DEADLINE_EXCEEDED,
    GENERATION_FAILED,
    MODEL_UNAVAILABLE,
    OUTPUT_REJECTED,
    STORAGE_ERROR,
    generation_failed_message,
    output_rejected_message,
    storage_error_message,
)
from easel.domain.families import Task
from easel.domain.generation import ImageFile, Status
from easel.domain.metrics import WorkerTimes
from easel.domain.model_requests import LoadedModel, ModelRequest
from easel.domain.spec import image_seeds
from easel.engine.backends import make_backend
from easel.engine.backends.base import Backend, BatchRequest, Interrupted, ModelUnavailable
from easel.engine.batch import BatchPart, build_batch
from easel.engine.previews import BatchPreviews
from easel.engine.sources import model_source, resolved_entry
from easel.engine.weights import receipt
from easel.imaging import encode, generation_params
from easel.service.events import JobEvent, announce_ended
from easel.service.library import generated_record
from easel.service.output_checks import load_output_check
from easel.settings import Settings
from easel.storage.base import BlobNotFound, BlobStore
from easel.store.model_requests import ModelRequestStore
from easel.store.notify import CANCEL_CHANNEL, CANCELS, Doorbell, DoorbellListener
from easel.store.queue import ClaimedJob, JobQueue
from easel.store.repository import Repository
from easel.store.tables import utcnow
from easel.store.workers import WorkerRegistry

log = logging.getLogger(__name__)

BACKOFF_SECONDS = 0.5  # the worker loop's first pause after an error; doubled while errors repeat
MAX_BACKOFF_SECONDS = 30.0
PROGRESS_INTERVAL = 0.25  # a batch's progress is written at its first step, then at most this often
POST_QUEUE_DEPTH = 1  # finished batches waiting for post-processing at most (one more is being stored)
POST_IDLE_SECONDS = 1.0  # the post-processing thread ends after this long without work (restarts on demand)
STAGES = ("db", "inputs", "generate", "encode", "store")  # thread CPU time is counted by these stages
GATHER_FRACTION = 0.25  # a claim waits for a batch as large as recent ones at most this part of a call,
GATHER_MAX_SECONDS = 1.0  # at most this long,
GATHER_QUIET_SECONDS = 0.1  # and no longer than this after the last job came in (or since it began)
GATHER_MEMORY = 8  # "recent": the largest of the last this many pipeline calls


class StorageFault(Exception):
    """Reading a job's input bytes failed (the blob store itself, not a missing image)."""


def new_error_id() -> str:
    """The id a client-facing error message carries; the log line with the traceback carries it too."""
    return uuid.uuid4().hex[:12]


@dataclass
class WorkerStats:
    """Counters of one worker, in memory. `cpu_seconds`: thread CPU time by stage, in every thread of
    the worker (the loop, post-processing, the lease keeper): `db` its database work (claims, progress,
    completion, heartbeats, cancel checks), `inputs` reading and decoding input images, `generate` the
    backend call as seen by the calling thread (a backend's own threads, torch's, are not in it),
    `encode`, `store` (blob writes). `busy_seconds`: wall time the model (`generate`) and the
    post-processing (`post`) were busy."""

    batches: int = 0
    jobs: int = 0
    images: int = 0
    last_batch_jobs: int = 0
    progress_writes: int = 0
    cpu_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    busy_seconds: dict[str, float] = field(default_factory=lambda: {"generate": 0.0, "post": 0.0})
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, images: int = 0, progress_writes: int = 0) -> None:
        with self._lock:
            self.images += images
            self.progress_writes += progress_writes

    def add_cpu(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.cpu_seconds[stage] += max(0.0, seconds)

    def add_busy(self, what: str, seconds: float) -> None:
        with self._lock:
            self.busy_seconds[what] += max(0.0, seconds)

    @contextlib.contextmanager
    def cpu(self, stage: str) -> Iterator[None]:
        """Count the calling thread's CPU time inside the block under `stage`."""
        start = time.thread_time()
        try:
            yield
        finally:
            self.add_cpu(stage, time.thread_time() - start)


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
        publish_tag: str | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.repo = repo
        self.queue = queue
        self.blobs = blobs
        self.doorbell = doorbell
        self.publish = publish
        self.publish_tag = publish_tag  # the EventHub `publish` reaches: its relay is not rung too
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._backends: dict[str, Backend] = {}
        if backend is not None:
            self._backends["diffusers"] = backend
        # The models it claims: those named, else every local one (the gateway serves the remote ones).
        local = self.catalog.local_models
        named = [self.catalog.resolve(m).name for m in settings.worker_models]
        if remote := [m for m in named if m not in local]:
            raise ValueError(
                f"EASEL_WORKER_MODELS names remote models {remote}: `easel worker --upstream` serves those"
            )
        self.models: list[str] | None = named or (None if len(local) == len(self.catalog.models) else local)
        self.stats = WorkerStats()
        self.output_check = load_output_check(settings)  # docs/policy.md, "Outputs"; None: no check
        self.registry = WorkerRegistry(queue.engine)
        self.requests = ModelRequestStore(queue.engine)
        self._reported: list[LoadedModel] | None = None  # the loaded state last written to the row
        self._started_at = utcnow()
        self._last_seen = 0.0
        self._stop = threading.Event()
        self._listener = doorbell.listener()
        watcher = doorbell.listener(CANCELS)  # the lease keeper's: cancels of running jobs
        if queue.engine.dialect.name == "postgresql":
            url = queue.engine.url.render_as_string(hide_password=False)
            self._listener.listen_postgres(url)
            watcher.listen_postgres(url, CANCEL_CHANNEL, connect=False)  # opened when first busy
        self._leases = _LeaseKeeper(
            queue, watcher, settings.heartbeat_interval, on_beat=self.report_alive, stats=self.stats
        )
        self._post = _PostProcessor(POST_QUEUE_DEPTH)
        self._recent_images: deque[int] = deque(maxlen=GATHER_MEMORY)  # images of recent pipeline calls
        self._last_call_seconds = 0.0  # the wall time of the last one

    def backend(self, entry: ModelEntry) -> Backend:
        if entry.backend not in self._backends:
            self._backends[entry.backend] = make_backend(entry.backend, self.settings)
        return self._backends[entry.backend]

    # -- loop ------------------------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Claim and run batches until stopped. Nothing a batch or the database raises ends the loop: an
        error is logged and the loop goes on after a pause that doubles while errors repeat (up to
        MAX_BACKOFF_SECONDS), so a database that is down or a full disk does not kill the worker."""
        log.info("worker %s ready (models: %s)", self.id, self.models or "all")
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self.report_alive()
                    self.report_loaded()
                    self.run_model_requests()
                    self._gather()
                    if not self._next_batch():
                        self._listener.wait(self._idle_timeout())
                    failures = 0
                except Exception:
                    failures += 1
                    pause = min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** (failures - 1))
                    log.exception("worker loop error (%d in a row); retrying in %.1f s", failures, pause)
                    self._stop.wait(pause)
        finally:
            self._post.drain()  # what was generated is stored and completed before the worker goes
            self._leases.close()
            self._listener.close()
            log.info("worker %s stopped: %s", self.id, self.summary())
            try:
                self.requests.abandon(self.id)  # what it has not done, nobody will: lost
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
        """Claim and run one batch and wait until its jobs have ended (images stored, completed); False
        if there was nothing to do. `run_forever` does not wait: it claims the next batch while this
        one is post-processed."""
        ran = self._next_batch()
        self._post.drain()
        return ran

    def _gather(self) -> None:
        """Before a claim, while fewer images are queued than the largest of the last GATHER_MEMORY
        batches had: wait for more (each create rings the doorbell), up to GATHER_FRACTION of the last
        pipeline call, at most GATHER_MAX_SECONDS, and only while jobs keep coming (GATHER_QUIET_SECONDS
        without one ends it: a lone request after a busy spell waits that long at most).

        A pipeline call costs about the same for one image as for a full batch on an accelerator (and
        much more than an eighth of it on a CPU); without this, the claim that follows a batch at once
        (its post-processing runs beside it) would take the first of the clients coming back alone, and
        a closed loop of 8 clients would settle into batches of 4 (the largest recent batch, not the
        last, keeps it from settling there). Nothing waits while recent batches held one image (batch 1
        keeps its latency), nor when the queue already holds a batch as large."""
        want = min(max(self._recent_images, default=0), self.settings.max_batch_images)
        if want <= 1:
            return
        now = time.monotonic()
        deadline = now + min(GATHER_MAX_SECONDS, GATHER_FRACTION * self._last_call_seconds)
        quiet = now + GATHER_QUIET_SECONDS
        while not self._stop.is_set():
            with self.stats.cpu("db"):
                if self.queue.queued_images(self.models) >= want:
                    return
            remaining = min(deadline, quiet) - time.monotonic()
            if remaining <= 0:
                return
            if self._listener.wait(remaining):
                quiet = time.monotonic() + GATHER_QUIET_SECONDS

    def _next_batch(self) -> bool:
        """Claim a batch and run its pipeline call; its post-processing may still be going on."""
        with self.stats.cpu("db"):
            jobs = self.queue.claim_batch(
                self.id,
                models=self.models,
                max_images=self.settings.max_batch_images,
                job_timeout=self.settings.job_timeout_seconds,
            )
        if not jobs:
            return False
        self._run_batch(jobs)
        self.report_loaded()  # the batch may have loaded its model (or evicted another)
        return True

    def times(self) -> WorkerTimes:
        """This worker's counters (GET /metrics, for the in-process worker of `easel serve`)."""
        st = self.stats
        with st._lock:
            return WorkerTimes(
                worker_id=self.id,
                batches=st.batches,
                jobs=st.jobs,
                images=st.images,
                progress_writes=st.progress_writes,
                cpu_seconds=dict(st.cpu_seconds),
                busy_seconds=dict(st.busy_seconds),
            )

    def summary(self) -> str:
        """One line of what this worker did: counts, CPU ms per stored image by stage, busy times."""
        t = self.times()
        per = {k: v * 1000 / max(1, t.images) for k, v in t.cpu_seconds.items()}
        return (
            f"{t.batches} batches, {t.jobs} jobs, {t.images} images, {t.progress_writes} progress writes; "
            f"CPU ms per image: {', '.join(f'{k} {v:.2f}' for k, v in per.items())}; "
            f"busy s: {', '.join(f'{k} {v:.2f}' for k, v in t.busy_seconds.items())}"
        )

    # -- load / unload requests, loaded state ----------------------------------------------------------

    def loaded_models(self) -> list[LoadedModel]:
        """What this worker's backends hold loaded, each with the catalog entries that share it (a
        backend that cannot tell, one without `loaded()`, adds nothing)."""
        out: list[LoadedModel] = []
        for name, backend in sorted(self._backends.items()):
            loaded = getattr(backend, "loaded", None)
            if loaded is None:
                continue
            for item in loaded():
                models = tuple(
                    e.name
                    for e in self.catalog.models.values()
                    if e.backend == name and model_source(self.catalog, e) == item.source
                )
                out.append(LoadedModel(item.source, models, item.since, item.memory_bytes))
        return out

    def report_loaded(self, *, force: bool = False) -> None:
        """Write what is loaded to this worker's row when it changed since the last write (or `force`).
        A database error is logged; the next call tries again."""
        try:
            now = self.loaded_models()
            if (force or now != self._reported) and self.registry.report_loaded(self.id, now):
                self._reported = now
        except Exception:
            log.exception("could not report the loaded models")

    def run_model_requests(self) -> int:
        """Perform this worker's queued load / unload requests, oldest first; returns how many ran. The
        heartbeat goes on while a load takes long; the loaded state is written before a request is
        marked done, so whoever sees it done also sees the model loaded (or unloaded)."""
        done = 0
        for request in self.requests.queued_for(self.id):
            if self._stop.is_set():
                break
            if not self.requests.start(request.id):  # marked lost meanwhile
                continue
            with self._leases.busy():  # the heartbeat goes on (the worker's row) while a load takes long
                error = self._perform(request)
            self.report_loaded(force=True)
            try:
                self.requests.finish(request.id, error)
            except Exception:
                log.exception("could not record the end of model request %s", request.id)
            done += 1
        return done

    def _perform(self, request: ModelRequest) -> str | None:
        """Load or unload the request's model; the error to record, None when it went well."""
        log.info("model request %s: %s %s", request.id, request.action.value, request.model)
        try:
            entry = self.catalog.resolve(request.model)
        except EaselError:
            return f"model {request.model!r} is not in this worker's catalog"
        try:
            backend = self.backend(entry)
            act = getattr(backend, request.action.value, None)
            if act is None:
                return f"backend {entry.backend!r} cannot {request.action.value} models on request"
            handed = resolved_entry(self.catalog, entry).model_copy(
                update={"source": model_source(self.catalog, entry)}
            )
            act(handed)
        except ModelUnavailable as e:  # written for people: what to download or fix
            return str(e)
        except Exception as e:
            log.exception("model request %s (%s %s) failed", request.id, request.action.value, entry.name)
            return f"{type(e).__name__}: {e}"
        return None

    # -- one batch -------------------------------------------------------------------------------------

    def _run_batch(self, jobs: list[ClaimedJob]) -> None:
        """Run a claimed batch as one pipeline call and hand its images to post-processing. When that
        call fails (any error but a stop or an unavailable model) and the batch holds several jobs, each
        job runs again alone, so one bad job (say, a prompt the tokenizer rejects) fails by itself and
        its batch mates still succeed. The lease keeper holds every job until it has ended: here, or in
        post-processing for the jobs handed over."""
        spec = jobs[0].spec
        self._leases.hold(jobs)
        handed: set[str] = set()  # the jobs post-processing ends (and releases, and announces)
        try:
            try:
                entry = self.catalog.resolve(spec.model)
            except Exception as e:  # the model left the catalog after the job was queued
                self._fail_generation(jobs, e)
                return
            log.info(
                "batch: %d jobs, %d images, model=%s %dx%d steps=%s",
                len(jobs),
                sum(j.spec.n for j in jobs),
                entry.name,
                spec.width,
                spec.height,
                spec.steps,
            )
            failed = self._attempt(entry, jobs, handed)
            if failed is not None and len(jobs) > 1:
                held, _ = failed
                log.warning(
                    "batch of %d jobs failed; running its %d remaining jobs one by one",
                    len(jobs),
                    len(held),
                )
                for i, job in enumerate(held):
                    if self._stop.is_set():  # graceful stop: the rest go back to the queue
                        for j in held[i:]:
                            self._guarded(self.queue.release, j)
                        break
                    alone = self._attempt(entry, [job], handed)
                    if alone is not None:
                        self._fail_generation(alone[0], alone[1])
            elif failed is not None:
                self._fail_generation(*failed)
        finally:
            ended_here = [j for j in jobs if j.id not in handed]
            self._leases.release(ended_here)
            self._finish_events(ended_here)

    def _attempt(
        self, entry: ModelEntry, jobs: list[ClaimedJob], handed: set[str]
    ) -> tuple[list[ClaimedJob], Exception] | None:
        """One pipeline call for `jobs`, then the jobs still held handed to post-processing (their ids
        added to `handed`). Returns the jobs still held and the error when the pipeline call itself
        failed (the caller decides: each alone, or failed); None when every job got its end here or
        was handed over (to succeed, or fail storing).

        The step callback costs no database round trip at most steps: a cancel (or a takeover) is read
        from the lease keeper's lost set in memory, the deadline from the clock; progress is written
        at the first step (it records the total), then at most every PROGRESS_INTERVAL seconds (that
        fenced write also drops a job no longer held); the completion records the last step."""
        started = time.monotonic()
        active = list(jobs)
        timeout = timedelta(seconds=self.settings.job_timeout_seconds)
        fault: list[Exception] = []  # a database error in a progress write
        written: list[float] = []  # when progress was last written
        step_db = [0.0]  # thread CPU of the callback's database writes (counted as db, not generate)

        def on_step(step: int, total: int) -> bool:
            lost = self._leases.lost()
            if lost:
                active[:] = [j for j in active if j.id not in lost]
            cpu = time.thread_time()
            try:
                now = utcnow()
                late = [j for j in active if (j.started_at or now) + timeout < now]
                if late:  # past the deadline: fail them at this step, run on with the rest
                    message = f"The job ran longer than its deadline ({timeout.total_seconds():g} s)"
                    for j in late:
                        self.queue.fail(j, DEADLINE_EXCEEDED, message)
                    active[:] = [j for j in active if j not in late]
                clock = time.monotonic()
                if active and (not written or clock - written[-1] >= PROGRESS_INTERVAL):
                    held = self.queue.progress(active, step, total)
                    written[:] = [clock]
                    self.stats.add(progress_writes=1)
                    active[:] = [j for j in active if j.id in held]
            except Exception as e:  # the database: stop here, the jobs go back to the queue
                fault.append(e)
                return False
            finally:
                step_db[0] += time.thread_time() - cpu
            for j in active:
                self.publish(JobEvent(j.id, "progress", {"step": step, "total": total}))
            return bool(active) and not self._stop.is_set()

        cpu = time.thread_time()
        try:
            with self.stats.cpu("inputs"):
                request, owners = self._request(entry, jobs)
            cpu = time.thread_time()
            backend = self.backend(entry)
            wanting = {j.id: j.spec for j in jobs if j.spec.previews > 0}
            if wanting and _takes_previews(backend):
                hook = BatchPreviews(
                    wanting, [(o, i) for o, i, _ in owners], self.publish, self.doorbell, self.publish_tag
                )
                images = backend.generate(request, on_step, hook)
            else:
                images = backend.generate(request, on_step)
        except Interrupted:
            if fault:
                log.error("progress write failed; releasing %d jobs", len(active), exc_info=fault[0])
            if self._stop.is_set() or fault:
                for j in active:
                    self._guarded(self.queue.release, j)
            return None
        except ModelUnavailable as e:
            for j in active:  # the message is written for clients: what to download or fix
                self._guarded(self.queue.fail, j, MODEL_UNAVAILABLE, str(e))
            return None
        except Exception as e:
            if len(jobs) > 1:
                log.exception("batch of %d jobs failed", len(jobs))
            return list(active), e
        finally:
            self.stats.add_cpu("generate", time.thread_time() - cpu - step_db[0])
            self.stats.add_cpu("db", step_db[0])
            self.stats.add_busy("generate", time.monotonic() - started)

        elapsed_ms = int((time.monotonic() - started) * 1000)
        self._recent_images.append(len(images))
        self._last_call_seconds = time.monotonic() - started
        self.stats.batches += 1
        self.stats.jobs += len(jobs)
        self.stats.last_batch_jobs = len(jobs)
        by_job: dict[str, list[tuple[int, int, PILImage]]] = {}
        for (owner, idx, seed), img in zip(owners, images, strict=True):
            by_job.setdefault(owner, []).append((idx, seed, img))
        lost = self._leases.lost()  # canceled at the last step: nothing to store
        todo = [(j, by_job[j.id]) for j in active if j.id not in lost]
        if todo:
            handed.update(j.id for j, _ in todo)
            self._post.submit(partial(self._post_process, todo, elapsed_ms))
        return None

    def _post_process(self, todo: list[tuple[ClaimedJob, list[tuple[int, int, PILImage]]]], ms: int) -> None:
        """The post-processing thread's part of a batch: each job's images encoded and stored, the job
        completed, its lease let go and its end announced, in claim order. A job canceled meanwhile
        (the lease keeper saw it) is skipped: nothing is written for it."""
        started = time.monotonic()
        try:
            for job, images in todo:
                try:
                    if job.id not in self._leases.lost():
                        self._store(job, images, ms)
                except Exception:  # _store ends the job itself; this is only a last resort
                    log.exception("post-processing job %s failed; its lease will expire", job.id)
                finally:
                    self._leases.release([job])
                    self._finish_events([job])
        finally:
            self.stats.add_busy("post", time.monotonic() - started)

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
        return build_batch(self.catalog, entry, parts), owners

    def _load_image(self, project_id: str, image_id: str) -> PILImage:
        import io

        from PIL import Image

        try:
            data = self.blobs.get(self.repo.get_image(project_id, image_id).storage_key)
        except (BlobNotFound, EaselError):  # the input is gone (deleted): the job fails
            raise
        except Exception as e:  # the blob store or the database
            raise StorageFault(f"could not read image {image_id}") from e
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.copy()

    def _store(self, job: ClaimedJob, images: list[tuple[int, int, PILImage]], elapsed_ms: int) -> None:
        """Write a job's images, then complete it. A storage or database error fails this job alone
        (`storage_error`), with the bytes it had written removed; when even that write fails, the job
        keeps its lease until it expires and is then run again."""
        spec = job.spec
        if self.output_check is not None:
            try:
                reasons = [r for _, _, img in images if (r := self.output_check(img, spec)) is not None]
            except Exception as e:
                self._fail_generation([job], e)
                return
            if reasons:
                log.info("output check refused an image of job %s", job.id)
                self._guarded(self.queue.fail, job, OUTPUT_REJECTED, output_rejected_message(reasons[0]))
                return
        try:
            with self.stats.cpu("encode"):
                encoded = [
                    (
                        idx,
                        seed,
                        encode(
                            img,
                            spec.output_format,
                            spec.output_compression,
                            params,
                            label=spec.provenance_label,
                        ),
                    )
                    for idx, seed, img in images
                    for params in [generation_params(spec, seed) if spec.record_parameters else None]
                ]
        except Exception as e:
            self._fail_generation([job], e)
            return
        records: list[ImageFile] = []
        stored = time.thread_time()
        try:
            for idx, seed, enc in encoded:
                record = generated_record(job.project_id, job.id, idx, seed, enc, spec.output_format.value)
                records.append(record)
                self.blobs.put(record.storage_key, enc.data, enc.mime)
            self.stats.add_cpu("store", time.thread_time() - stored)
            made = self._receipt(job, records)
            with self.stats.cpu("db"):
                completed = self.queue.complete(job, records, elapsed_ms, receipt=made)
        except Exception:
            error_id = new_error_id()
            log.exception("could not store job %s (error id %s)", job.id, error_id)
            if self._guarded(self.queue.fail, job, STORAGE_ERROR, storage_error_message(error_id)):
                self._discard(records)
            return
        if completed:
            self.stats.add(images=len(records))
            return
        # The job was canceled or taken over meanwhile. A job another worker now runs keeps the keys
        # (it writes the same ones); a canceled or failed one leaves no orphaned blobs behind.
        try:
            current = self.repo.get_generation(job.project_id, job.id, include_deleted=True)
        except Exception:
            log.exception("could not read job %s after losing its lease", job.id)
            return
        if current.status in (Status.CANCELED, Status.FAILED) or current.deleted_at is not None:
            self._discard(records)

    def _receipt(self, job: ClaimedJob, records: Sequence[ImageFile]) -> dict[str, Any] | None:
        """The job's reproducibility receipt (engine/weights.py); None, logged, when it cannot be made
        (the job still succeeds: the images are what the client asked for)."""
        try:
            return receipt(self.catalog, job.spec, job.id, records, self.settings.data_dir / "cache")
        except Exception:
            log.exception("could not make the receipt of job %s", job.id)
            return None

    def _discard(self, records: Sequence[ImageFile]) -> None:
        for r in records:
            try:
                self.blobs.delete(r.storage_key)
            except Exception:
                log.exception("could not delete blob %s", r.storage_key)

    def _fail_generation(self, jobs: Sequence[ClaimedJob], error: Exception) -> None:
        """Fail jobs whose generation raised: clients get a stable message with an error id; the log
        has the same id with the traceback. A storage error reading their inputs is `storage_error`."""
        error_id = new_error_id()
        storage = isinstance(error, StorageFault)
        log.error(
            "%s for jobs %s (error id %s)",
            "storage error" if storage else "generation failed",
            ", ".join(j.id for j in jobs),
            error_id,
            exc_info=error,
        )
        if storage:
            code, message = STORAGE_ERROR, storage_error_message(error_id)
        else:
            code, message = GENERATION_FAILED, generation_failed_message(error_id)
        for j in jobs:
            self._guarded(self.queue.fail, j, code, message)

    def _guarded(self, write: Callable[..., bool], job: ClaimedJob, *args: Any) -> bool:
        """A fenced queue write (fail, release) that logs a database error instead of raising it: the
        job then keeps its lease until it expires and is claimed again."""
        try:
            return write(job, *args)
        except Exception:
            log.exception("could not record the end of job %s; its lease will expire", job.id)
            return False

    def _finish_events(self, jobs: Sequence[ClaimedJob]) -> None:
        announce_ended([j.id for j in jobs], self.publish, self.doorbell, self.publish_tag)


def _takes_previews(backend: Backend) -> bool:
    """Whether the backend's `generate` takes the PreviewHook (older and test backends may not)."""
    try:
        return "previews" in inspect.signature(backend.generate).parameters
    except (TypeError, ValueError):
        return False


class _LeaseKeeper:
    """Holds the leases of every job the worker has claimed and not yet ended (in the pipeline, waiting
    for or in post-processing) and watches them for cancels, in one thread that runs while there is
    something to keep: jobs, or a load / unload request (`busy`).

    Every `interval` it extends their leases (one fenced UPDATE; a job it no longer holds, canceled or
    taken over, is marked lost) and calls `on_beat`. Between beats it waits on the worker's CANCELS
    doorbell (and its NOTIFY channel on PostgreSQL); when rung it reads which of its jobs it still holds
    (one SELECT) and marks the others lost. The step callback and post-processing read `lost()` in
    memory."""

    def __init__(
        self,
        queue: JobQueue,
        listener: DoorbellListener,
        interval: float,
        *,
        on_beat: Callable[[], None],
        stats: WorkerStats,
    ) -> None:
        self.queue, self.listener, self.interval, self.on_beat, self.stats = (
            queue,
            listener,
            interval,
            on_beat,
            stats,
        )
        self._lock = threading.Lock()
        self._jobs: dict[str, ClaimedJob] = {}
        self._lost: frozenset[str] = frozenset()
        self._busy = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def hold(self, jobs: Sequence[ClaimedJob]) -> None:
        with self._lock:
            for j in jobs:
                self._jobs[j.id] = j
            self._lost = self._lost - {j.id for j in jobs}
            self._ensure_thread()

    def release(self, jobs: Sequence[ClaimedJob]) -> None:
        """The jobs ended (or were given back): no more heartbeats for them."""
        with self._lock:
            for j in jobs:
                self._jobs.pop(j.id, None)
            self._lost = self._lost - {j.id for j in jobs}

    def lost(self) -> frozenset[str]:
        """The ids of held jobs found canceled or taken over (a snapshot; cheap: no lock, no I/O)."""
        return self._lost

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Beat (the worker's own row) while the block runs, even without jobs."""
        with self._lock:
            self._busy += 1
            self._ensure_thread()
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        self.listener.interrupt()
        if thread is not None:
            thread.join()
        self.listener.close()

    def _ensure_thread(self) -> None:  # under the lock
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="easel-heartbeat", daemon=True)
            self._thread.start()

    def _snapshot(self) -> list[ClaimedJob] | None:
        """The jobs to keep; None (and the thread ends) when there is nothing to keep any more."""
        with self._lock:
            if self._closed or (not self._jobs and not self._busy):
                self._thread = None
                return None
            return list(self._jobs.values())

    def _run(self) -> None:
        next_beat = time.monotonic() + self.interval
        while self._snapshot() is not None:
            rung = self.listener.wait(max(0.0, next_beat - time.monotonic()))
            jobs = self._snapshot()
            if jobs is None:
                return
            beat = time.monotonic() >= next_beat
            if not beat and not (rung and jobs):
                continue
            try:
                check = self.queue.heartbeat if beat else self.queue.held  # held(): a read, no write
                with self.stats.cpu("db"):
                    held = check(jobs) if jobs else set()
                self._mark(jobs, held)
            except Exception:
                log.exception("heartbeat failed" if beat else "cancel check failed")
            if beat:
                next_beat = time.monotonic() + self.interval
                self.on_beat()

    def _mark(self, jobs: list[ClaimedJob], held: set[str]) -> None:
        gone = {j.id: j.lease_token for j in jobs if j.id not in held}
        if not gone:
            return
        with self._lock:  # only jobs still held under the same lease (not released, not claimed anew)
            now = {
                gid for gid, token in gone.items() if (j := self._jobs.get(gid)) and j.lease_token == token
            }
            if now:
                log.info("jobs no longer held (canceled or taken over): %s", ", ".join(sorted(now)))
                self._lost = self._lost | now


class _PostProcessor:
    """One thread that runs the finished batches' post-processing in order, fed through a hand-off of at
    most `depth` waiting batches: `submit` blocks while it is full (the model then waits for storage,
    and memory stays bounded). The thread starts on demand and ends after POST_IDLE_SECONDS idle."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._cv = threading.Condition()
        self._items: deque[Callable[[], None]] = deque()
        self._running = False  # an item is being processed
        self._thread: threading.Thread | None = None

    def submit(self, work: Callable[[], None]) -> None:
        with self._cv:
            while len(self._items) >= self.depth:
                self._cv.wait()
            self._items.append(work)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="easel-post", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def drain(self) -> None:
        """Wait until everything submitted has been processed."""
        with self._cv:
            while self._items or self._running:
                self._cv.wait()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._items:
                    if not self._cv.wait(POST_IDLE_SECONDS) and not self._items:
                        self._thread = None
                        return
                work = self._items.popleft()
                self._running = True
                self._cv.notify_all()
            try:
                work()
            except Exception:  # the work logs its own failures; this thread must not die of one
                log.exception("post-processing failed")
            finally:
                with self._cv:
                    self._running = False
                    self._cv.notify_all()
