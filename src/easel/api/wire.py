"""Wire-level helpers shared by every dialect."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def iso(ts: datetime | None) -> str | None:
    """A timestamp as the dialects write it: UTC, milliseconds, `Z` (`2026-01-02T03:04:05.678Z`)."""
    return None if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


class StrictWire(BaseModel):
    """A request body that refuses unknown fields (a 400 naming them), as every dialect's reference does."""

    model_config = ConfigDict(extra="forbid")


class CamelWire(BaseModel):
    """A strict request body whose fields are camelCase on the wire (snake_case in Python)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
