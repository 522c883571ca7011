"""Webhook records and events (pure): what the outbox stores and what the API shows of it.

The body of a message is rendered by the native API's protocol module (`webhook_payload`) and handed to
the store, which keeps and sends those exact bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from easel.domain.generation import ImageFile, Status
from easel.domain.spec import GenerationSpec

SUCCEEDED, FAILED, CANCELED = "generation.succeeded", "generation.failed", "generation.canceled"
EVENT_TYPES = (SUCCEEDED, FAILED, CANCELED)
EVENT_OF_STATUS = {Status.SUCCEEDED: SUCCEEDED, Status.FAILED: FAILED, Status.CANCELED: CANCELED}

# Attempts per message: the first, then one per retry delay of service/webhooks.py's schedule.
MAX_ATTEMPTS = 8

# A message waiting for its next attempt is "pending" (OUTSTANDING).
OUTSTANDING, DELIVERED, FAILED_STATE, DISABLED = "pending", "delivered", "failed", "disabled"
MESSAGE_STATES = (OUTSTANDING, DELIVERED, FAILED_STATE, DISABLED)


@dataclass(frozen=True)
class GenerationEvent:
    """A job has ended: what its webhook messages report."""

    type: str  # one of EVENT_TYPES
    generation_id: str
    project_id: str
    spec: GenerationSpec
    images: Sequence[ImageFile]
    error_code: str | None
    error_message: str | None
    at: datetime


# Renders an event as the JSON body of its messages (serialised once: every attempt sends these bytes).
EventRenderer = Callable[[GenerationEvent], str]


@dataclass(frozen=True)
class Endpoint:
    id: str
    project_id: str
    url: str
    description: str | None
    event_types: list[str]
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Attempt:
    attempt: int
    url: str
    started_at: datetime
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None
    response_body: str | None


@dataclass(frozen=True)
class Message:
    id: str
    project_id: str
    endpoint_id: str | None
    generation_id: str | None
    url: str
    event_type: str
    body: str
    status: str
    attempts: int
    max_attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    attempt_log: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class Delivery:
    """One claimed attempt: what to send where, signed with which secrets."""

    message_id: str
    project_id: str
    endpoint_id: str | None
    url: str
    body: str
    attempt: int  # 1-based number of this attempt
    max_attempts: int
    claim_token: str
    secrets: list[str]  # the current secret first; a rotated-out one while its grace lasts
