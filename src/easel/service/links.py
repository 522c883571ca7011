"""Links to image bytes: the store's own (a presigned S3 URL) when it has one, else Easel's signed
`/api/v1/images/{id}/file?expires=…&signature=…` link (storage/signing.py)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from easel.domain.generation import ImageFile
from easel.storage.base import BlobStore
from easel.storage.signing import UrlSigner

_OWN_LINK = re.compile(r"/api/v1/images/([^/]+)/file$")


class LinkService:
    def __init__(self, signer: UrlSigner, blobs: BlobStore, public_url: str | None) -> None:
        self.signer = signer
        self.blobs = blobs
        self.public_url = public_url.rstrip("/") if public_url else None

    @property
    def ttl(self) -> int:
        return self.signer.ttl

    def base_url(self, request_base: str) -> str:
        """The public base URL for links: configured (EASEL_PUBLIC_URL), else the one the client used."""
        return self.public_url or request_base.rstrip("/")

    def image_url(self, request_base: str, image: str | ImageFile, ttl: int | None = None) -> str:
        """An expiring link to an image's bytes (the record is needed for a presigned store URL)."""
        if not isinstance(image, str):
            direct = self.blobs.public_url(image.storage_key, ttl if ttl is not None else self.signer.ttl)
            if direct is not None:
                return direct
            image = image.id
        return f"{self.base_url(request_base)}/api/v1/images/{image}/file?{self.signer.query(image, ttl)}"

    def verify(self, image_id: str, expires: int, signature: str) -> bool:
        return self.signer.verify(image_id, expires, signature)

    def image_of_link(self, url: str) -> str | None:
        """The image id behind a valid, unexpired link this server issued; None for any other URL."""
        parts = urlsplit(url)
        match = _OWN_LINK.search(parts.path)
        if not match:
            return None
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        image_id, expires, signature = match.group(1), q.get("expires", "0"), q.get("signature", "")
        if expires.isascii() and expires.isdigit() and self.signer.verify(image_id, int(expires), signature):
            return image_id
        return None
