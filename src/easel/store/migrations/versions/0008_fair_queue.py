"""The fair scheduler: rounds (generations.fair_tag), the class clock (queue_clock), priority classes,
request deadlines (generations.deadline_at), queue caps (projects/api_keys.max_queued), who may queue
priority high (projects.allow_high_priority) and measured model speeds (model_timings).

Existing priorities become classes (> 0 high, 0 normal, < 0 low); queued jobs get rounds that let their
projects take turns: the k-th queued job of a project in a class (oldest first) is in round k.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from easel.store.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("fair_tag", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("deadline_at", UTCDateTime()))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("max_queued", sa.Integer))
        # A constant default ("0", not sa.false()): SQLite then adds the column in place instead of
        # rebuilding a table other tables' rows refer to.
        batch.add_column(sa.Column("allow_high_priority", sa.Boolean, nullable=False, server_default="0"))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("max_queued", sa.Integer))

    gens = sa.table(
        "generations",
        sa.column("id", sa.String),
        sa.column("project_id", sa.String),
        sa.column("status", sa.String),
        sa.column("priority", sa.Integer),
        sa.column("created_at", UTCDateTime()),
        sa.column("fair_tag", sa.BigInteger),
    )
    op.execute(gens.update().where(gens.c.priority > 1).values(priority=1))
    op.execute(gens.update().where(gens.c.priority < -1).values(priority=-1))
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(gens.c.id, gens.c.project_id, gens.c.priority)
        .where(gens.c.status == "queued")
        .order_by(gens.c.created_at, gens.c.id)
    ).all()
    rounds: dict[tuple[str, int], int] = {}
    for r in rows:
        key = (r.project_id, r.priority)
        rounds[key] = rounds.get(key, -1) + 1
        if rounds[key]:
            conn.execute(gens.update().where(gens.c.id == r.id).values(fair_tag=rounds[key]))

    op.drop_index("ix_generations_claim", table_name="generations")
    op.create_index(
        "ix_generations_claim",
        "generations",
        ["status", sa.text("priority DESC"), "fair_tag", "created_at", "id"],
    )
    op.create_index(
        "ix_generations_batch",
        "generations",
        ["status", "batch_key", sa.text("priority DESC"), "fair_tag", "created_at", "id"],
    )
    op.create_index(
        "ix_generations_project_round", "generations", ["project_id", "status", "priority", "fair_tag"]
    )
    op.create_index("ix_generations_deadline", "generations", ["status", "deadline_at"])

    op.create_table(
        "queue_clock",
        sa.Column("priority", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("round", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(
        sa.table("queue_clock", sa.column("priority", sa.Integer), sa.column("round", sa.BigInteger)),
        [{"priority": p, "round": 0} for p in (1, 0, -1)],
    )
    op.create_table(
        "model_timings",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("seconds_per_step", sa.Float, nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_timings")
    op.drop_table("queue_clock")
    op.drop_index("ix_generations_deadline", table_name="generations")
    op.drop_index("ix_generations_project_round", table_name="generations")
    op.drop_index("ix_generations_batch", table_name="generations")
    op.drop_index("ix_generations_claim", table_name="generations")
    op.create_index("ix_generations_claim", "generations", ["status", "priority", "created_at"])
    for table, column in (
        ("api_keys", "max_queued"),
        ("projects", "allow_high_priority"),
        ("projects", "max_queued"),
        ("generations", "deadline_at"),
        ("generations", "fair_tag"),
    ):
        # SQLite (3.35+) drops a column in place; a batch rebuild would drop tables that rows refer to.
        op.drop_column(table, column)
