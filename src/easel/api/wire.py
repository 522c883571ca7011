"""Wire-level helpers shared by every dialect."""

from __future__ import annotations

from datetime import datetime


def iso(ts: datetime | None) -> str | None:
    """A timestamp as the dialects write it: UTC, milliseconds, `Z` (`2026-01-02T03:04:05.678Z`)."""
    return None if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
