"""A provider's circuit breaker (docs/gateway.md, "Cooldown").

Closed: calls go through; `failures_to_open` failed calls in a row open it. Open: the provider is
skipped (its jobs go to their fallbacks) for `cooldown` seconds; then one call is let through as a probe
(half-open) while the others keep skipping it. The probe succeeds: closed, the cooldown back to its
start; it fails: open again, the cooldown doubled (up to `max_cooldown_seconds`).

The state lives in memory, where each call asks it, and is written to `upstream_circuits` when it changes
(the caller persists what `success` / `failure` / `allow` return), so /metrics shows it and other workers
adopt an open circuit (`adopt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from easel.domain.providers import ProviderEntry
from easel.domain.upstream import Circuit

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass
class Breaker:
    provider: ProviderEntry
    state: str = CLOSED
    failures: int = 0
    opened_until: datetime | None = None
    cooldown: float = 0.0

    def __post_init__(self) -> None:
        self.cooldown = self.cooldown or self.provider.cooldown_seconds

    def snapshot(self) -> Circuit:
        return Circuit(self.provider.name, self.state, self.failures, self.opened_until, self.cooldown)

    def allow(self, now: datetime) -> tuple[bool, Circuit | None]:
        """Whether a call may go now; the new state to persist when this call is the probe."""
        if self.state == CLOSED:
            return True, None
        if self.state == OPEN and self.opened_until is not None and now >= self.opened_until:
            self.state = HALF_OPEN
            return True, self.snapshot()
        return False, None

    def success(self) -> Circuit | None:
        changed = self.state != CLOSED
        self.state, self.failures, self.opened_until = CLOSED, 0, None
        self.cooldown = self.provider.cooldown_seconds
        return self.snapshot() if changed else None

    def failure(self, now: datetime) -> Circuit | None:
        self.failures += 1
        if self.state == HALF_OPEN:
            self.cooldown = min(self.cooldown * 2, self.provider.max_cooldown_seconds)
            return self._open(now)
        if self.state == CLOSED and self.failures >= self.provider.failures_to_open:
            return self._open(now)
        return None

    def abandon(self, now: datetime) -> None:
        """A probe that ended without an answer (its job was canceled): open, due for another probe now."""
        if self.state == HALF_OPEN:
            self.state, self.opened_until = OPEN, now

    def _open(self, now: datetime) -> Circuit:
        self.state = OPEN
        self.opened_until = now + timedelta(seconds=self.cooldown)
        return self.snapshot()

    def adopt(self, circuit: Circuit, now: datetime) -> None:
        """Take over a circuit another worker opened (it still has cooldown left) while ours is closed."""
        if (
            self.state == CLOSED
            and circuit.state == OPEN
            and circuit.opened_until is not None
            and circuit.opened_until > now
        ):
            self.state, self.failures = OPEN, circuit.failures
            self.opened_until, self.cooldown = circuit.opened_until, circuit.cooldown_seconds
