"""One page of a list, at the same cost at any depth (domain/pages.py; the indexes of migration 0010).

- By cursor: the rows strictly after the cursor's key in the list's order (newest first), a row-value
  range `(created_at, id) < (:c, :i)` on the list's index: no row before it is read.
- By offset: the page's ids are found first by an index-only scan that skips `offset` entries, then
  only those rows are read (a "deferred join"), so skipped rows cost an index entry each, not a row.
- `limit + 1` rows are fetched: `has_more` needs no count.
- The total: a count of at most TOTAL_CAP + 1 matching index entries; None beyond (a client pages with
  `hasMore` / `nextCursor`), or the exact count when the request asks for it (its cost grows with the
  list: docs/api/native.md, "Pages").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, func, literal, select, tuple_

from easel.domain.pages import TOTAL_CAP, Cursor, Page, PageRequest


def read(
    conn: Connection,
    table: Table,
    where: Sequence[ColumnElement[bool]],
    req: PageRequest,
    *,
    alternatives: Sequence[ColumnElement[bool]] = (),
    with_index: bool = False,
) -> Page[Any]:
    """A page of `table`'s rows matching `where` (and any one of `alternatives`, when given): its rows,
    whether more follow, the cursor to them and the total (exact when the last page by offset tells it)."""
    if alternatives:
        rows, more = page_rows_of_any(conn, table, where, alternatives, req)
    else:
        rows, more = page_rows(conn, table, where, req, with_index=with_index)
    count = total(conn, table, where, req.exact_total, alternatives)
    if count is None and not more and req.cursor is None:
        count = req.offset + len(rows)
    return Page(rows, more, count, next_cursor(rows, more, with_index=with_index))


def _key(table: Table, with_index: bool) -> list[Any]:
    c = table.c
    return [c.created_at, c.index, c.id] if with_index else [c.created_at, c.id]


def page_rows(
    conn: Connection,
    table: Table,
    where: Sequence[ColumnElement[bool]],
    req: PageRequest,
    *,
    with_index: bool = False,
) -> tuple[list[Any], bool]:
    """The page's rows, newest first, and whether more follow."""
    key = _key(table, with_index)
    order = [k.desc() for k in key]
    conds = list(where)
    if req.cursor is not None:
        after = req.cursor
        values = [after.created_at, after.index, after.id] if with_index else [after.created_at, after.id]
        conds.append(tuple_(*key) < tuple_(*(literal(v, k.type) for k, v in zip(key, values, strict=True))))
    if req.offset:
        ids = select(table.c.id).where(*conds).order_by(*order).limit(req.limit + 1).offset(req.offset)
        query = select(table).where(table.c.id.in_(ids.scalar_subquery()))
    else:
        query = select(table).where(*conds).limit(req.limit + 1)
    rows = list(conn.execute(query.order_by(*order)).all())
    return rows[: req.limit], len(rows) > req.limit


def page_rows_of_any(
    conn: Connection,
    table: Table,
    where: Sequence[ColumnElement[bool]],
    alternatives: Sequence[ColumnElement[bool]],
    req: PageRequest,
) -> tuple[list[Any], bool]:
    """A page of the rows that match `where` and any one of `alternatives` (a status list): one
    index-ordered range per alternative, merged here, instead of one range that the database would
    have to sort (an IN list does not keep an index's order)."""
    if len(alternatives) == 1:
        return page_rows(conn, table, [*where, alternatives[0]], req)
    wanted = PageRequest(req.offset + req.limit, 0, req.cursor)
    merged: list[Any] = []
    for alt in alternatives:
        part, _ = page_rows(conn, table, [*where, alt], wanted)
        merged += part
    merged.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    rows = merged[req.offset : req.offset + req.limit + 1]
    return rows[: req.limit], len(rows) > req.limit


def next_cursor(rows: Sequence[Any], has_more: bool, *, with_index: bool = False) -> str | None:
    if not has_more or not rows:
        return None
    last = rows[-1]
    return Cursor(last.created_at, last.id, last.index if with_index else 0).encode()


def total(
    conn: Connection,
    table: Table,
    where: Sequence[ColumnElement[bool]],
    exact: bool,
    alternatives: Sequence[ColumnElement[bool]] = (),
) -> int | None:
    """How many rows match: exactly when asked, else counted up to TOTAL_CAP (None beyond it); with
    `alternatives`, the sum of each one's count (each an index range)."""
    if len(alternatives) > 1:
        counts = [total(conn, table, [*where, alt], exact) for alt in alternatives]
        if any(c is None for c in counts):
            return None
        n = sum(c for c in counts if c is not None)
        return n if exact or n <= TOTAL_CAP else None
    if alternatives:
        where = [*where, alternatives[0]]
    if exact:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())
    capped = select(literal(1).label("one")).select_from(table).where(*where).limit(TOTAL_CAP + 1).subquery()
    n = int(conn.execute(select(func.count()).select_from(capped)).scalar_one())
    return n if n <= TOTAL_CAP else None
