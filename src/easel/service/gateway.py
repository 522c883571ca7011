"""The server admin's view of the gateway (docs/gateway.md): the providers with their circuits, the
call ledger (newest first, filtered, by cursor) and its sums per provider and day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from easel.domain.catalog import Catalog
from easel.domain.errors import Forbidden
from easel.domain.keys import Principal
from easel.domain.pages import Cursor
from easel.domain.upstream import CallRecord, Circuit
from easel.store.upstream import UpstreamLedger


@dataclass(frozen=True)
class CallPage:
    items: list[CallRecord]
    next_cursor: str | None


class GatewayService:
    def __init__(self, catalog: Catalog, ledger: UpstreamLedger, default_project_id: str) -> None:
        self.catalog = catalog
        self.ledger = ledger
        self.default_project_id = default_project_id

    def _only_server_admin(self, caller: Principal) -> None:
        if caller.project_id != self.default_project_id:
            raise Forbidden(
                "Only the server's admin (the local project) sees the gateway's providers and calls"
            )

    def providers(self, caller: Principal) -> list[tuple[dict[str, Any], Circuit | None]]:
        self._only_server_admin(caller)
        circuits = {c.provider: c for c in self.ledger.circuits()}
        return [(p.public(), circuits.get(name)) for name, p in sorted(self.catalog.providers.items())]

    def calls(
        self,
        caller: Principal,
        *,
        provider: str | None,
        status: str | None,
        since: datetime | None,
        until: datetime | None,
        generation_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> CallPage:
        self._only_server_admin(caller)
        after = None
        if cursor is not None:
            c = Cursor.decode(cursor)
            after = (c.created_at, c.id)
        rows = self.ledger.calls(
            provider=provider,
            status=status,
            since=since,
            until=until,
            generation_id=generation_id,
            after=after,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows and more else None
        return CallPage(rows, None if last is None else Cursor(last.created_at, last.id).encode())

    def daily(
        self, caller: Principal, since: datetime | None, until: datetime | None
    ) -> list[dict[str, Any]]:
        self._only_server_admin(caller)
        return self.ledger.daily(since, until)

    def metrics(self) -> dict[str, Any]:
        """What /metrics exports of the gateway (no caller: the metrics route has its own access)."""
        return self.ledger.metrics()
