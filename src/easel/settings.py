"""One validated settings object, read from the environment (prefix `EASEL_`) and never at import time."""

from __future__ import annotations

import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from easel.domain.catalog import Catalog
from easel.domain.policy import Policy


def load_catalog(path: Path) -> Catalog:
    """The catalog file at `path` (relative sources in it are relative to its folder)."""
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise ValueError(f"catalog file not found: {path}") from e
    from easel.engine.sources import detect_family

    return Catalog.parse(text, base_dir=str(path.parent), origin=str(path), probe=detect_family)


_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS |= {f"{u}b": n for u, n in list(_UNITS.items()) if u not in ("", "b")}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(text: str) -> int | float | None:
    """EASEL_MODEL_MEMORY: bytes (an int: `24GiB`, `16 GB`, `512MiB`, `8000000000`), a share of the
    device's memory (a float: `60%` is 0.6), or None for `auto`. ValueError for anything else."""
    value = text.strip().lower()
    if value == "auto":
        return None
    if value.endswith("%"):
        try:
            share = float(value[:-1])
        except ValueError:
            share = -1.0
        if not 0 < share <= 100:
            raise ValueError(f"model_memory {text!r}: a share is above 0% and at most 100%")
        return share / 100
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    if m is None or m[2] not in _UNITS or float(m[1]) * _UNITS[m[2]] < 1:
        raise ValueError(
            f"model_memory {text!r}: give bytes (24GiB, 16GB, 512MiB, 8000000000), a share of the device's "
            f"memory (60%) or auto"
        )
    return int(float(m[1]) * _UNITS[m[2]])


# The checkout's models/ folder (catalog + built-in weights) when running from a source tree.
_REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EASEL_", env_file=None, extra="ignore")

    data_dir: Path = Field(Path("data"), description="Images, the SQLite database and the local secret.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite in data_dir.")
    catalog: Path = Field(_REPO_MODELS / "catalog.toml", description="The model catalog file.")
    secret_key: str | None = Field(None, description="Signs image URLs; default: generated in data_dir.")
    public_url: str | None = Field(None, description="Base URL used in links; default: the request's.")

    host: str = "127.0.0.1"
    port: int = 8000

    # Worker
    worker_enabled: bool = Field(True, description="Run a worker inside `easel serve`.")
    worker_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Models a worker serves (comma list); empty = all."
    )
    max_batch_images: int = Field(8, ge=1, le=64, description="Images per pipeline call at most.")
    max_loaded_models: int | None = Field(
        None,
        ge=1,
        le=64,
        description="At most this many pipelines loaded per worker, on top of model_memory; unset: no cap.",
    )
    model_memory: str = Field(
        "auto",
        description="The bytes of weights a worker keeps loaded (least recently used unloaded first): "
        "24GiB, 16GB, 8000000000, 60% (of the device's memory) or auto (80% of a GPU's, 50% of RAM).",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="torch's CPU threads in a worker; 0 = auto (OMP_NUM_THREADS if set, else the cores "
        "less one in `easel serve`, all of them in `easel worker`).",
    )
    lease_seconds: float = Field(30.0, gt=0)
    heartbeat_seconds: float | None = Field(None, description="Default: lease_seconds / 3.")
    max_attempts: int = Field(3, ge=1)
    idle_check_seconds: float = Field(
        5.0, gt=0, description="How often an idle worker looks for expired leases (new jobs wake it at once)."
    )
    device: str = Field("auto", description="torch device: auto, cpu, cuda, cuda:1, mps.")
    policy_file: Path | None = Field(
        None, description="A content policy (TOML rules checked at the door of every create; docs/policy.md)."
    )
    output_check: str | None = Field(
        None,
        description="module:function of a factory (given the settings) of the check every output image "
        "passes before it is stored (docs/policy.md); built in: easel.service.output_checks:phash_blocklist.",
    )
    output_blocklist_dir: Path | None = Field(
        None, description="The phash blocklist's images (PNG, JPEG, WebP) an output must not resemble."
    )
    output_blocklist_distance: int = Field(
        6,
        ge=0,
        le=32,
        description="Bits of 64 within which an output's perceptual hash matches a blocklisted one.",
    )
    provenance_label: bool = Field(
        True,
        description="Mark every generated image as made by a trained algorithm: the IPTC digital source "
        "type in XMP (docs/provenance.md).",
    )
    # The gateway (docs/gateway.md)
    upstream_max_in_flight: int = Field(
        256, ge=1, le=10_000, description="Remote jobs one gateway worker serves at once (docs/gateway.md)."
    )
    upstream_in_serve: bool = Field(
        True,
        description="`easel serve` (with or without --no-worker) runs the gateway worker when the catalog "
        "has remote models; false: only `easel worker --upstream` serves them.",
    )
    job_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="A job running longer than this since it started fails with deadline_exceeded.",
    )

    # API
    max_wait_seconds: float = Field(120.0, ge=0, description="Upper bound for `Prefer: wait=N`.")
    image_url_ttl_seconds: int = Field(3600, ge=1)
    openai_timeout_seconds: float = Field(
        120.0, gt=0, description="How long the (synchronous) OpenAI Images routes wait for a job."
    )

    # Browsers (app.py; docs/operations.md). NoDecode: a comma list, not JSON.
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port], or *) whose browser pages may call the API; "
        "empty = same-origin only (no CORS headers).",
    )
    docs_enabled: bool = Field(
        True, description="Serve the interactive API docs (/docs, /redoc) and the schema (/openapi.json)."
    )
    console_enabled: bool = Field(
        True, description="Serve the web console at / and /console/ (docs/console.md)."
    )

    # Metrics (api/metrics.py; docs/operations.md)
    metrics_enabled: bool = Field(
        True, description="Serve GET /metrics (no API key: keep it off the public network)."
    )
    metrics_window_seconds: float = Field(
        300.0, gt=0, description="The window of the latency histograms and recent-outcome gauges."
    )

    # Prompt enhancement by an OpenAI-compatible chat model (else the built-in templates)
    enhance_url: str | None = Field(
        None, description="Base URL of a chat-completions API, e.g. http://host/v1."
    )
    enhance_api_key: str | None = Field(None, description="Bearer key for enhance_url.")
    enhance_model: str = Field("gpt-4o-mini", description="Model name sent to enhance_url.")
    enhance_timeout_seconds: float = Field(10.0, gt=0, description="Then the built-in enhancer answers.")

    # Keys, limits, idempotency
    auth_enabled: bool = Field(
        True, description="Require API keys (off only via `serve --no-auth` on loopback)."
    )
    rate_limit_per_hour: int = Field(
        100, ge=0, description="Default requests per window per key; 0 = unlimited."
    )
    rate_limit_window_seconds: int = Field(3600, ge=1, description="The rate-limit window.")
    rate_limit_storage: Literal["memory", "database"] = Field(
        "memory", description="memory: one process; database: shared by every API process."
    )
    idempotency_ttl_hours: float = Field(24.0, gt=0, description="How long Idempotency-Key records are kept.")
    max_queued_per_key: int = Field(
        0,
        ge=0,
        description="Queued generations a key may have at once (its maxQueued overrides); 0 = no cap.",
    )
    max_queued_per_project: int = Field(
        1000,
        ge=0,
        description="Queued generations a project may have at once (its maxQueued overrides); 0 = no cap.",
    )

    # Image inputs by URL (service/fetch.py; docs/security.md)
    # NoDecode: the env value is a comma list (split by `_split`), not JSON.
    fetch_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts (exact name or IP literal) whose URLs skip the public-address and port checks.",
    )
    fetch_max_bytes: int = Field(20_000_000, ge=1, description="Largest image fetched by URL or data URI.")
    fetch_timeout_seconds: float = Field(15.0, gt=0, description="Total deadline of one fetch, all hops.")
    fetch_max_redirects: int = Field(5, ge=0, le=20, description="Redirects followed, each re-checked.")

    # Webhooks (service/webhooks.py; docs/webhooks.md). URLs are vetted like fetches (fetch_allow_hosts).
    webhooks_enabled: bool = Field(True, description="Run the webhook dispatcher inside `easel serve`.")
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="Deadline of one delivery attempt.")
    webhook_retry_base_seconds: float = Field(
        5.0, gt=0, description="First retry delay; later ones are fixed multiples (5s, 5m, 30m, 2h, ...)."
    )
    webhook_poll_seconds: float = Field(1.0, gt=0, description="How often the dispatcher looks for due work.")
    webhook_concurrency: int = Field(4, ge=1, le=64, description="Deliveries in flight per dispatcher.")
    webhook_secret_grace_hours: float = Field(
        24.0, ge=0, description="After a secret rotation, how long the old secret still signs too."
    )

    # Image storage (storage/; docs/operations.md). Default: the local folder <data_dir>/images.
    storage_url: str | None = Field(
        None, description="Where image bytes live: unset = <data_dir>/images; s3://bucket/prefix = S3."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 API endpoint (Ceph RGW, MinIO, R2); unset = AWS for the region."
    )
    s3_public_endpoint_url: str | None = Field(
        None, description="Endpoint presigned links name, when clients reach the store under another host."
    )
    s3_region: str | None = Field(None, description="S3 region; unset = boto3's default (AWS_REGION...).")
    s3_access_key_id: str | None = Field(None, description="Unset = boto3's credential chain.")
    s3_secret_access_key: str | None = Field(None, description="Unset = boto3's credential chain.")
    s3_addressing_style: Literal["path", "virtual", "auto"] = Field(
        "auto", description="Bucket in the path or in the host name; path for most self-hosted stores."
    )
    s3_presign: bool = Field(
        True, description="With S3: hand out presigned S3 URLs instead of Easel's signed links."
    )

    @field_validator("worker_models", "fetch_allow_hosts", "cors_origins", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("model_memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        parse_memory(v)
        return v.strip()

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        """A browser's Origin is exactly scheme://host[:port]: anything else would never match."""
        bad = [o for o in v if o != "*" and not re.fullmatch(r"https?://[^/\s?#]+", o)]
        if bad:
            raise ValueError(f"not an origin (scheme://host[:port], no path, or *): {', '.join(bad)}")
        return v

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'easel.db').resolve()}"

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_seconds or self.lease_seconds / 3

    @property
    def worker_live_within(self) -> timedelta:
        """A worker is live while its heartbeat is this recent (/healthz, /metrics, the admin's models,
        the queue's ETAs): a busy worker beats every heartbeat interval, an idle one every idle check."""
        return timedelta(seconds=max(self.lease_seconds, 3 * self.idle_check_seconds))

    def load_policy(self) -> Policy:
        """The policy file this configuration names (an empty policy without one)."""
        if self.policy_file is None:
            return Policy()
        try:
            text = self.policy_file.read_text()
        except OSError as e:
            raise ValueError(f"policy file {self.policy_file}: {e.strerror}") from e
        return Policy.parse(text, origin=str(self.policy_file))

    def load_catalog(self) -> Catalog:
        """The catalog file this configuration names (`catalog`)."""
        return load_catalog(self.catalog)

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def signing_key(self) -> bytes:
        """The HMAC key for image URLs: configured, or generated once and kept in data_dir."""
        if self.secret_key:
            return self.secret_key.encode()
        self.ensure_dirs()
        path = self.data_dir / "secret.key"
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            # Written aside, then linked into place: link fails if another process won the race,
            # and every process ends up with the same key.
            tmp = path.with_name(f".secret-{secrets.token_hex(8)}")
            tmp.write_bytes(secrets.token_hex(32).encode())
            tmp.chmod(0o600)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            return path.read_bytes().strip()
