from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from easel.store import migrate
from easel.store.tables import metadata


def test_migrations_create_exactly_the_schema(runtime) -> None:
    engine = runtime.repo.engine
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == []


def test_upgrade_is_idempotent(runtime) -> None:
    migrate.upgrade(runtime.repo.engine)
    migrate.upgrade(runtime.repo.engine)
    assert migrate.current_revision(runtime.repo.engine) == migrate.head_revision()


def test_the_latest_migration_downgrades_and_upgrades_again(runtime) -> None:
    """0011 (the spent-credits counters) goes down to 0010, 0010 (the list indexes) to 0009, 0009 (the
    project-stream index) to 0008, 0008 (rounds, deadlines, caps, queue_clock, model_timings) to 0007 (and
    0007 to 0006), and up again to exactly the schema."""
    from alembic import command
    from sqlalchemy import inspect

    from easel.domain.spec import GenerationSpec

    engine = runtime.repo.engine
    # Rows that refer to projects, keys and generations: the downgrade must not rebuild those tables.
    runtime.keys.create(runtime.default_project_id, "k", ["admin"], max_queued=3)
    runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="x", cancel_after=60))
    cfg = migrate._config()
    with engine.begin() as conn:  # 0011: the counters
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010")
    assert "spent_credits" not in {c["name"] for c in inspect(engine).get_columns("projects")}
    with engine.begin() as conn:  # 0010: the list indexes
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("generations")}
    assert "ix_generations_project_status_list" not in indexes and "ix_generations_project_created" in indexes
    assert "ix_images_project_folder" in {ix["name"] for ix in inspect(engine).get_indexes("images")}
    with engine.begin() as conn:  # 0009: the project-stream index
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008")
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("generations")}
    assert "ix_generations_updated" not in indexes and "ix_generations_claim" in indexes
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")
    assert migrate.current_revision(engine) == "0007"
    tables = inspect(engine)
    assert {"queue_clock", "model_timings"}.isdisjoint(tables.get_table_names())
    assert {"fair_tag", "deadline_at"}.isdisjoint(c["name"] for c in tables.get_columns("generations"))
    assert "max_queued" not in {c["name"] for c in tables.get_columns("api_keys")}
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    tables = inspect(engine)
    assert "model_requests" not in tables.get_table_names()
    assert "loaded" not in {c["name"] for c in tables.get_columns("workers")}
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision() == "0013"
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_0008_turns_priorities_into_classes_and_gives_queued_jobs_rounds(runtime) -> None:
    """Jobs queued before 0008: priorities become classes (> 0 high, < 0 low), and each project's queued
    jobs of a class get rounds 0, 1, 2... oldest first, so the projects take turns from the start."""
    from datetime import timedelta

    from alembic import command
    from sqlalchemy import insert, select

    from easel.store.tables import generations, projects, queue_clock, utcnow

    engine = runtime.repo.engine
    cfg = migrate._config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")
    t0 = utcnow()
    other = "p-other"
    rows = [  # (id, project, priority, status, minutes after t0)
        ("a1", runtime.default_project_id, 5, "queued", 0),
        ("a2", runtime.default_project_id, 0, "queued", 1),
        ("a3", runtime.default_project_id, 0, "queued", 2),
        ("b1", other, 0, "queued", 3),
        ("a4", runtime.default_project_id, -7, "succeeded", 4),
    ]
    with engine.begin() as conn:
        conn.execute(insert(projects).values(id=other, name="other", created_at=t0))
        for gid, pid, prio, status, minutes in rows:
            at = t0 + timedelta(minutes=minutes)
            conn.execute(
                generations.insert().values(
                    id=gid, project_id=pid, status=status, model="tiny", batch_key="k", priority=prio,
                    spec={"prompt": "x"}, n=1, attempts=0, max_attempts=3, progress_step=0,
                    progress_total=2, credits=0.0, created_at=at, updated_at=at,
                )
            )  # fmt: skip
    migrate.upgrade(engine)
    with engine.connect() as conn:
        got = {
            r.id: (r.priority, r.fair_tag)
            for r in conn.execute(select(generations.c.id, generations.c.priority, generations.c.fair_tag))
        }
        clock = dict(conn.execute(select(queue_clock.c.priority, queue_clock.c.round)).all())
    assert got == {"a1": (1, 0), "a2": (0, 0), "a3": (0, 1), "b1": (0, 0), "a4": (-1, 0)}
    assert clock == {1: 0, 0: 0, -1: 0}
    # b1 (the other project's first) is claimed before a3 (the local project's second).
    order = [j.id for _ in range(3) for j in runtime.queue.claim_batch("w", models=None, max_images=1)]
    assert order == ["a1", "a2", "b1"]
