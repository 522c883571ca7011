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
