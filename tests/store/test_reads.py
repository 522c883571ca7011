"""Reads never wait for a writer: on SQLite a read transaction is a plain BEGIN (WAL lets it run beside
the one writer), only writes take BEGIN IMMEDIATE (store/db.py)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from easel.domain.generation import ListQuery
from easel.domain.spec import GenerationSpec
from easel.runtime import Runtime
from easel.store.db import make_engine, reading


def test_reads_run_while_a_write_transaction_is_open(runtime: Runtime) -> None:
    """A writer holds its transaction open (on SQLite: the database's one write lock); a GET, a list and
    the key lookup in another thread still answer, with what was committed before."""
    gen = runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="x", size="64x64"))
    repo, project = runtime.repo, runtime.default_project_id
    results: dict[str, object] = {}

    def read() -> None:
        try:
            results["get"] = repo.get_generation(project, gen.id).id
            results["list"] = [
                g.id for g in repo.list_generations(project, ListQuery((), 20, 0, False)).items
            ]
            results["keys"] = runtime.keys.all(project)
        except BaseException as e:
            results["error"] = e

    with runtime.repo.engine.begin() as conn:  # the write lock, until this block ends
        conn.execute(text("UPDATE projects SET name = name WHERE id = :id"), {"id": project})
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(20)  # before: the reads queued behind this writer for the whole busy timeout (30 s)
        finished = not reader.is_alive()
    reader.join(60)
    assert "error" not in results, results.get("error")
    assert finished, "a read waited for the open write transaction"
    assert results["get"] == gen.id and results["list"] == [gen.id]


def test_sqlite_reads_take_no_write_lock_and_writes_do(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    other = sqlite3.connect(path, timeout=0, isolation_level=None)  # a writer elsewhere, never waiting
    try:
        with reading(engine) as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
            other.execute("BEGIN IMMEDIATE")  # gets the write lock at once beside the reader
            other.execute("INSERT INTO t VALUES (1)")
            other.execute("COMMIT")
        with engine.begin() as conn:
            conn.execute(text("SELECT count(*) FROM t")).scalar_one()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()
        engine.dispose()
