"""The scheduling headers every create route reads (docs/api/README.md, "Scheduling headers"):
`X-Easel-Priority: high | normal | low` and `Cancel-After: <seconds>` (the job must have started within
that many seconds of its creation, else it ends canceled with `deadline_exceeded`, not charged).

A create route takes them as a `SchedulingHeaders` parameter and applies them to its spec with
`scheduled(spec, headers)`; the native API's own body fields (`priority`, `cancelAfter`, `deadline`)
take precedence over the headers. An invalid value is a 400 naming the header, in the dialect's error
shape.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any

from fastapi import Depends, Header

from easel.domain.errors import ValidationFailed
from easel.domain.scheduling import PRIORITY_NAMES, parse_priority, parse_seconds
from easel.domain.spec import GenerationSpec

PRIORITY_HEADER = "X-Easel-Priority"
CANCEL_AFTER_HEADER = "Cancel-After"


async def _scheduling_headers(
    priority: Annotated[
        str | None,
        Header(
            alias=PRIORITY_HEADER,
            description="The job's priority class: high, normal (default) or low ('high' needs the "
            "server admin's allowance for the project)",
        ),
    ] = None,
    cancel_after: Annotated[
        str | None,
        Header(
            alias=CANCEL_AFTER_HEADER,
            description="Seconds (e.g. 30 or 2.5) within which the job must have started; a job that "
            "has not is canceled with deadline_exceeded, without running and without charge",
        ),
    ] = None,
) -> dict[str, Any]:
    """The spec fields the request's scheduling headers set (only those it sent); a 400 naming the
    header for a bad value."""
    found: dict[str, Any] = {}
    if priority is not None:
        if priority.strip().lower() not in PRIORITY_NAMES:  # names only (the native body also takes ints)
            raise ValidationFailed.for_field(PRIORITY_HEADER, f"must be one of {', '.join(PRIORITY_NAMES)}")
        found["priority"] = int(parse_priority(priority))
    if cancel_after is not None:
        try:
            found["cancel_after"] = parse_seconds(cancel_after)
        except ValueError as e:
            raise ValidationFailed.for_field(CANCEL_AFTER_HEADER, str(e)) from None
    return found


# A create route's parameter: the scheduling its headers ask for (documented in the OpenAPI document).
SchedulingHeaders = Annotated[dict[str, Any], Depends(_scheduling_headers)]


def scheduled(spec: GenerationSpec, headers: dict[str, Any], given: Collection[str] = ()) -> GenerationSpec:
    """`spec` with the scheduling headers applied, except to the fields in `given` (those the request's
    body set itself)."""
    found = dict(headers)
    if "cancel_after" in given or "deadline" in given:
        found.pop("cancel_after", None)
    found = {k: v for k, v in found.items() if k not in given}
    return spec.model_copy(update=found) if found else spec
