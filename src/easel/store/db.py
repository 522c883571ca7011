"""Engine creation: one place that knows the differences between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

_READ = "easel_read_only"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings Easel relies on.

    SQLite: WAL (readers never block the writer), a busy timeout, foreign keys, and every write
    transaction (`engine.begin()`) opened with BEGIN IMMEDIATE, so that a read-then-write (a claim) cannot
    deadlock on lock upgrade; a read (`reading(engine)`) opens a plain BEGIN, which in WAL mode takes no
    lock that a writer or another reader waits for.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            read = conn.get_execution_options().get(_READ, False)
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def reading(engine: Engine) -> Connection:
    """A connection for reads (`with reading(engine) as conn:`), never for writes: on SQLite its
    transaction does not take the write lock, so reads run beside writers and each other; on PostgreSQL it
    runs in autocommit, each statement in its own snapshot, which saves the BEGIN and ROLLBACK round trips
    of a transaction (a read of several statements may see a write land between two of them)."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        return conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn.execution_options(**{_READ: True})


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
