"""Which BlobStore the settings name: the local folder (default) or an S3-compatible bucket."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from easel.storage.base import BlobStore
from easel.storage.local import LocalBlobStore

if TYPE_CHECKING:
    from easel.settings import Settings


def make_blob_store(settings: Settings) -> BlobStore:
    """`EASEL_STORAGE_URL` unset: `<data_dir>/images`; `file:///path`: that folder; `s3://bucket/prefix`:
    an S3BlobStore configured by the `EASEL_S3_*` settings (boto3 is imported only then)."""
    url = settings.storage_url
    if not url:
        return LocalBlobStore(settings.data_dir / "images")
    scheme = urlsplit(url).scheme
    if scheme == "s3":
        from easel.storage.s3 import S3BlobStore

        return S3BlobStore(
            url,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            addressing_style=settings.s3_addressing_style,
            public_endpoint_url=settings.s3_public_endpoint_url,
            presign=settings.s3_presign,
        )
    if scheme == "file":
        return LocalBlobStore(Path(unquote(urlsplit(url).path)))
    raise ValueError(f"EASEL_STORAGE_URL: unsupported {url!r} (use s3://bucket/prefix or file:///path)")
