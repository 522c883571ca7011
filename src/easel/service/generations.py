"""GenerationService: create, read, list, cancel and delete generations; images in and out.

Every dialect calls these methods. Validation against the catalog happens here, before anything is
stored, so a request that fails validation leaves no trace.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import io
import logging

import anyio

from easel.domain.catalog import Catalog
from easel.domain.enhance import TEMPLATES
from easel.domain.errors import FieldError, NotFound, ValidationFailed
from easel.domain.generation import Generation, Image, ImageFile, ListQuery
from easel.domain.spec import GenerationSpec
from easel.imaging import decode_upload
from easel.service.enhance import PromptEnhancer
from easel.service.events import EventHub
from easel.service.fetch import ImageFetcher
from easel.settings import Settings
from easel.storage.base import BlobStore
from easel.store.notify import Doorbell
from easel.store.repository import Repository, new_id

log = logging.getLogger(__name__)


class GenerationService:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        repo: Repository,
        blobs: BlobStore,
        doorbell: Doorbell,
        events: EventHub,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.repo = repo
        self.blobs = blobs
        self.doorbell = doorbell
        self.events = events
        self.fetcher = ImageFetcher(settings)
        self.enhancer = PromptEnhancer(settings)

    # -- generations -------------------------------------------------------------------------------

    def prepare(
        self, project_id: str, spec: GenerationSpec, names: dict[str, str] | None = None
    ) -> GenerationSpec:
        """Validate and complete a spec without storing anything."""
        wire = names or {}
        resolved = spec.resolve(self.catalog, names)
        for field, ids in (
            ("source_image_ids", resolved.source_image_ids),
            ("mask_image_id", [resolved.mask_image_id] if resolved.mask_image_id else []),
        ):
            for image_id in ids:
                try:
                    self.repo.get_image(project_id, image_id)
                except NotFound as e:
                    name = wire.get(field, field)
                    raise ValidationFailed(
                        f"{name}: image {image_id} not found",
                        [FieldError(name, f"image {image_id} not found")],
                    ) from e
        if resolved.enhance:
            template = resolved.enhance_template or "general"
            if template not in TEMPLATES:
                name = wire.get("enhance_template", "enhance_template")
                raise ValidationFailed.for_field(
                    name, f"unknown template {template!r}; allowed: {', '.join(TEMPLATES)}"
                )
            entry = self.catalog.resolve(resolved.model)
            if entry.options.get("enhance", True):
                resolved = resolved.model_copy(
                    update={
                        "prompt": self.enhancer.enhance(resolved.prompt, template)[0],
                        "enhance_template": template,
                    }
                )
        return resolved

    def create(
        self, project_id: str, spec: GenerationSpec, names: dict[str, str] | None = None
    ) -> Generation:
        resolved = self.prepare(project_id, spec, names)
        if resolved.record_parameters and not self.repo.records_parameters(str(project_id)):
            resolved = resolved.model_copy(update={"record_parameters": False})  # the project opted out
        entry = self.catalog.resolve(resolved.model)
        principal = getattr(project_id, "principal", None)
        gen = self.repo.create_generation(
            str(project_id),
            resolved,
            max_attempts=self.settings.max_attempts,
            credits=round(entry.credits_per_image * resolved.n, 6),
            key_id=principal.key_id if principal is not None else None,
            key_budget=principal.budget_credits if principal is not None else None,
        )
        self.doorbell.ring()
        return gen

    def get(self, project_id: str, gid: str, include_deleted: bool = False) -> Generation:
        return self.repo.get_generation(project_id, gid, include_deleted=include_deleted)

    def list(self, project_id: str, query: ListQuery) -> tuple[list[Generation], int]:
        return self.repo.list_generations(project_id, query)

    def cancel(self, project_id: str, gid: str) -> Generation:
        return self.repo.cancel(project_id, gid)

    def delete(self, project_id: str, gid: str) -> None:
        for img in self.repo.soft_delete(project_id, gid):
            self.blobs.delete(img.storage_key)

    async def wait(self, project_id: str, gid: str, seconds: float) -> Generation:
        """The generation once finished, or as it stands after `seconds`. Woken by in-process
        worker events; re-reads the store every second for workers in other processes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(seconds, self.settings.max_wait_seconds)
        with self.events.subscribe(gid) as queue:
            while True:
                gen = await anyio.to_thread.run_sync(self.get, project_id, gid)
                remaining = deadline - loop.time()
                if gen.status.finished or remaining <= 0:
                    return gen
                try:
                    async with asyncio.timeout(min(1.0, remaining)):
                        while (await queue.get()).kind != "finished":
                            pass
                except TimeoutError:
                    pass

    # -- images ------------------------------------------------------------------------------------

    def get_image(self, project_id: str | None, image_id: str) -> Image:
        return self.repo.get_image(project_id, image_id)

    def image_bytes(self, image: Image) -> bytes:
        return self.blobs.get(image.storage_key)

    def upload_image(
        self, project_id: str, data: bytes, *, folder: str | None = None, field: str = "image"
    ) -> Image:
        """Store a client's image: decoded with limits, re-encoded as PNG (dropping EXIF and metadata)."""
        image, _mime = decode_upload(data, field)
        buf = io.BytesIO()
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        image.save(buf, "PNG")
        png = buf.getvalue()
        image_id = new_id()
        key = f"{project_id}/uploads/{image_id}.png"
        self.blobs.put(key, png, "image/png")
        record = ImageFile(
            id=image_id,
            index=0,
            seed=None,
            storage_key=key,
            mime="image/png",
            width=image.width,
            height=image.height,
            bytes=len(png),
            sha256=hashlib.sha256(png).hexdigest(),
        )
        return self.repo.add_upload(project_id, record, folder)

    def import_image_url(self, project_id: str, url: str, *, field: str, folder: str | None = None) -> Image:
        """Store the image a client named by URL (http/https, fetched with the SSRF rules of
        service/fetch.py) or data URI (decoded locally), exactly like an upload. Every refusal is a
        ValidationFailed naming `field`."""
        data = self.fetcher.fetch(url, field=field)
        return self.upload_image(project_id, data, folder=folder, field=field)

    # -- integer task numbers (dialects whose ids are integers) -------------------------------------

    def task_number(self, project_id: str, gid: str) -> int:
        """The integer number of a generation of this project, assigned on first use."""
        return self.repo.task_number(project_id, gid)

    def generation_by_number(self, project_id: str, number: int) -> Generation:
        """The generation behind a task number of this project (404 otherwise)."""
        return self.get(project_id, self.repo.generation_by_number(project_id, number))

    # -- retry ---------------------------------------------------------------------------------------

    def retry(self, project_id: str, gid: str) -> Generation:
        """Queue a failed or canceled generation again (same id and seed; 409 otherwise)."""
        gen = self.repo.retry(str(project_id), gid, extra_attempts=self.settings.max_attempts)
        self.doorbell.ring()
        return gen

    # -- media library -------------------------------------------------------------------------------

    def folders(self, project_id: str) -> builtins.list[tuple[str | None, int]]:
        return self.repo.folders(str(project_id))

    def list_images(
        self, project_id: str, *, folder: str | None, any_folder: bool, limit: int, offset: int
    ) -> tuple[builtins.list[Image], int]:
        return self.repo.list_images(
            str(project_id), folder=folder, any_folder=any_folder, limit=limit, offset=offset
        )

    def move_image(self, project_id: str, image_id: str, folder: str | None) -> Image:
        return self.repo.move_image(str(project_id), image_id, folder)

    def delete_image(self, project_id: str, image_id: str) -> None:
        """Soft-delete the record, then remove the bytes (signed links to it stop working)."""
        img = self.repo.delete_image(str(project_id), image_id)
        self.blobs.delete(img.storage_key)
