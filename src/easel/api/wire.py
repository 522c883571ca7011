"""Wire-level helpers shared by every dialect."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from easel.domain.spec import LoraRef


def iso(ts: datetime | None) -> str | None:
    """A timestamp as the dialects write it: UTC, milliseconds, `Z` (`2026-01-02T03:04:05.678Z`)."""
    return None if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


# Bounds of the numbers a request may carry (docs/security.md, "Limits"): every integer and float
# field and parameter has one, so nothing reaches the database or a computation out of its range.
MAX_OFFSET = 1_000_000_000  # list offsets
MAX_COUNT = 1_000_000_000  # rate limits (requests per hour)
MAX_CREDITS = 1e12  # budgets
MAX_EXPIRES = 2**40  # a signed link's expiry (Unix seconds; year 36812)
MAX_SIDE = 16384  # width / height in pixels (each model's catalog entry narrows it)


def _iso_only(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+(\.\d*)?\s*", value):
        raise ValueError("must be an ISO 8601 date-time (2026-01-02 or 2026-01-02T03:04:05Z)")
    return value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# A date-time on the wire: ISO 8601 text only (pydantic would read "0.5" as a Unix time), and one
# without a time zone is UTC (the store takes aware times only).
DateTime = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_utc)]


class StrictWire(BaseModel):
    """A JSON request body that refuses unknown fields (a 400 naming them), as every dialect's reference
    does, and takes every value in its JSON type: `"n": "2"` or `"n": true` is not a number, `1` is not
    a boolean (strict); no NaN or infinity. Enum and date fields say `strict=False` (JSON gives them as
    strings). A model that also reads form bodies (every value a string) sets `strict=False`."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class CamelWire(StrictWire):
    """A strict request body whose fields are camelCase on the wire (snake_case in Python)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


# A request names at most MAX_LORAS (domain/spec.py) LoRAs, which resolve() says in its words; the wire
# bounds the list well above that.
MAX_WIRE_LORAS = 16
MAX_LORA_NAME = 200
MIN_LORA_SCALE, MAX_LORA_SCALE = -4.0, 4.0


class LoraWire(StrictWire):
    """One entry of an Easel `loras` extension: `{"name": "...", "scale": 0.8}`, a LoRA of the catalog
    and its scale (the catalog's default scale when omitted). The same in every dialect that takes it."""

    name: str = Field(min_length=1, max_length=MAX_LORA_NAME)
    scale: float | None = Field(None, ge=MIN_LORA_SCALE, le=MAX_LORA_SCALE)

    @staticmethod
    def refs(loras: Sequence[LoraWire] | None) -> list[LoraRef]:
        return [LoraRef(name=lo.name, scale=lo.scale) for lo in loras or []]


def _json_text(value: Any) -> Any:
    """A form field's value is text: `loras` arrives as a JSON array in a string."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError('must be a JSON array of {"name", "scale"} objects') from None
    return value


# `loras` of a JSON body: a JSON array of LoraWire objects.
Loras = Annotated[list[LoraWire], Field(max_length=MAX_WIRE_LORAS)]
# `loras` of a body that may be a form (every value a string): the same array, or that array as JSON text.
FormLoras = Annotated[list[LoraWire], Field(max_length=MAX_WIRE_LORAS), BeforeValidator(_json_text)]


# JSON Schema pieces of the dialects' error shapes (api/openapi.py documents them per operation).
STRING: dict[str, Any] = {"type": "string"}


def json_object(required: Sequence[str] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema object with these properties, the `required` ones listed."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


FIELD_ERRORS: dict[str, Any] = {
    "type": "array",
    "items": json_object(["field", "message"], field=STRING, message=STRING),
}
