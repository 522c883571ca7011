"""The gateway's records as values (docs/gateway.md): one call to a provider, as the ledger keeps it, and
a provider's circuit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# The latency histogram's upper bounds, in seconds (Prometheus `le`); +Inf is added.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class CallRecord:
    """One call to a provider, as the ledger keeps it."""

    provider: str
    model: str
    upstream_model: str
    credential: str | None
    status: str  # ok | failed | rejected | canceled | skipped
    duration_ms: int
    retries: int
    trace_id: str
    created_at: datetime
    generation_id: str | None = None
    project_id: str | None = None
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    images: int = 0
    bytes: int = 0
    credits: float = 0.0
    request_id: str | None = None
    id: str = ""


@dataclass(frozen=True)
class Circuit:
    provider: str
    state: str  # closed | open | half-open
    failures: int
    opened_until: datetime | None
    cooldown_seconds: float
