"""A BlobStore in an S3-compatible bucket (AWS S3, Ceph RADOS Gateway, MinIO, Cloudflare R2).

boto3 is synchronous, like every caller of a BlobStore (workers and the service run in threads). One
client per store: boto3 clients are thread-safe. Keys live under the URL's prefix
(`s3://bucket/prefix` -> `prefix/<key>`); a single PUT is atomic in S3, so readers see old or new bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from easel.storage.base import BlobNotFound

AddressingStyle = Literal["path", "virtual", "auto"]

# SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ends with "/"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://bucket[/prefix] URL: {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"an s3:// storage URL takes no query or fragment: {url!r}")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")


def _check_key(key: str) -> str:
    """The same keys LocalBlobStore accepts: relative, no `.`/`..` segments, not empty."""
    segments = key.split("/")
    if not key or key.startswith("/") or any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class S3BlobStore:
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        addressing_style: AddressingStyle = "auto",
        public_endpoint_url: str | None = None,
        presign: bool = True,
    ) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as e:  # pragma: no cover - depends on the install
            raise RuntimeError("S3 storage needs boto3: pip install 'easel[s3]'") from e

        loc = S3Location.parse(url)
        self.bucket = loc.bucket
        self.prefix = loc.prefix
        self.presign = presign
        self.region = region
        config = Config(
            s3={"addressing_style": addressing_style},
            signature_version="s3v4",
            retries={"max_attempts": 5, "mode": "standard"},
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
        # Presigning is offline, but the signature covers the host: links for clients that reach the
        # store under another name (a public hostname in front of an internal endpoint) need a client
        # configured with that name.
        self._presigner: Any = (
            session.client("s3", endpoint_url=public_endpoint_url, config=config)
            if public_endpoint_url
            else self._client
        )
        from botocore.exceptions import ClientError

        self._client_error: type[Exception] = ClientError

    def _name(self, key: str) -> str:
        return self.prefix + _check_key(key)

    @staticmethod
    def _code(err: Exception) -> str:
        response = cast(dict[str, Any], getattr(err, "response", {}))
        return str(response.get("Error", {}).get("Code", ""))

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._name(key))
        except self._client_error as e:
            if self._code(e) in ("NoSuchKey", "404", "NotFound"):
                raise BlobNotFound(key) from e
            raise
        body = response["Body"]
        try:
            return cast(bytes, body.read())
        finally:
            body.close()

    def delete(self, key: str) -> None:
        # S3 DELETE of a missing key succeeds, which is the contract.
        self._client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._name(key))
        except self._client_error as e:
            if self._code(e) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True

    def keys(self, prefix: str = "") -> list[str]:
        out: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for obj in page.get("Contents", []):
                out.append(str(obj["Key"])[len(self.prefix) :])
        return sorted(out)

    def presigned_url(self, key: str, ttl: int) -> str:
        """A GET link to `key` that expires after `ttl` seconds (1 s to 7 days)."""
        expires = max(1, min(int(ttl), MAX_PRESIGN_SECONDS))
        url = self._presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._name(key)}, ExpiresIn=expires
        )
        return str(url)

    def public_url(self, key: str, ttl: int) -> str | None:
        """The link the API hands out: a presigned S3 URL, or None (Easel's own signed link) when
        presigning is off."""
        return self.presigned_url(key, ttl) if self.presign else None

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (tests and first-run setups)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except self._client_error as e:
            if self._code(e) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            kwargs: dict[str, Any] = {}
            if self.region and self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            self._client.create_bucket(Bucket=self.bucket, **kwargs)
