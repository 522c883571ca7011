"""The circuit breaker's states (gateway/breaker.py) on a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from easel.domain.providers import ProviderEntry
from easel.domain.upstream import Circuit
from easel.gateway.breaker import Breaker

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def breaker() -> Breaker:
    provider = ProviderEntry(
        name="p",
        kind="openai",
        base_url="http://x",
        failures_to_open=3,
        cooldown_seconds=10,
        max_cooldown_seconds=25,
    )
    return Breaker(provider)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_failures_in_a_row_open_it_and_a_probe_after_the_cooldown_closes_it() -> None:
    b = breaker()
    assert b.failure(at(0)) is None and b.failure(at(1)) is None
    assert b.success() is None  # a success in between starts the count again
    b.failure(at(2)), b.failure(at(3))
    opened = b.failure(at(4))
    assert opened is not None and (opened.state, opened.opened_until) == ("open", at(14))
    assert b.allow(at(13)) == (False, None)
    allowed, probe = b.allow(at(14))
    assert allowed and probe is not None and probe.state == "half-open"
    assert b.allow(at(14.5)) == (False, None)  # one probe at a time
    closed = b.success()
    assert closed is not None and closed.state == "closed" and b.allow(at(15)) == (True, None)


def test_a_failed_probe_doubles_the_cooldown_up_to_its_maximum() -> None:
    b = breaker()
    for s in range(3):
        b.failure(at(s))
    assert b.allow(at(12))[0]
    again = b.failure(at(12))
    assert again is not None and again.opened_until == at(32) and again.cooldown_seconds == 20
    assert b.allow(at(32))[0]
    third = b.failure(at(32))
    assert third is not None and third.cooldown_seconds == 25  # capped
    assert b.success() is not None and b.cooldown == 10  # back to its start once closed


def test_an_abandoned_probe_lets_the_next_call_probe_and_another_worker_s_circuit_is_adopted() -> None:
    b = breaker()
    for s in range(3):
        b.failure(at(s))
    assert b.allow(at(12))[0]
    b.abandon(at(13))
    assert b.allow(at(13))[0]
    fresh = breaker()
    fresh.adopt(Circuit("p", "open", 3, at(40), 10), at(20))
    assert fresh.allow(at(30)) == (False, None) and fresh.allow(at(40))[0]
    stale = breaker()
    stale.adopt(Circuit("p", "open", 3, at(10), 10), at(20))  # its cooldown is over: nothing to adopt
    assert stale.state == "closed"
