"""Wire models of the native API and their translation to and from the canonical model."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator

from easel.api.limits import check_json_value
from easel.api.wire import MAX_SIDE, CamelWire, DateTime, Loras, LoraWire, iso
from easel.domain.errors import EaselError
from easel.domain.families import Task
from easel.domain.generation import Generation, Image, Status
from easel.domain.inputs import ImageInput, Role
from easel.domain.keys import KeyInfo, ProjectInfo
from easel.domain.metrics import WorkerRecord
from easel.domain.model_requests import LoadedModel, ModelRequest
from easel.domain.scheduling import MAX_DEADLINE_SECONDS, PRIORITY_NAMES, Priority, parse_priority
from easel.domain.spec import MAX_PREVIEWS, MAX_SEED, GenerationSpec, OutputFormat
from easel.domain.upstream import CallRecord, Circuit
from easel.domain.urls import MAX_URL_LENGTH, is_http_url
from easel.domain.webhooks import Endpoint, GenerationEvent, Message
from easel.service.models import ModelsOverview, ModelState

# Canonical status -> the generations document's names (it has no canceled; we add it).
STATUS_NAMES: dict[Status, str] = {
    Status.QUEUED: "pending",
    Status.RUNNING: "processing",
    Status.SUCCEEDED: "success",
    Status.FAILED: "failed",
    Status.CANCELED: "canceled",
}
STATUS_BY_NAME: dict[str, Status] = {v: k for k, v in STATUS_NAMES.items()} | {s.value: s for s in Status}

# Canonical spec field -> wire field, so validation errors name what the client sent.
WIRE_NAMES = {
    "negative_prompt": "negativePrompt",
    "aspect_ratio": "aspectRatio",
    "image_size": "imageSize",
    "source_image_ids": "sourceImageId",  # inputs by URL are named sourceImageUrl / maskImageUrl
    "mask_image_id": "maskImageId",
    "enhance_template": "enhancementOptions.template",
    "output_compression": "outputCompression",
    "guidance": "guidance",
    "cancel_after": "cancelAfter",
}


def _priority(value: Any) -> int:
    return int(parse_priority(value))


# `priority`: a class name, or (for compatibility) an integer -100..100 taken by its sign.
PriorityWire = Annotated[
    int,
    BeforeValidator(_priority),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": list(PRIORITY_NAMES)},
                {"type": "integer", "minimum": -100, "maximum": 100},
            ],
            "default": "normal",
        }
    ),
]


# `meta` is stored with the generation and echoed in every response and webhook: kept small and flat.
MAX_META_BYTES = 16 * 1024
MAX_META_DEPTH = 8


class EnhancementOptions(CamelWire):
    template: str = "general"


class CreateGenerationRequest(CamelWire):
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    model: str | None = None
    task: Task | None = Field(None, strict=False)
    aspect_ratio: str | None = None
    image_size: str | None = None
    size: str | None = None
    width: int | None = Field(None, ge=1, le=MAX_SIDE)
    height: int | None = Field(None, ge=1, le=MAX_SIDE)
    n: int = Field(1, ge=1, le=100)  # and at most the model's max_n
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    steps: int | None = Field(None, ge=1, le=200)
    guidance: float | None = Field(None, ge=0, le=50)
    strength: float | None = Field(None, gt=0, le=1)
    loras: Loras | None = None  # [{"name": ..., "scale": ...}]: LoRA adapters of the catalog
    source_image_id: str | None = None
    source_image_url: str | None = Field(None, max_length=2_000_000)  # http(s) URL or data: URI
    mask_image_url: str | None = Field(None, max_length=2_000_000)
    mask_image_id: str | None = None
    auto_enhance: bool = True
    enhancement_options: EnhancementOptions | None = None
    style: str | None = None
    quality: str | None = None
    output_format: OutputFormat = Field(OutputFormat.PNG, strict=False)
    output_compression: int | None = Field(None, ge=0, le=100)
    folder: str | None = Field(None, max_length=200)
    meta: dict[str, Any] = Field(default_factory=dict)
    priority: PriorityWire = 0  # high | normal | low ("high": projects the server admin allows)
    # The job must have started within `cancelAfter` seconds of its creation, or by `deadline`.
    cancel_after: float | None = Field(None, gt=0, le=MAX_DEADLINE_SECONDS)
    deadline: DateTime | None = Field(None, strict=False)
    webhook: str | None = Field(
        None, max_length=MAX_URL_LENGTH
    )  # POSTed when the job ends (docs/webhooks.md)

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not is_http_url(v.strip()):
            raise ValueError("must be an http or https URL")
        return None if v is None else v.strip()

    record_parameters: bool = True
    # Pictures of the work in progress on the generation's event stream (docs/api/native.md, "Previews").
    previews: int = Field(0, ge=0, le=MAX_PREVIEWS)

    @field_validator("meta")
    @classmethod
    def _small_meta(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            check_json_value(v, MAX_META_DEPTH, "meta")
        except EaselError as e:
            raise ValueError(e.fields[0].message if e.fields else e.message) from None
        size = len(json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_META_BYTES:
            raise ValueError(f"must be at most {MAX_META_BYTES} bytes as JSON (it is {size})")
        return v

    def to_spec(self) -> GenerationSpec:
        task = self.task
        if task is None:
            has_mask = self.mask_image_id or self.mask_image_url
            has_source = self.source_image_id or self.source_image_url
            task = Task.INPAINT if has_mask else (Task.IMAGE_TO_IMAGE if has_source else Task.TEXT_TO_IMAGE)
        return GenerationSpec(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            model=self.model,
            task=task,
            width=self.width,
            height=self.height,
            size=self.size,
            aspect_ratio=self.aspect_ratio,
            image_size=self.image_size,
            n=self.n,
            seed=self.seed,
            steps=self.steps,
            guidance=self.guidance,
            strength=self.strength,
            loras=LoraWire.refs(self.loras),
            style=self.style,
            quality=self.quality,
            enhance=self.auto_enhance,
            enhance_template=self.enhancement_options.template if self.enhancement_options else None,
            output_format=self.output_format,
            output_compression=self.output_compression,
            folder=self.folder,
            meta=self.meta,
            priority=self.priority,
            cancel_after=self.cancel_after,
            deadline=self.deadline,
            webhook_url=self.webhook,
            record_parameters=self.record_parameters,
            previews=self.previews,
        )

    def inputs(self) -> list[ImageInput]:
        """The image inputs: stored images by id, or images by URL / data URI (imported by submit)."""
        found = []
        for role, image_id, url, id_field, url_field in (
            (Role.SOURCE, self.source_image_id, self.source_image_url, "sourceImageId", "sourceImageUrl"),
            (Role.MASK, self.mask_image_id, self.mask_image_url, "maskImageId", "maskImageUrl"),
        ):
            if image_id:
                found.append(ImageInput.stored(role, image_id, id_field))
            if url:
                found.append(ImageInput.from_url(role, url, url_field))
        return found


def image_json(img: Image, url: str) -> dict[str, Any]:
    return {
        "id": img.id,
        "storageUrl": url,
        "mimeType": img.mime,
        "width": img.width,
        "height": img.height,
        "fileSize": img.bytes,
        "sha256": img.sha256,
        "seed": img.seed,
        "index": img.index,
        "generationId": img.generation_id,
        "folder": img.folder,
        "createdAt": iso(img.created_at),
    }


def lora_json(spec: GenerationSpec) -> list[dict[str, Any]]:
    """The LoRAs a generation applies, by catalog name, each with the scale it ran at."""
    return [{"name": ref.name, "scale": ref.scale} for ref in spec.loras]


def generation_json(gen: Generation, url_for: Any, project_id: str) -> dict[str, Any]:
    """`url_for(image_id) -> str` makes each image's signed link."""
    s = gen.spec
    imgs = [image_json(i, url_for(i.id)) for i in gen.images]
    return {
        "id": gen.id,
        "projectId": project_id,
        "prompt": s.prompt,
        "originalPrompt": s.original_prompt or s.prompt,
        "negativePrompt": s.negative_prompt,
        "autoEnhance": s.enhance,
        "enhancementOptions": {"template": s.enhance_template} if s.enhance else None,
        "model": s.model,
        "task": s.task.value,
        "aspectRatio": s.aspect_ratio,
        "width": s.width,
        "height": s.height,
        "n": s.n,
        "seed": s.seed,
        "steps": s.steps,
        "guidance": s.guidance,
        "strength": s.strength,
        "loras": lora_json(s),
        "style": s.style,
        "quality": s.quality,
        "outputFormat": s.output_format.value,
        "folder": s.folder,
        "priority": Priority.of(s.priority).label,
        "deadline": iso(s.deadline),
        "webhook": s.webhook_url,
        "recordParameters": s.record_parameters,
        "status": STATUS_NAMES[gen.status],
        "progress": {"step": gen.progress_step, "total": gen.progress_total},
        "queuePosition": gen.queue_position,
        "etaSeconds": gen.eta_seconds,
        "outputImageId": imgs[0]["id"] if imgs else None,
        "outputImage": imgs[0] if imgs else None,
        "outputImageIds": [i["id"] for i in imgs],
        "outputImages": imgs,
        "processingTimeMs": gen.processing_ms,
        "retryCount": max(0, gen.attempts - 1),
        "attempts": gen.attempts,
        "errorCode": gen.error_code,
        "errorMessage": gen.error_message,
        "credits": gen.credits,
        "policyFlags": s.policy_flags,  # the content policy's rules that flagged it (docs/policy.md)
        # What served it when a provider did (docs/gateway.md): the catalog entry (its own model or a
        # fallback), the provider and the provider's id of the call; null for our own workers.
        "servedBy": None
        if gen.served is None
        else {"model": gen.served.model, "provider": gen.served.provider, "requestId": gen.served.request_id},
        "meta": s.meta,
        "createdAt": iso(gen.created_at),
        "updatedAt": iso(gen.updated_at),
        "startedAt": iso(gen.started_at),
        "finishedAt": iso(gen.finished_at),
        "deletedAt": iso(gen.deleted_at),
    }


def webhook_payload(event: GenerationEvent) -> str:
    """The JSON body of a generation event (docs/webhooks.md), serialised once: every attempt of the
    message sends these exact bytes. The outbox (store/outbox.py) stores what this returns."""
    spec = event.spec
    data = {
        "id": event.generation_id,
        "object": "generation",
        "projectId": event.project_id,
        "status": event.type.split(".", 1)[1],
        "model": spec.model,
        "prompt": spec.original_prompt or spec.prompt,
        "n": spec.n,
        "loras": lora_json(spec),
        "images": [
            {
                "id": im.id,
                "index": im.index,
                "width": im.width,
                "height": im.height,
                "mimeType": im.mime,
                "seed": im.seed,
                "path": f"/api/v1/images/{im.id}",
            }
            for im in sorted(event.images, key=lambda i: i.index)
        ],
        "error": None
        if event.error_code is None
        else {"code": event.error_code, "message": event.error_message},
        "meta": spec.meta,
        "finishedAt": iso(event.at),
    }
    body = {"type": event.type, "timestamp": iso(event.at), "data": data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def key_json(k: KeyInfo) -> dict[str, Any]:
    return {
        "id": k.id,
        "projectId": k.project_id,
        "name": k.name,
        "scopes": sorted(k.scopes),
        "rateLimitPerHour": k.rate_limit_per_hour,
        "budgetCredits": k.budget_credits,
        "maxQueued": k.max_queued,
        "createdAt": iso(k.created_at),
        "lastUsedAt": iso(k.last_used_at),
        "expiresAt": iso(k.expires_at),
        "revokedAt": iso(k.revoked_at),
    }


def project_json(p: ProjectInfo) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "budgetCredits": p.budget_credits,
        "rateLimitPerHour": p.rate_limit_per_hour,
        "recordParameters": p.record_parameters,
        "maxQueued": p.max_queued,
        "allowHighPriority": p.allow_high_priority,
    }


def model_request_json(r: ModelRequest) -> dict[str, Any]:
    """A load / unload request (GET and POST /api/v1/admin/models...)."""
    return {
        "id": r.id,
        "model": r.model,
        "action": r.action.value,
        "workerId": r.worker_id,
        "status": r.status.value,
        "error": r.error,
        "createdAt": iso(r.created_at),
        "finishedAt": iso(r.finished_at),
    }


def _loaded_json(m: LoadedModel) -> dict[str, Any]:
    return {
        "source": m.source,
        "models": list(m.models),
        "since": iso(m.since),
        "memoryBytes": m.memory_bytes,
    }


def _worker_json(w: WorkerRecord) -> dict[str, Any]:
    return {
        "id": w.id,
        "hostname": w.hostname,
        "pid": w.pid,
        "models": w.models,
        "startedAt": iso(w.started_at),
        "lastSeenAt": iso(w.last_seen_at),
        "loaded": None if w.loaded is None else [_loaded_json(m) for m in w.loaded],
    }


def _model_state_json(m: ModelState) -> dict[str, Any]:
    e = m.entry
    return {
        "name": e.name,
        "family": e.family,
        "source": e.source,
        "backend": e.backend,
        "tasks": [t.value for t in e.tasks],
        "aliases": e.aliases,
        "workers": [
            {
                "workerId": w.worker_id,
                "loaded": w.loaded,
                "since": iso(w.since),
                "memoryBytes": w.memory_bytes,
            }
            for w in m.workers
        ],
    }


def models_overview_json(o: ModelsOverview) -> dict[str, Any]:
    """GET /api/v1/admin/models: the catalog with each model's state on each live worker serving it,
    the live workers, the latest requests and the latest lost ones."""
    return {
        "models": [_model_state_json(m) for m in o.models],
        "workers": [_worker_json(w) for w in o.workers],
        "requests": [model_request_json(r) for r in o.requests],
        "lost": [model_request_json(r) for r in o.lost],
    }


def endpoint_json(ep: Endpoint, *, with_secret: bool = False) -> dict[str, Any]:
    out = {
        "id": ep.id,
        "url": ep.url,
        "description": ep.description,
        "eventTypes": ep.event_types,
        "enabled": ep.enabled,
        "disabledReason": ep.disabled_reason,
        "previousSecretExpiresAt": iso(ep.previous_secret_expires_at),
        "createdAt": iso(ep.created_at),
        "updatedAt": iso(ep.updated_at),
    }
    if with_secret:
        out["secret"] = ep.secret
    return out


def message_json(m: Message, *, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.id,
        "eventType": m.event_type,
        "generationId": m.generation_id,
        "endpointId": m.endpoint_id,
        "url": m.url,
        "status": m.status,
        "attempts": m.attempts,
        "maxAttempts": m.max_attempts,
        "nextAttemptAt": iso(m.next_attempt_at),
        "lastStatusCode": m.last_status_code,
        "lastError": m.last_error,
        "createdAt": iso(m.created_at),
        "deliveredAt": iso(m.delivered_at),
    }
    if detail:
        out["payload"] = json.loads(m.body)
        out["attemptLog"] = [
            {
                "attempt": a.attempt,
                "url": a.url,
                "startedAt": iso(a.started_at),
                "durationMs": a.duration_ms,
                "statusCode": a.status_code,
                "outcome": a.outcome,
                "error": a.error,
                "responseBody": a.response_body,
            }
            for a in m.attempt_log
        ]
    return out


def secret_json(secret: str, previous: str | None, expires: datetime | None) -> dict[str, Any]:
    return {"secret": secret, "previousSecretExpiresAt": iso(expires) if previous else None}


def upstream_call_json(c: CallRecord) -> dict[str, Any]:
    """One row of the gateway's call ledger (docs/gateway.md): the key's name, never the key."""
    return {
        "id": c.id,
        "createdAt": c.created_at,
        "generationId": c.generation_id,
        "projectId": c.project_id,
        "provider": c.provider,
        "model": c.model,
        "upstreamModel": c.upstream_model,
        "credential": c.credential,
        "status": c.status,
        "httpStatus": c.http_status,
        "errorCode": c.error_code,
        "errorMessage": c.error_message,
        "durationMs": c.duration_ms,
        "retries": c.retries,
        "images": c.images,
        "bytes": c.bytes,
        "credits": c.credits,
        "traceId": c.trace_id,
        "requestId": c.request_id,
    }


def circuit_json(c: Circuit | None) -> dict[str, Any]:
    if c is None:
        return {"state": "closed", "failures": 0, "openedUntil": None, "cooldownSeconds": None}
    return {
        "state": c.state,
        "failures": c.failures,
        "openedUntil": c.opened_until,
        "cooldownSeconds": c.cooldown_seconds,
    }
