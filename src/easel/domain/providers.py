"""Upstream providers: image APIs elsewhere that catalog entries with `backend = "upstream"` forward to
(docs/gateway.md). A provider is data, a `[providers.NAME]` section of the catalog; the gateway
(src/easel/gateway/) makes the calls.

Two kinds of API shape:

- `openai`: any server speaking the OpenAI Images API (`POST {base_url}/images/generations`, `/edits`):
  OpenAI itself, Azure OpenAI (`deployment_paths = true`, `api_version`, `auth = "api-key"`), LocalAI,
  vLLM-Omni, another Easel.
- `replicate`: Replicate's predictions API (`POST {base_url}/v1/models/{owner}/{name}/predictions`, or
  `/v1/predictions` with a version), polled until it ends, canceled with its `cancel` URL.

The key is named, never written: `api_key_env` (an environment variable) or `api_key_file` (a file, e.g.
a Docker secret). Only that name reaches the database, the logs and /metrics.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PROVIDER_KINDS = ("openai", "replicate")


class ProviderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["openai", "replicate"]
    base_url: str = Field(min_length=1)
    api_key_env: str | None = Field(None, min_length=1)
    api_key_file: str | None = Field(None, min_length=1)
    # Per call: connecting, and the whole call (a generation upstream can take a minute).
    connect_timeout_seconds: float = Field(10.0, gt=0, le=300)
    timeout_seconds: float = Field(180.0, gt=0, le=3600)
    max_concurrent: int = Field(64, ge=1, le=10_000)  # calls in flight to this provider, per worker
    # Retries of one call on 429, 5xx, timeouts and broken answers, with exponential backoff from
    # `backoff_seconds` (a Retry-After the provider sends wins, up to `max_backoff_seconds`).
    retries: int = Field(2, ge=0, le=10)
    backoff_seconds: float = Field(0.5, ge=0, le=60)
    max_backoff_seconds: float = Field(30.0, ge=0, le=600)
    # The circuit breaker: this many failed calls in a row open it; it stays open `cooldown_seconds`,
    # then lets one probe call through (half-open); each failed probe doubles the cooldown, up to
    # `max_cooldown_seconds`; a call that succeeds closes it.
    failures_to_open: int = Field(5, ge=1, le=1000)
    cooldown_seconds: float = Field(30.0, gt=0, le=3600)
    max_cooldown_seconds: float = Field(600.0, gt=0, le=86_400)
    # kind = "openai"
    auth: Literal["bearer", "api-key"] = "bearer"  # Authorization: Bearer KEY, or api-key: KEY (Azure)
    api_version: str | None = None  # Azure: sent as ?api-version=
    deployment_paths: bool = False  # Azure: {base_url}/openai/deployments/{upstream_model}/images/...
    response_format: Literal["b64_json", "url", "omit"] = "b64_json"  # omit: not sent (GPT image models)
    # kind = "replicate"
    poll_seconds: float = Field(0.5, gt=0, le=60)
    headers: dict[str, str] = Field(default_factory=dict)  # sent with every call (not secrets: logged)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _key(self) -> ProviderEntry:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValueError("set api_key_env or api_key_file, not both")
        if any(h.lower() in ("authorization", "api-key") for h in self.headers):
            raise ValueError("headers must not carry the key: name it with api_key_env or api_key_file")
        return self

    @property
    def credential(self) -> str | None:
        """The key's name (what the ledger records), never its value."""
        if self.api_key_env is not None:
            return f"env:{self.api_key_env}"
        if self.api_key_file is not None:
            return f"file:{self.api_key_file.replace(chr(92), '/').rsplit('/', 1)[-1]}"
        return None

    def public(self) -> dict[str, object]:
        """What the admin API shows of a provider (its key's name only)."""
        return {
            "id": self.name,
            "kind": self.kind,
            "baseUrl": self.base_url,
            "credential": self.credential,
            "maxConcurrent": self.max_concurrent,
            "retries": self.retries,
            "failuresToOpen": self.failures_to_open,
            "cooldownSeconds": self.cooldown_seconds,
        }
