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
    """0007 (model_requests, workers.loaded) goes down to 0006 and up again to exactly the schema."""
    from alembic import command
    from sqlalchemy import inspect

    engine = runtime.repo.engine
    cfg = migrate._config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    assert migrate.current_revision(engine) == "0006"
    tables = inspect(engine)
    assert "model_requests" not in tables.get_table_names()
    assert "loaded" not in {c["name"] for c in tables.get_columns("workers")}
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision() == "0007"
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
