"""Pages of a list (pure): the opaque cursor, what a page request asks and what a page holds.

Lists are newest first by (created_at, id) (images: (created_at, index, id)). A cursor is the key of the
last item of a page, base64url-encoded JSON: the next page is the items strictly after it in that order,
an index range scan whatever the depth (docs/api/native.md, "Pages"). Cursors are opaque to clients and
carry no secret: a forged one only moves within the caller's own project's list.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from easel.domain.errors import ValidationFailed

# A page's total is counted exactly up to this many matching rows (an index-only range scan of at most
# TOTAL_CAP + 1 entries); beyond it the total is None unless the request asks for the exact count.
TOTAL_CAP = 10_000
MAX_CURSOR_LENGTH = 400

T = TypeVar("T")


@dataclass(frozen=True)
class Cursor:
    """The key of the last item of a page, in the list's order."""

    created_at: datetime
    id: str
    index: int = 0  # images: the image's index within its generation

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), self.id, self.index], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, field: str = "cursor") -> Cursor:
        bad = ValidationFailed.for_field(field, "not a cursor this server issued (use nextCursor as given)")
        if not text or len(text) > MAX_CURSOR_LENGTH or not text.isascii():
            raise bad
        try:
            created, ident, index = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            when = datetime.fromisoformat(created)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise bad from None
        if (
            not isinstance(ident, str)
            or not isinstance(index, int)
            or isinstance(index, bool)
            or len(ident) > 64
        ):
            raise bad
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return cls(when.astimezone(UTC), ident, index)


@dataclass(frozen=True)
class PageRequest:
    """limit items after `cursor` (or after skipping `offset`); `exact_total` counts every match."""

    limit: int = 20
    offset: int = 0
    cursor: Cursor | None = None
    exact_total: bool = False


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page: its items, whether more follow (and the cursor to them), and the total number of
    matches: exact up to TOTAL_CAP (or when asked for), else None."""

    items: list[T]
    has_more: bool
    total: int | None
    next_cursor: str | None
