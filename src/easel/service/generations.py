"""GenerationService: the one way a generation is created (`submit`), and its reads, waits, cancel,
retry and delete.

Every dialect's create route is parse -> `submit(principal, spec, inputs)` -> render. `submit` validates
the spec against the catalog once (before anything is fetched or stored), imports the image inputs under
the SSRF and decoding limits, enhances the prompt, checks budgets and persists the uploads and the job in
one transaction, then rings the workers' doorbell. A request that fails leaves no record behind.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
from PIL.Image import Image as PILImage

from easel.domain.catalog import Catalog
from easel.domain.enhance import TEMPLATES
from easel.domain.errors import Forbidden, NotFound, ValidationFailed
from easel.domain.generation import Generation, ImageFile, ListQuery
from easel.domain.inputs import ImageInput, MaskEncoding, Role
from easel.domain.keys import Principal
from easel.domain.pages import Page
from easel.domain.policy import PolicyViolation
from easel.domain.scheduling import MAX_DEADLINE_SECONDS, Priority
from easel.domain.spec import MAX_SEED, GenerationSpec
from easel.imaging import decode_upload, mask_from_transparency
from easel.service.enhance import PromptEnhancer
from easel.service.events import EventHub
from easel.service.fetch import ImageFetcher
from easel.service.library import PreparedUpload, prepare_decoded, put_bytes
from easel.settings import Settings
from easel.storage.base import BlobStore
from easel.store.credits import QueueCaps
from easel.store.notify import CANCELS, Doorbell
from easel.store.repository import Repository
from easel.store.tables import utcnow

log = logging.getLogger(__name__)


def draw_seed() -> int:
    """The seed of a request that names none, drawn once at creation (a retry reuses it)."""
    return secrets.randbelow(MAX_SEED + 1)


@dataclass
class _Imported:
    """The image inputs of one request, resolved to image ids (new uploads not stored yet)."""

    source_ids: list[str]
    mask_id: str | None
    uploads: list[PreparedUpload]
    first_source_size: tuple[int, int] | None


class GenerationService:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        repo: Repository,
        blobs: BlobStore,
        doorbell: Doorbell,
        events: EventHub,
        fetcher: ImageFetcher,
        enhancer: PromptEnhancer,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.repo = repo
        self.blobs = blobs
        self.doorbell = doorbell
        self.events = events
        self.fetcher = fetcher
        self.enhancer = enhancer
        self.policy = settings.load_policy()
        self.policy_counts: Counter[tuple[str, str]] = Counter()  # (rule, action): requests, this process
        self._counts_lock = threading.Lock()
        self._names: dict[str, str] = {}  # project id -> name, for the policy's per-project rules

    # -- create ------------------------------------------------------------------------------------

    def submit(
        self,
        principal: Principal,
        spec: GenerationSpec,
        inputs: Sequence[ImageInput] = (),
        *,
        estimate: bool = True,
    ) -> Generation:
        """Validate, import the inputs, persist and queue a generation for `principal`'s project. The
        record returned carries its queue position and ETA unless `estimate` is False (a caller that
        waits for the job next and answers with its final state)."""
        project_id = principal.project_id
        spec = self._screened(principal, spec)
        seed = spec.seed if spec.seed is not None else draw_seed()
        resolved = self._scheduled(principal, spec.resolve(self.catalog, seed=seed, inputs=inputs))
        template = self._template(resolved)
        imported = self._import(project_id, resolved, inputs)
        if imported.first_source_size is not None:
            resolved = resolved.fit_source(self.catalog, *imported.first_source_size)
        resolved = resolved.model_copy(
            update={"source_image_ids": imported.source_ids, "mask_image_id": imported.mask_id}
        )
        if template is not None:
            resolved = resolved.model_copy(
                update={
                    "prompt": self.enhancer.enhance(resolved.prompt, template)[0],
                    "enhance_template": template,
                }
            )
        records = principal.record_parameters
        if resolved.record_parameters and not (
            records if records is not None else self.repo.records_parameters(project_id)
        ):
            resolved = resolved.model_copy(update={"record_parameters": False})  # the project opted out
        if not self.settings.provenance_label:
            resolved = resolved.model_copy(update={"provenance_label": False})
        entry = self.catalog.resolve(resolved.model)
        try:
            for upload in imported.uploads:  # bytes first; the rows commit with the job
                put_bytes(self.blobs, upload.record.storage_key, upload.png, "image/png")
            gen = self.repo.create_generation(
                project_id,
                resolved,
                max_attempts=self.settings.max_attempts,
                credits=round(
                    self.catalog.credits_per_image(entry, [r.name for r in resolved.loras]) * resolved.n, 6
                ),
                key_id=principal.key_id,
                uploads=[u.record for u in imported.uploads],
                caps=self._caps(principal),
                estimate=estimate,
            )
        except BaseException:
            for upload in imported.uploads:
                with contextlib.suppress(Exception):  # a broken store must not hide the first error
                    self.blobs.delete(upload.record.storage_key)
            raise
        self.doorbell.ring()
        return gen

    def receipt(self, project_id: str, gid: str) -> dict[str, Any]:
        """A generation's reproducibility receipt (docs/provenance.md); 404 while it has none (not yet
        succeeded, or served by a provider)."""
        found = self.repo.receipt(project_id, gid)
        if found is None:
            raise NotFound("receipt", gid)
        return found

    def _screened(self, principal: Principal, spec: GenerationSpec) -> GenerationSpec:
        """The content policy's verdict on the request, before anything else (docs/policy.md): a refusal
        raises PolicyViolation (counted, logged with the rule's name, never the prompt); the rules that
        only flag it are recorded on the job."""
        if not self.policy.rules:
            return spec
        names: tuple[str, ...] = (principal.project_id,)
        if self.policy.has_overrides:
            names += (self._project_name(principal.project_id),)
        verdict = self.policy.check([spec.prompt, spec.negative_prompt or ""], names, spec.moderation)
        decisions = [(rule, "flag") for rule in verdict.flagged]
        if verdict.refused is not None:
            decisions.append((verdict.refused.name, "refuse"))
        with self._counts_lock:  # submit runs in the API's thread pool
            self.policy_counts.update(decisions)
        if verdict.refused is not None:
            rule = verdict.refused.name
            log.info("content policy: rule %s refused a create of project %s", rule, principal.project_id)
            raise PolicyViolation(rule, verdict.refused.message)
        if verdict.flagged:
            log.info(
                "content policy: rules %s flagged a create of project %s",
                ",".join(verdict.flagged),
                principal.project_id,
            )
            return spec.model_copy(update={"policy_flags": list(verdict.flagged)})
        return spec

    def _project_name(self, project_id: str) -> str:
        name = self._names.get(project_id)
        if name is None:
            name = self._names[project_id] = self.repo.project_name(project_id)
        return name

    def _caps(self, principal: Principal) -> QueueCaps:
        per_key = principal.max_queued
        return QueueCaps(
            per_key=self.settings.max_queued_per_key if per_key is None else per_key,
            per_project=self.settings.max_queued_per_project,
        )

    @staticmethod
    def _scheduled(principal: Principal, spec: GenerationSpec) -> GenerationSpec:
        """The resolved spec's scheduling checked: priority high only for principals allowed it (403), a
        deadline in the future and at most a week ahead (400), `cancel_after` turned into a deadline
        (the earlier one wins when both are given)."""
        if spec.priority >= Priority.HIGH and not principal.high_priority:
            raise Forbidden(
                'priority: "high" is not allowed for this project; the server\'s admin allows it '
                '(PATCH /api/v1/admin/projects/{id} with {"allowHighPriority": true})'
            )
        now = utcnow()
        deadline = spec.deadline
        if deadline is not None:
            if deadline <= now:
                raise ValidationFailed.for_field("deadline", "must be in the future")
            if deadline > now + timedelta(seconds=MAX_DEADLINE_SECONDS):
                raise ValidationFailed.for_field(
                    "deadline", f"must be at most {MAX_DEADLINE_SECONDS} seconds ahead"
                )
        if spec.cancel_after is not None:
            by = now + timedelta(seconds=spec.cancel_after)
            deadline = by if deadline is None else min(deadline, by)
        return spec.model_copy(update={"deadline": deadline, "cancel_after": None})

    def _template(self, spec: GenerationSpec) -> str | None:
        """The enhancement template to apply, None for none; an unknown template is a 400."""
        if not spec.enhance:
            return None
        template = spec.enhance_template or "general"
        if template not in TEMPLATES:
            raise ValidationFailed.for_field(
                "enhance_template", f"unknown template {template!r}; allowed: {', '.join(TEMPLATES)}"
            )
        return template if self.catalog.resolve(spec.model).options.get("enhance", True) else None

    def _import(self, project_id: str, spec: GenerationSpec, inputs: Sequence[ImageInput]) -> _Imported:
        """Resolve every image input to an id: stored ones are checked, bytes decoded, URLs fetched (after
        everything local, so a request refused for its bytes fetches nothing). Nothing is stored here."""
        for field, ids in (
            ("source_image_ids", spec.source_image_ids),
            ("mask_image_id", [spec.mask_image_id] if spec.mask_image_id else []),
        ):
            for stored in ids:
                self._stored_size(project_id, stored, field)
        decoded: dict[int, PILImage] = {}
        sizes: dict[int, tuple[int, int]] = {}
        for i, inp in enumerate(inputs):
            if inp.image_id is not None:
                sizes[i] = self._stored_size(project_id, inp.image_id, inp.field)
            elif inp.data is not None:
                decoded[i] = decode_upload(inp.data, inp.field)[0]
        for i, inp in enumerate(inputs):
            if inp.url is not None:
                decoded[i] = decode_upload(self.fetcher.fetch(inp.url, field=inp.field), inp.field)[0]
        sizes |= {i: im.size for i, im in decoded.items()}
        sources = [i for i, inp in enumerate(inputs) if inp.role is Role.SOURCE]
        first_size = sizes[sources[0]] if sources else None
        uploads: dict[int, PreparedUpload] = {}
        for i, image in decoded.items():
            inp = inputs[i]
            if inp.role is Role.MASK and inp.mask_encoding is MaskEncoding.TRANSPARENT:
                if first_size is None:
                    raise ValidationFailed.for_field(inp.field, "a mask needs a source image")
                image = mask_from_transparency(image, first_size, inp.field)
            uploads[i] = prepare_decoded(project_id, image)

        def image_id(i: int) -> str:
            found = inputs[i].image_id
            return found if found is not None else uploads[i].record.id

        masks = [image_id(i) for i, inp in enumerate(inputs) if inp.role is Role.MASK]
        source_size = first_size if spec.match_source_aspect else None
        if spec.match_source_aspect and source_size is None and spec.source_image_ids:
            source_size = self._stored_size(project_id, spec.source_image_ids[0], "source_image_ids")
        return _Imported(
            source_ids=[*spec.source_image_ids, *(image_id(i) for i in sources)],
            mask_id=spec.mask_image_id or (masks[0] if masks else None),
            uploads=[uploads[i] for i in sorted(uploads)],
            first_source_size=source_size,
        )

    def _stored_size(self, project_id: str, image_id: str, field: str) -> tuple[int, int]:
        try:
            img = self.repo.get_image(project_id, image_id)
        except NotFound as e:
            raise ValidationFailed.for_field(field, f"image {image_id} not found") from e
        return img.width, img.height

    def retry(self, principal: Principal, gid: str) -> Generation:
        """Queue a failed or canceled generation again (same id, spec and seed: the same picture), budgets
        checked again like a create; 409 in any other state."""
        # The caps of the key that created it (its own, else the server default) and of the project.
        caps = QueueCaps(self.settings.max_queued_per_key, self.settings.max_queued_per_project)
        gen = self.repo.retry(principal.project_id, gid, extra_attempts=self.settings.max_attempts, caps=caps)
        self.doorbell.ring()
        return gen

    # -- reads -------------------------------------------------------------------------------------

    def get(self, project_id: str, gid: str, include_deleted: bool = False) -> Generation:
        return self.repo.get_generation(project_id, gid, include_deleted=include_deleted)

    def get_as(self, project_id: str, gid: str, what: str) -> Generation:
        """A generation of this project; a 404 that names it as the dialect does (`job`, `execution`)."""
        try:
            return self.get(project_id, gid)
        except NotFound:
            raise NotFound(what, gid) from None

    def list(self, project_id: str, query: ListQuery) -> Page[Generation]:
        return self.repo.list_generations(project_id, query)

    def images_of(self, gen: Generation) -> builtins.list[ImageFile]:
        return sorted(gen.images, key=lambda i: i.index)

    def cancel(self, project_id: str, gid: str) -> Generation:
        """Cancel a queued or running generation; a running one's worker is told at once (its cancel
        watcher: the CANCELS doorbell here, NOTIFY on PostgreSQL) and stops at the next step."""
        gen = self.repo.cancel(project_id, gid)
        self.doorbell.ring(CANCELS)
        return gen

    def delete(self, project_id: str, gid: str) -> None:
        images = self.repo.soft_delete(project_id, gid)
        self.doorbell.ring(CANCELS)  # deleting an unfinished generation cancels it
        for img in images:
            self.blobs.delete(img.storage_key)

    async def wait(self, project_id: str, gid: str, seconds: float, *, capped: bool = True) -> Generation:
        """The generation once finished, or as it stands after `seconds` (capped by
        EASEL_MAX_WAIT_SECONDS unless `capped` is False). Woken by in-process worker events; re-reads
        the store every second for workers in other processes."""
        loop = asyncio.get_running_loop()
        limit = min(seconds, self.settings.max_wait_seconds) if capped else seconds
        deadline = loop.time() + limit
        with self.events.subscribe(gid) as queue:
            while True:
                gen = await anyio.to_thread.run_sync(self.current, project_id, gid)
                remaining = deadline - loop.time()
                if gen.status.finished:
                    return gen
                if remaining <= 0:  # answered unfinished: with its queue position and ETA
                    return await anyio.to_thread.run_sync(self.get, project_id, gid)
                try:
                    async with asyncio.timeout(min(1.0, remaining)):
                        while (await queue.get()).kind != "finished":
                            pass
                except TimeoutError:
                    pass

    def changed_since(self, project_id: str, since: datetime, limit: int = 100) -> builtins.list[Generation]:
        """The project's generations whose record changed at or after `since`, oldest change first."""
        return self.repo.changed_since(project_id, since, limit)

    def current(self, project_id: str, gid: str) -> Generation:
        """The generation as it stands, without its queue position and ETA (cheaper: a waiter's poll)."""
        return self.repo.get_generation(project_id, gid, estimate=False)

    # -- integer task numbers (dialects whose ids are integers) -------------------------------------

    def task_number(self, project_id: str, gid: str) -> int:
        """The integer number of a generation of this project, assigned on first use."""
        return self.repo.task_number(project_id, gid)

    def generation_by_number(self, project_id: str, number: int) -> Generation:
        """The generation behind a task number of this project (404 otherwise)."""
        return self.get(project_id, self.repo.generation_by_number(project_id, number))

    # -- health --------------------------------------------------------------------------------------

    def health(self) -> dict[str, str]:
        """`{"status": "ok", "database": <dialect>}` once the database answers a query;
        `{"status": "unavailable", "database": "unreachable"}` when it does not (the error is logged)."""
        try:
            return {"status": "ok", "database": self.repo.ping()}
        except Exception as e:  # no traceback: a balancer polls this every few seconds
            log.warning("health check: the database does not answer: %s", e)
            return {"status": "unavailable", "database": "unreachable"}
