"""The scheduling headers every create route reads (docs/api/README.md, "Scheduling headers"):
`X-Easel-Priority: high | normal | low` and `Cancel-After: <seconds>` (the job must have started within
that many seconds of its creation, else it ends canceled with `deadline_exceeded`, not charged).

A dialect applies them to its spec with `scheduled(request, spec)`; the native API's own body fields
(`priority`, `cancelAfter`, `deadline`) take precedence over the headers. An invalid value is a 400
naming the header, in the dialect's error shape.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import Request

from easel.domain.errors import ValidationFailed
from easel.domain.scheduling import PRIORITY_NAMES, parse_priority, parse_seconds
from easel.domain.spec import GenerationSpec

PRIORITY_HEADER = "X-Easel-Priority"
CANCEL_AFTER_HEADER = "Cancel-After"


def header_scheduling(request: Request) -> dict[str, Any]:
    """The spec fields the request's scheduling headers set (only those it sent)."""
    found: dict[str, Any] = {}
    raw = request.headers.get(PRIORITY_HEADER)
    if raw is not None:
        if raw.strip().lower() not in PRIORITY_NAMES:  # names only (the body also takes integers)
            raise ValidationFailed.for_field(PRIORITY_HEADER, f"must be one of {', '.join(PRIORITY_NAMES)}")
        found["priority"] = int(parse_priority(raw))
    raw = request.headers.get(CANCEL_AFTER_HEADER)
    if raw is not None:
        try:
            found["cancel_after"] = parse_seconds(raw)
        except ValueError as e:
            raise ValidationFailed.for_field(CANCEL_AFTER_HEADER, str(e)) from None
    return found


def scheduled(request: Request, spec: GenerationSpec, given: Collection[str] = ()) -> GenerationSpec:
    """`spec` with the request's scheduling headers applied, except to the fields in `given` (those the
    request's body set itself)."""
    found = header_scheduling(request)
    if "cancel_after" in given or "deadline" in given:
        found.pop("cancel_after", None)
    found = {k: v for k, v in found.items() if k not in given}
    return spec.model_copy(update=found) if found else spec
