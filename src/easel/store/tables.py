"""The schema, as SQLAlchemy Core tables. Migrations (store/migrations) create exactly this."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    text,
    true,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


metadata = MetaData()

projects = Table(
    "projects",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("budget_credits", Float),  # None = unlimited
    # Credits of its charged generations (store/credits.py): exact while budget_credits is set
    Column("spent_credits", Float, nullable=False, server_default="0"),
    Column("rate_limit_per_hour", Integer),  # None = the server default
    # False: generation parameters are not written into this project's image files
    Column("record_parameters", Boolean, nullable=False, server_default=true()),
    Column("max_queued", Integer),  # None = the server default (EASEL_MAX_QUEUED_PER_PROJECT); 0 = none
    Column("allow_high_priority", Boolean, nullable=False, server_default=false()),
)

generations = Table(
    "generations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(36), ForeignKey("projects.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("model", String(200), nullable=False),
    Column("batch_key", String(400), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("spec", JSON, nullable=False),
    Column("n", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("lease_owner", String(200)),
    Column("lease_token", String(64)),
    Column("lease_expires_at", UTCDateTime()),
    Column("progress_step", Integer, nullable=False, default=0),
    Column("progress_total", Integer, nullable=False, default=0),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("credits", Float, nullable=False, default=0.0),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("processing_ms", BigInteger),
    Column("deleted_at", UTCDateTime()),
    # The job's round in its priority class (store/scheduling.py): projects take turns by it.
    Column("fair_tag", BigInteger, nullable=False, server_default="0"),
    Column("deadline_at", UTCDateTime()),  # must have started by then (None: no deadline)
    # A job a provider served (docs/gateway.md): the catalog entry that did (its own model, or a
    # fallback), its provider and the provider's id of the call.
    Column("served_by", String(200)),
    Column("provider", String(100)),
    Column("upstream_request_id", String(200)),
    # The reproducibility receipt of a job our workers ran (engine/weights.py; docs/provenance.md).
    Column("receipt", JSON),
    Index("ix_generations_finished", "finished_at"),  # the metrics' recent window
)
# The claim order (priority class first, then the round, then age), for the head of the queue and for
# a batch's compatible jobs; a project's jobs by class and round (its next round, its queued count);
# queued jobs by deadline (the sweep).
_gen = generations.c
Index("ix_generations_claim", _gen.status, _gen.priority.desc(), _gen.fair_tag, _gen.created_at, _gen.id)
Index(
    "ix_generations_batch",
    _gen.status,
    _gen.batch_key,
    _gen.priority.desc(),
    _gen.fair_tag,
    _gen.created_at,
    _gen.id,
)
Index("ix_generations_project_round", _gen.project_id, _gen.status, _gen.priority, _gen.fair_tag)
# The lists (store/pages.py; migration 0010): a project's generations newest first, and by status;
# deleted_at last, filtered inside the index.
_LIVE = text("deleted_at IS NULL")
Index(
    "ix_generations_project_status_list",
    _gen.project_id,
    _gen.status,
    _gen.created_at,
    _gen.id,
    _gen.deleted_at,
)
Index("ix_generations_project_list", _gen.project_id, _gen.created_at, _gen.id, _gen.deleted_at)
Index("ix_generations_deadline", _gen.status, _gen.deadline_at)
Index("ix_generations_updated", _gen.updated_at, _gen.id)  # the project's stream (recent changes)

images = Table(
    "images",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(36), ForeignKey("projects.id"), nullable=False),
    Column("generation_id", String(36), ForeignKey("generations.id", ondelete="CASCADE")),
    Column("index", Integer, nullable=False, default=0),
    Column("seed", BigInteger),
    Column("storage_key", String(500), nullable=False, unique=True),
    Column("mime", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("folder", String(200)),
    Column("uploaded", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("deleted_at", UTCDateTime()),
    Index("ix_images_generation", "generation_id", "index"),
)
_img = images.c
Index(
    "ix_images_live",
    _img.project_id,
    _img.created_at,
    _img.index,
    _img.id,
    sqlite_where=_LIVE,
    postgresql_where=_LIVE,
)
# A folder's images, and the unfiled ones.
Index(
    "ix_images_live_folder",
    _img.project_id,
    _img.folder,
    _img.created_at,
    _img.index,
    _img.id,
    sqlite_where=_LIVE,
    postgresql_where=_LIVE,
)
_UNFILED = text("deleted_at IS NULL AND folder IS NULL")
Index(
    "ix_images_live_unfiled",
    _img.project_id,
    _img.created_at,
    _img.index,
    _img.id,
    sqlite_where=_UNFILED,
    postgresql_where=_UNFILED,
)

# Integer ids for dialects whose clients expect them (Placewise task ids): one row per generation.
task_numbers = Table(
    "task_numbers",
    metadata,
    Column("number", Integer, primary_key=True, autoincrement=True),
    Column(
        "generation_id",
        String(36),
        ForeignKey("generations.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("project_id", String(36), ForeignKey("projects.id"), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True),  # the public part of the key
    Column("project_id", String(36), ForeignKey("projects.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("rate_limit_per_hour", Integer),  # None = the project's or the server default
    Column("budget_credits", Float),  # None = unlimited (the project's budget still applies)
    # Credits of its charged generations (store/credits.py): exact while budget_credits is set
    Column("spent_credits", Float, nullable=False, server_default="0"),
    Column("max_queued", Integer),  # None = the server default (EASEL_MAX_QUEUED_PER_KEY); 0 = none
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime()),
    Column("revoked_at", UTCDateTime()),
    Column("last_used_at", UTCDateTime()),
    Index("ix_api_keys_project", "project_id"),
)

# Which key created a generation (for per-key budgets and the usage report).
generation_keys = Table(
    "generation_keys",
    metadata,
    Column("generation_id", String(36), ForeignKey("generations.id", ondelete="CASCADE"), primary_key=True),
    Column("key_id", String(16), nullable=False, index=True),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("project_id", String(36), ForeignKey("projects.id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("route", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer),  # None while the first request is in flight
    Column("response_body", Text),
    Column("response_headers", JSON),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False, index=True),
)

rate_counters = Table(
    "rate_counters",
    metadata,
    Column("bucket", String(100), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
)

# Webhooks (store/outbox.py, service/webhooks.py, docs/webhooks.md).
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),  # ep_...
    Column("project_id", String(36), ForeignKey("projects.id"), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("description", String(200)),
    Column("event_types", JSON, nullable=False),  # [] = every event
    Column("secret", String(100), nullable=False),  # whsec_...: needed to sign, so stored as is
    Column("previous_secret", String(100)),  # still signed with until previous_secret_expires_at
    Column("previous_secret_expires_at", UTCDateTime()),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# The signing secret of a project's per-request webhook URLs (no endpoint row to hold one).
webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("project_id", String(36), ForeignKey("projects.id"), primary_key=True),
    Column("secret", String(100), nullable=False),
    Column("previous_secret", String(100)),
    Column("previous_secret_expires_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
)

# The outbox: one row per (event, destination), written in the transaction that ends the job; the row
# also carries the delivery state the dispatcher claims and updates.
webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("id", String(40), primary_key=True),  # msg_...: the webhook-id header, on every attempt
    Column("project_id", String(36), ForeignKey("projects.id"), nullable=False),
    Column("endpoint_id", String(40)),  # None: the request's own webhook URL
    Column("generation_id", String(36)),
    Column("url", Text, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("body", Text, nullable=False),  # the exact JSON sent, byte for byte, on every attempt
    Column("status", String(16), nullable=False),  # pending | delivered | failed | disabled
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime()),
    Column("claim_token", String(32)),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime()),
    Index("ix_webhook_messages_due", "status", "next_attempt_at"),
    Index("ix_webhook_messages_project_list", "project_id", "created_at", "id"),
    Index("ix_webhook_messages_generation", "generation_id"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("message_id", String(40), ForeignKey("webhook_messages.id", ondelete="CASCADE"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("url", Text, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer),
    Column("outcome", String(16), nullable=False),  # delivered | retry | failed | disabled
    Column("error", Text),
    Column("response_body", Text),  # the first 1,000 characters, for the delivery log
)

# Workers' heartbeats (store/workers.py): one row per worker process, upserted while it runs (busy or
# idle), removed when it stops gracefully. The metrics read it (api/metrics.py).
workers = Table(
    "workers",
    metadata,
    Column("id", String(200), primary_key=True),  # the lease owner: host:pid:random
    Column("hostname", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("models", JSON, nullable=False),  # [] = every model
    Column("started_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False, index=True),
    # What the worker reports it has loaded (store/workers.py): [{source, models, since, memory_bytes}];
    # None until it first reports.
    Column("loaded", JSON),
)

# Load / unload requests of the server admin (store/model_requests.py, service/models.py): one row per
# (request, worker), performed by that worker between batches.
model_requests = Table(
    "model_requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("model", String(200), nullable=False),  # the catalog's canonical name
    Column("action", String(16), nullable=False),  # load | unload
    Column("worker_id", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | done | failed | lost
    Column("error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Index("ix_model_requests_worker_status", "worker_id", "status"),
    Index("ix_model_requests_created", "created_at"),
)

# The fair scheduler's clock (store/scheduling.py): per priority class, the round of the job claimed
# last at the head of the queue. A project with nothing queued joins the queue at this round.
queue_clock = Table(
    "queue_clock",
    metadata,
    Column("priority", Integer, primary_key=True, autoincrement=False),
    Column("round", BigInteger, nullable=False),
)

# Measured speed per model (store/scheduling.py): a moving average of seconds per denoising step and
# image, updated when a job completes; the queue's ETAs are computed from it.
model_timings = Table(
    "model_timings",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("seconds_per_step", Float, nullable=False),
    Column("samples", Integer, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# The gateway's call ledger (store/upstream.py, docs/gateway.md): one row per call to a provider (its
# retries included), for the admin API, the daily sums and /metrics. `credential` is the key's name.
upstream_calls = Table(
    "upstream_calls",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),  # when the call began
    Column("generation_id", String(36)),
    Column("project_id", String(36)),
    Column("provider", String(100), nullable=False),
    Column("model", String(200), nullable=False),  # the catalog entry it served
    Column("upstream_model", String(200), nullable=False),
    Column("credential", String(200)),
    Column("status", String(16), nullable=False),  # ok | failed | rejected | canceled | skipped
    Column("http_status", Integer),
    Column("error_code", String(64)),
    Column("error_message", String(500)),
    Column("duration_ms", Integer, nullable=False),
    Column("retries", Integer, nullable=False),
    Column("images", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("credits", Float, nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("request_id", String(200)),
    Index("ix_upstream_calls_list", "created_at", "id"),
    Index("ix_upstream_calls_provider", "provider", "created_at", "id"),
    Index("ix_upstream_calls_generation", "generation_id"),
)

# Each provider's circuit as the gateway workers last saw it (store/upstream.py): shared, so every
# worker skips a provider one of them opened, and /metrics can show it.
upstream_circuits = Table(
    "upstream_circuits",
    metadata,
    Column("provider", String(100), primary_key=True),
    Column("state", String(16), nullable=False),  # closed | open | half-open
    Column("failures", Integer, nullable=False),  # failed calls in a row
    Column("opened_until", UTCDateTime()),
    Column("cooldown_seconds", Float, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)
