"""The gateway worker: claims the jobs of remote models and serves them through their providers.

One asyncio loop (`easel worker --upstream`, or a thread of `easel serve` when the catalog has remote
models) with many calls in flight: up to `EASEL_UPSTREAM_MAX_IN_FLIGHT` jobs, and at most a provider's
`max_concurrent` calls to it. It never imports torch (tests/gateway/test_upstream_process.py).

A remote job is an ordinary generation: claimed with a lease (one job per claim, in fair order), its
lease kept by a keeper task that is also the cancel watcher (a canceled job's task is canceled, which
aborts its HTTP call; a Replicate prediction is canceled upstream too), its images downloaded under the
fetcher's rules, decoded with the upload limits, encoded in the format asked for and stored in Easel's
own storage, then completed (fenced) with what served it. Its route is its entry, then the entry's
fallbacks (domain/catalog.py `route`): each provider is called with retries and backoff (a Retry-After
wins), skipped while its circuit is open (gateway/breaker.py); a refusal (`rejected`) ends the job at
once. Every call is a ledger row (store/upstream.py). Jobs of local models with remote fallbacks are
claimed too, once they have waited their entry's `fallback_after_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import random
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from PIL import Image

from easel.domain.catalog import Catalog, ModelEntry
from easel.domain.errors import EaselError, ValidationFailed
from easel.domain.failures import (
    GENERATION_FAILED,
    OUTPUT_REJECTED,
    STORAGE_ERROR,
    UPSTREAM_REJECTED,
    UPSTREAM_UNAVAILABLE,
    generation_failed_message,
    output_rejected_message,
    storage_error_message,
)
from easel.domain.families import Task
from easel.domain.generation import ImageFile, Served
from easel.domain.providers import ProviderEntry
from easel.domain.spec import image_seeds
from easel.domain.upstream import CallRecord
from easel.gateway.breaker import Breaker
from easel.gateway.calls import UpstreamCall, UpstreamError, call_provider, read_key
from easel.imaging import decode_upload, encode, generation_params, png_bytes
from easel.service.events import JobEvent, announce_ended
from easel.service.fetch import ImageFetcher
from easel.service.library import generated_record
from easel.service.output_checks import load_output_check
from easel.settings import Settings
from easel.storage.base import BlobStore
from easel.store.notify import CANCELS, Doorbell
from easel.store.queue import ClaimedJob, JobQueue
from easel.store.repository import Repository
from easel.store.tables import utcnow
from easel.store.upstream import UpstreamLedger

log = logging.getLogger(__name__)

CIRCUIT_SYNC_SECONDS = 2.0  # how often the circuits other workers wrote are read
CALLS_PER_POOL = 16  # calls in flight per httpx connection pool
THREADS = 32  # the loop's threads for database, storage, download and image work


@dataclass
class Outcome:
    """What a call to one provider came to: images (decoded), or the error that ended it."""

    images: list[Any]
    request_id: str | None
    error: UpstreamError | None = None


class UpstreamWorker:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        repo: Repository,
        queue: JobQueue,
        blobs: BlobStore,
        doorbell: Doorbell,
        fetcher: ImageFetcher,
        *,
        publish: Callable[[JobEvent], None] | None = None,
        publish_tag: str | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.repo = repo
        self.queue = queue
        self.blobs = blobs
        self.doorbell = doorbell
        self.fetcher = fetcher
        self.publish = publish
        self.publish_tag = publish_tag
        self.ledger = UpstreamLedger(queue.engine)
        self.id = f"{socket.gethostname()}:{os.getpid()}:upstream:{uuid.uuid4().hex[:6]}"
        self.models = catalog.upstream_models
        self.fallbacks = catalog.fallback_models
        self.max_in_flight = settings.upstream_max_in_flight
        self.output_check = load_output_check(settings)
        self.breakers = {name: Breaker(p) for name, p in catalog.providers.items()}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.jobs: dict[str, ClaimedJob] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._stop = threading.Event()
        self._listener = doorbell.listener()
        self._cancels = doorbell.listener(CANCELS)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._next_client = 0

    @property
    def enabled(self) -> bool:
        """Whether the catalog gives it anything to serve."""
        return self.catalog.has_remote_work

    # -- running ------------------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Serve until stop() (the main loop of `easel worker --upstream`)."""
        log.info(
            "upstream worker %s ready (models: %s)", self.id, self.models + [m.name for m in self.fallbacks]
        )
        asyncio.run(self._main())

    def start(self) -> None:
        """Serve in a thread (inside `easel serve`)."""
        self._thread = threading.Thread(target=self.run_forever, name="easel-upstream", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Make the loop end (from a signal handler or another thread): it aborts its calls in flight
        and gives their jobs back to the queue."""
        self._stop.set()
        self._listener.interrupt()
        self._cancels.interrupt()

    def stop(self, timeout: float = 10.0) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        executor = ThreadPoolExecutor(THREADS, thread_name_prefix="easel-upstream")
        loop.set_default_executor(executor)
        self._slots = {n: asyncio.Semaphore(p.max_concurrent) for n, p in self.catalog.providers.items()}
        # Several small connection pools, not one large one: httpx's pool does work per request that grows
        # with its connections (benchmarks/gateway.py), so calls are spread over pools of CALLS_PER_POOL.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=CALLS_PER_POOL)
        async with contextlib.AsyncExitStack() as stack:
            self._clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(limits=limits, trust_env=False, follow_redirects=False)
                )
                for _ in range(max(1, -(-self.max_in_flight // CALLS_PER_POOL)))
            ]
            keeper = asyncio.create_task(self._keep_leases())
            try:
                await self._claim_loop()
            finally:
                keeper.cancel()
                await self._give_back()
        executor.shutdown(wait=False, cancel_futures=True)

    async def _claim_loop(self) -> None:
        idle = self._idle_seconds()
        while not self._stop.is_set():
            if len(self.tasks) >= self.max_in_flight:
                await asyncio.wait(list(self.tasks.values()), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                job = await asyncio.to_thread(self._claim)
            except Exception:
                log.exception("upstream worker: claim failed; retrying")
                await asyncio.sleep(1.0)
                continue
            if job is not None:
                self.jobs[job.id] = job
                self.tasks[job.id] = asyncio.create_task(self._run(job))
                continue
            await asyncio.to_thread(self._listener.wait, idle)

    def _idle_seconds(self) -> float:
        """How long to sleep on the doorbell with nothing to claim: a fallback's wait ends without a ring."""
        waits = [m.fallback_after_seconds or 1.0 for m in self.fallbacks]
        return max(0.05, min([self.settings.idle_check_seconds, *[w / 4 for w in waits]]))

    def _claim(self) -> ClaimedJob | None:
        if self.models:
            jobs = self.queue.claim_batch(self.id, models=self.models, max_images=1)
            if jobs:
                return jobs[0]
        for entry in self.fallbacks:
            waited = timedelta(seconds=entry.fallback_after_seconds or 0)
            jobs = self.queue.claim_batch(self.id, models=[entry.name], max_images=1, waited=waited)
            if jobs:
                return jobs[0]
        return None

    async def _keep_leases(self) -> None:
        """Extend the leases of the jobs in flight every third of a lease; between beats, a rung cancel
        bell makes it read which jobs it still holds. A job it no longer holds has its task canceled."""
        beat_every = max(0.2, self.settings.lease_seconds / 3)
        last_beat = last_sync = 0.0
        while True:
            rung = await asyncio.to_thread(self._cancels.wait, min(beat_every, CIRCUIT_SYNC_SECONDS))
            now = time.monotonic()
            jobs = [self.jobs[i] for i in list(self.tasks) if i in self.jobs]
            try:
                if now - last_sync >= CIRCUIT_SYNC_SECONDS:
                    last_sync = now
                    await self._sync_circuits()
                beat = now - last_beat >= beat_every
                if jobs and (beat or rung):
                    check = self.queue.heartbeat if beat else self.queue.held
                    held = await asyncio.to_thread(check, jobs)
                    if beat:
                        last_beat = now
                    for j in jobs:
                        if j.id not in held and (task := self.tasks.get(j.id)) is not None:
                            log.info("upstream job %s was canceled or taken over: aborting its call", j.id)
                            task.cancel()
            except Exception:
                log.exception("upstream worker: lease keeping failed; retrying")

    async def _sync_circuits(self) -> None:
        now = utcnow()
        for circuit in await asyncio.to_thread(self.ledger.circuits):
            breaker = self.breakers.get(circuit.provider)
            if breaker is not None:
                breaker.adopt(circuit, now)

    async def _give_back(self) -> None:
        """On stop: cancel the calls in flight and give their jobs back to the queue."""
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for job in self.jobs.values():
            try:
                await asyncio.to_thread(self.queue.release, job)
            except Exception:
                log.exception("could not give job %s back; its lease will expire", job.id)

    # -- one job ------------------------------------------------------------------------------------

    async def _run(self, job: ClaimedJob) -> None:
        started = time.monotonic()
        ended = True
        try:
            await self._serve(job, started)
        except asyncio.CancelledError:
            ended = False  # canceled by its client (already ended) or the worker is stopping
            raise
        except Exception as e:
            error_id = uuid.uuid4().hex[:12]
            log.exception("upstream job %s failed (error id %s)", job.id, error_id)
            storage = isinstance(e, OSError)
            code = STORAGE_ERROR if storage else GENERATION_FAILED
            message = storage_error_message(error_id) if storage else generation_failed_message(error_id)
            await self._fail(job, code, message)
        finally:
            self.tasks.pop(job.id, None)
            if ended or not self._stop.is_set():  # a stopping worker gives the others back
                self.jobs.pop(job.id, None)
            if ended:
                announce_ended([job.id], self.publish, self.doorbell, self.publish_tag)

    async def _serve(self, job: ClaimedJob, started: float) -> None:
        entry = self.catalog.resolve(job.spec.model)
        route = self.catalog.route(entry)
        source, mask = await asyncio.to_thread(self._inputs, job)
        trace = secrets.token_hex(16)
        tried: list[str] = []
        for remote in route:
            assert remote.provider is not None
            provider = self.catalog.providers[remote.provider]
            why_not = self._fits(remote, job) if remote is not entry else None
            breaker = self.breakers[provider.name]
            allowed, probe = breaker.allow(utcnow())
            if why_not is not None or not allowed:
                code = "not_supported" if why_not is not None else "circuit_open"
                await self._record(job, remote, provider, trace, "skipped", 0, 0, code=code, message=why_not)
                tried.append(f"{remote.name} ({provider.name}): {code}")
                continue
            if probe is not None:
                await asyncio.to_thread(self.ledger.save_circuit, probe)
            outcome = await self._call(job, remote, provider, source, mask, trace)
            if outcome.error is None:
                if self.output_check is not None:  # docs/policy.md, "Outputs"
                    reasons = await asyncio.to_thread(self._refusals, outcome.images, job)
                    if reasons:
                        await self._fail(job, OUTPUT_REJECTED, output_rejected_message(reasons[0]))
                        return
                served = Served(remote.name, provider.name, outcome.request_id)
                elapsed = int((time.monotonic() - started) * 1000)
                await asyncio.to_thread(self._store, job, outcome.images, elapsed, served)
                return
            if outcome.error.rejected:
                await self._fail(
                    job, UPSTREAM_REJECTED, f"The provider refused the request: {outcome.error.message}"
                )
                return
            tried.append(f"{remote.name} ({provider.name}): {outcome.error.code}")
        await self._fail(
            job,
            UPSTREAM_UNAVAILABLE,
            "No provider could serve this generation after retries and fallbacks: " + "; ".join(tried),
        )

    async def _call(
        self,
        job: ClaimedJob,
        remote: ModelEntry,
        provider: ProviderEntry,
        source: bytes | None,
        mask: bytes | None,
        trace: str,
    ) -> Outcome:
        """One provider, with its retries: the images, or the error that ended the attempts."""
        client = self._clients[self._next_client % len(self._clients)]
        self._next_client += 1
        began = time.monotonic()
        retries = 0
        request_id: str | None = None
        http_status: int | None = None
        error: UpstreamError | None = None
        try:
            async with self._slots[provider.name]:
                began = time.monotonic()
                while True:
                    try:
                        key = read_key(provider, self.catalog.base_dir)
                    except ValueError as e:
                        error = UpstreamError("upstream_credentials", str(e))
                        break
                    call = UpstreamCall(
                        provider,
                        remote,
                        job.spec,
                        key,
                        headers={
                            "traceparent": f"00-{trace}-{secrets.token_hex(8)}-01",
                            "Idempotency-Key": f"easel-{job.id}-{job.attempts}-{remote.name}-{retries}",
                        },
                        source=source,
                        mask=mask,
                    )
                    try:
                        result = await asyncio.wait_for(
                            call_provider(client, call), timeout=provider.timeout_seconds
                        )
                        request_id, http_status = result.request_id, result.http_status
                        images, size = await self._images(result.images)
                    except TimeoutError:
                        error = UpstreamError(
                            "upstream_timeout", "the provider did not answer in time", retryable=True
                        )
                    except UpstreamError as e:
                        error = e
                        request_id = e.request_id or request_id
                        http_status = e.http_status
                    else:
                        duration = int((time.monotonic() - began) * 1000)
                        await self._ok(
                            job,
                            remote,
                            provider,
                            trace,
                            duration,
                            retries,
                            images,
                            size,
                            request_id,
                            http_status,
                        )
                        return Outcome(images, request_id)
                    if not error.retryable or retries >= provider.retries:
                        break
                    retries += 1
                    delay = provider.backoff_seconds * 2 ** (retries - 1) * (0.5 + random.random())
                    if error.retry_after is not None:
                        delay = error.retry_after
                    await asyncio.sleep(min(delay, provider.max_backoff_seconds))
        except asyncio.CancelledError:
            self.breakers[provider.name].abandon(utcnow())  # a probe cut short: the next call probes
            duration = int((time.monotonic() - began) * 1000)
            await asyncio.shield(
                self._record(job, remote, provider, trace, "canceled", duration, retries, code="canceled")
            )
            raise
        assert error is not None
        duration = int((time.monotonic() - began) * 1000)
        status = "rejected" if error.rejected else "failed"
        breaker = self.breakers[provider.name]
        # A refusal is an answer: the provider is up (a probe that got one closes the circuit).
        changed = breaker.success() if error.rejected else breaker.failure(utcnow())
        if changed is not None:
            log.warning(
                "provider %s: circuit %s until %s", provider.name, changed.state, changed.opened_until
            )
            await asyncio.to_thread(self.ledger.save_circuit, changed)
        await self._record(
            job,
            remote,
            provider,
            trace,
            status,
            duration,
            retries,
            code=error.code,
            message=error.message,
            http_status=http_status,
            request_id=request_id,
        )
        return Outcome([], request_id, error)

    async def _ok(
        self,
        job: ClaimedJob,
        remote: ModelEntry,
        provider: ProviderEntry,
        trace: str,
        duration: int,
        retries: int,
        images: list[Any],
        size: int,
        request_id: str | None,
        http_status: int | None,
    ) -> None:
        if (changed := self.breakers[provider.name].success()) is not None:
            log.info("provider %s: circuit closed", provider.name)
            await asyncio.to_thread(self.ledger.save_circuit, changed)
        credits = round(
            self.catalog.credits_per_image(remote, [r.name for r in job.spec.loras]) * len(images), 6
        )
        await self._record(
            job,
            remote,
            provider,
            trace,
            "ok",
            duration,
            retries,
            images=len(images),
            size=size,
            credits=credits,
            http_status=http_status,
            request_id=request_id,
        )

    async def _images(self, items: list[bytes | str]) -> tuple[list[Any], int]:
        """The answer's images decoded (with the upload limits); URLs fetched under the fetcher's rules.
        An image that cannot be fetched or decoded makes the answer unusable (retryable)."""

        def load(item: bytes | str) -> tuple[Any, int]:
            data = item if isinstance(item, bytes) else self.fetcher.fetch(item, field="upstream image")
            image, _ = decode_upload(data, "upstream image")
            return image, len(data)

        try:
            loaded = await asyncio.gather(*(asyncio.to_thread(load, i) for i in items))
        except (ValidationFailed, EaselError) as e:
            raise UpstreamError(
                "upstream_malformed", f"an image of the answer was not usable: {e}", retryable=True
            ) from e
        return [img for img, _ in loaded], sum(n for _, n in loaded)

    async def _record(
        self,
        job: ClaimedJob,
        remote: ModelEntry,
        provider: ProviderEntry,
        trace: str,
        status: str,
        duration: int,
        retries: int,
        *,
        code: str | None = None,
        message: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        images: int = 0,
        size: int = 0,
        credits: float = 0.0,
    ) -> None:
        record = CallRecord(
            provider=provider.name,
            model=remote.name,
            upstream_model=remote.upstream_model or remote.name,
            credential=provider.credential,
            status=status,
            duration_ms=duration,
            retries=retries,
            trace_id=trace,
            created_at=utcnow() - timedelta(milliseconds=duration),
            generation_id=job.id,
            project_id=job.project_id,
            http_status=http_status,
            error_code=code,
            error_message=message,
            images=images,
            bytes=size,
            credits=credits,
            request_id=request_id,
        )
        try:
            await asyncio.to_thread(self.ledger.record, record)
        except Exception:
            log.exception("could not write the ledger row of a call for job %s", job.id)

    # -- inputs and outputs -------------------------------------------------------------------------

    def _fits(self, entry: ModelEntry, job: ClaimedJob) -> str | None:
        """Why a fallback cannot take this job (None: it can): the catalog's own check of the request
        against that entry (its tasks, sizes, n, presets), as a create is checked at the door."""
        try:
            job.spec.model_copy(update={"model": entry.name}).resolve(self.catalog)
        except ValidationFailed as e:
            return f"{entry.name}: {e.message}"
        return None

    def _refusals(self, images: list[Any], job: ClaimedJob) -> list[str]:
        """What the output check says against each image (none: all pass)."""
        assert self.output_check is not None
        return [r for img in images if (r := self.output_check(img, job.spec)) is not None]

    def _inputs(self, job: ClaimedJob) -> tuple[bytes | None, bytes | None]:
        """The job's source image and its mask (white where to paint), as PNG bytes."""
        spec = job.spec
        if spec.task is Task.TEXT_TO_IMAGE or not spec.source_image_ids:
            return None, None
        source = self._png(job, spec.source_image_ids[0])
        mask = None
        if spec.mask_image_id is not None:  # Easel's convention, white where to paint (calls.py converts)
            with Image.open(io.BytesIO(self._read(job, spec.mask_image_id))) as im:
                mask = png_bytes(im.convert("L"), 6, None)
        return source, mask

    def _read(self, job: ClaimedJob, image_id: str) -> bytes:
        return self.blobs.get(self.repo.get_image(job.project_id, image_id).storage_key)

    def _png(self, job: ClaimedJob, image_id: str) -> bytes:
        data = self._read(job, image_id)
        if data.startswith(b"\x89PNG"):
            return data
        with Image.open(io.BytesIO(data)) as im:
            return png_bytes(im.convert("RGBA"), 6, None)

    def _store(self, job: ClaimedJob, images: list[Any], elapsed_ms: int, served: Served) -> None:
        """Encode the images as the job asked, store them, complete the job (fenced). A job canceled
        meanwhile leaves no blobs behind."""
        spec = job.spec
        seeds = image_seeds(spec)
        records: list[ImageFile] = []
        for idx, img in enumerate(images):
            seed = seeds[idx] if idx < len(seeds) else seeds[-1]
            params = (
                generation_params(spec, seed) | {"provider": served.provider}
                if spec.record_parameters
                else None
            )
            enc = encode(
                img, spec.output_format, spec.output_compression, params, label=spec.provenance_label
            )
            record = generated_record(job.project_id, job.id, idx, seed, enc, spec.output_format.value)
            self.blobs.put(record.storage_key, enc.data, enc.mime)
            records.append(record)
        if not self.queue.complete(job, records, elapsed_ms, served):
            for r in records:
                try:
                    self.blobs.delete(r.storage_key)
                except Exception:
                    log.exception("could not delete blob %s", r.storage_key)

    async def _fail(self, job: ClaimedJob, code: str, message: str) -> None:
        try:
            await asyncio.to_thread(self.queue.fail, job, code, message)
        except Exception:
            log.exception("could not record the end of job %s; its lease will expire", job.id)
