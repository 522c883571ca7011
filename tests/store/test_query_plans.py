"""Every list reads an index range in the list's order (migration 0010; store/pages.py): the plan of each
query a list runs, on SQLite and on PostgreSQL, has no scan of the table and no sort.

The queries are the ones the API really runs: they are captured from the engine while the routes are
called, then explained with their own parameters. On PostgreSQL the planner is told to avoid sequential
scans and sorts (`enable_seqscan`, `enable_sort` off): with a handful of rows it would otherwise prefer
them, and with them off it still uses one where no index can serve the query, which is what this test
catches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

BIG_TABLES = ("generations", "images", "webhook_messages")


@contextmanager
def captured(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and any(t in statement for t in BIG_TABLES):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def problems(engine: Any, statement: str, parameters: Any) -> list[str]:
    """What is wrong with a query's plan: a scan of a big table, or a sort. An offset page's outer
    query (`id IN (SELECT id ... LIMIT ? OFFSET ?) ORDER BY ...`) sorts only the page's own rows, so its
    plan is read without that last ORDER BY: what must not sort is the subquery that skips the offset."""
    cut = statement.rfind(") ORDER BY ")
    if "IN (SELECT" in statement and cut > 0:
        statement = statement[: cut + 1]
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            details = [str(r[-1]) for r in rows]
            bad = [d for d in details if d.startswith("SCAN") and any(f"SCAN {t}" in d for t in BIG_TABLES)]
            bad += [d for d in details if "TEMP B-TREE FOR ORDER BY" in d]
            return [f"{d}  <- {details}" for d in bad]
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_sort = off")
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar_one()
        plan = json.loads(plan) if isinstance(plan, str) else plan
        found: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            kind = node.get("Node Type", "")
            if kind == "Seq Scan" and node.get("Relation Name") in BIG_TABLES:
                found.append(f"Seq Scan on {node['Relation Name']}")
            if kind in ("Sort", "Incremental Sort"):
                found.append(f"{kind} by {node.get('Sort Key')}")
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0]["Plan"])
        conn.rollback()
        return found


def test_every_list_query_reads_an_index_in_order(api: Any, runtime: Any) -> None:
    ids = [
        api.post("/api/v1/generations", json={"prompt": "a", "size": "64x64"}).json()["data"]["id"]
        for _ in range(4)
    ]
    api.post(f"/api/v1/generations/{ids[0]}/cancel")
    api.delete(f"/api/v1/generations/{ids[1]}")
    runtime.make_worker().run_once()
    up = api.post("/api/v1/images", files={"file": ("a.png", _png(), "image/png")}, data={"folder": "f"})
    assert up.status_code == 201, up.text
    first = api.get("/api/v1/generations", params={"limit": 1}).json()["pagination"]["nextCursor"]
    image_cursor = api.get("/api/v1/images", params={"limit": 1}).json()["pagination"]["nextCursor"]
    assert first and image_cursor

    calls: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/generations", {}),
        ("/api/v1/generations", {"status": "pending"}),
        ("/api/v1/generations", {"status": "pending,success,canceled"}),
        ("/api/v1/generations", {"includeDeleted": "true"}),
        ("/api/v1/generations", {"includeDeleted": "true", "status": "canceled,pending"}),
        ("/api/v1/generations", {"offset": 2, "limit": 1}),
        ("/api/v1/generations", {"cursor": first, "limit": 1}),
        ("/api/v1/generations", {"cursor": first, "status": "success,pending"}),
        ("/api/v1/generations", {"includeTotal": "true"}),
        (f"/api/v1/generations/{ids[2]}", {}),
        ("/api/v1/images", {}),
        ("/api/v1/images", {"folder": "f"}),
        ("/api/v1/images", {"folder": ""}),
        ("/api/v1/images", {"cursor": image_cursor}),
        ("/api/v1/images", {"offset": 1}),
        ("/api/v1/webhooks/messages", {}),
        ("/api/v1/webhooks/messages", {"offset": 1}),
    ]
    engine = runtime.repo.engine
    report: list[str] = []
    explained = 0
    for path, params in calls:
        with captured(engine) as seen:
            r = api.get(path, params=params)
            assert r.status_code == 200, (path, params, r.text)
        assert seen, f"no query captured for {path} {params}"
        for statement, parameters in seen:
            explained += 1
            report += [
                f"{path} {params}: {p}\n    {statement}" for p in problems(engine, statement, parameters)
            ]
    assert explained >= len(calls)
    assert not report, "\n".join(report)


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()
