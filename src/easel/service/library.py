"""The media library: a project's images (generated and uploaded), their folders and their bytes."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

from PIL.Image import Image as PILImage

from easel.domain.errors import NotFound, Unavailable
from easel.domain.failures import STORAGE_ERROR, storage_error_message
from easel.domain.generation import Image, ImageFile
from easel.domain.pages import Page, PageRequest
from easel.imaging import Encoded, decode_upload, to_png
from easel.service.fetch import ImageFetcher
from easel.storage.base import BlobNotFound, BlobStore
from easel.storage.keys import generated_image_key, upload_key
from easel.store.repository import Repository, new_id

log = logging.getLogger(__name__)


def put_bytes(blobs: BlobStore, key: str, data: bytes, mime: str) -> None:
    """Store a client's image bytes; a failing store (a full disk, S3 down) is a 503 `storage_error`
    with a stable message, its cause logged under the same error id."""
    try:
        blobs.put(key, data, mime)
    except Exception:
        error_id = secrets.token_hex(6)
        log.exception("storage error %s while storing %s", error_id, key)
        raise Unavailable(storage_error_message(error_id), STORAGE_ERROR) from None


class ImageGone(Exception):
    """The record exists but its bytes are gone (deleted meanwhile)."""


@dataclass(frozen=True)
class PreparedUpload:
    """A client's image decoded with limits and re-encoded as PNG, not yet stored."""

    record: ImageFile
    png: bytes
    image: PILImage


def generated_record(
    project_id: str, generation_id: str, index: int, seed: int, enc: Encoded, ext: str
) -> ImageFile:
    """The record of a generated image encoded as `enc`, at its storage key (engine/worker.py and the
    gateway write the bytes there, then complete the job with these records)."""
    return ImageFile(
        id=new_id(),
        index=index,
        seed=seed,
        storage_key=generated_image_key(project_id, generation_id, index, ext),
        mime=enc.mime,
        width=enc.width,
        height=enc.height,
        bytes=len(enc.data),
        sha256=enc.sha256,
    )


def prepare_upload(project_id: str, data: bytes, field: str) -> PreparedUpload:
    """Decode client bytes (limits of imaging.decode_upload) and re-encode them as PNG, which drops
    EXIF and every other metadata; `field` names the request field in refusals."""
    image, _mime = decode_upload(data, field)
    return prepare_decoded(project_id, image)


def prepare_decoded(project_id: str, image: PILImage) -> PreparedUpload:
    png = to_png(image)
    image_id = new_id()
    record = ImageFile(
        id=image_id,
        index=0,
        seed=None,
        storage_key=upload_key(project_id, image_id),
        mime="image/png",
        width=image.width,
        height=image.height,
        bytes=len(png),
        sha256=hashlib.sha256(png).hexdigest(),
    )
    return PreparedUpload(record, png, image)


class LibraryService:
    def __init__(self, repo: Repository, blobs: BlobStore, fetcher: ImageFetcher) -> None:
        self.repo = repo
        self.blobs = blobs
        self.fetcher = fetcher

    def upload(
        self, project_id: str, data: bytes, *, folder: str | None = None, field: str = "image"
    ) -> Image:
        """Store a client's image: decoded with limits, re-encoded as PNG (dropping EXIF and metadata)."""
        prepared = prepare_upload(project_id, data, field)
        put_bytes(self.blobs, prepared.record.storage_key, prepared.png, "image/png")
        return self.repo.add_upload(project_id, prepared.record, folder)

    def import_url(self, project_id: str, url: str, *, field: str, folder: str | None = None) -> Image:
        """Store the image a client named by URL (SSRF rules of service/fetch.py) or data URI."""
        return self.upload(project_id, self.fetcher.fetch(url, field=field), folder=folder, field=field)

    def get(self, project_id: str | None, image_id: str) -> Image:
        """An image of this project (None: any project, for signed links); 404 otherwise."""
        return self.repo.get_image(project_id, image_id)

    def data(self, image: ImageFile) -> bytes:
        """The bytes of an image; ImageGone when they were removed meanwhile."""
        try:
            return self.blobs.get(image.storage_key)
        except BlobNotFound:
            raise ImageGone(image.id) from None

    def folders(self, project_id: str) -> list[tuple[str | None, int]]:
        return self.repo.folders(project_id)

    def list(
        self,
        project_id: str,
        *,
        folder: str | None,
        any_folder: bool,
        page: PageRequest,
        model: str | None = None,
    ) -> Page[Image]:
        """Newest first; `model` (a canonical name) keeps the images a generation of that model made."""
        return self.repo.list_images(project_id, folder=folder, any_folder=any_folder, page=page, model=model)

    def delete_folder(self, project_id: str, folder: str) -> int:
        """Folders exist while they hold images: deleting one unfiles its images (none are deleted)."""
        moved = self.repo.unfile_folder(project_id, folder)
        if not moved:
            raise NotFound("folder", folder)
        return moved

    def move(self, project_id: str, image_id: str, folder: str | None) -> Image:
        return self.repo.move_image(project_id, image_id, folder)

    def delete(self, project_id: str, image_id: str) -> None:
        """Soft-delete the record, then remove the bytes (signed links to it stop working)."""
        img = self.repo.delete_image(project_id, image_id)
        self.blobs.delete(img.storage_key)
