"""Load / unload requests (model_requests) and what each worker reports it has loaded (workers.loaded).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from easel.store.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("worker_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
    )
    op.create_index("ix_model_requests_worker_status", "model_requests", ["worker_id", "status"])
    op.create_index("ix_model_requests_created", "model_requests", ["created_at"])
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("loaded", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("loaded")
    op.drop_index("ix_model_requests_created", table_name="model_requests")
    op.drop_index("ix_model_requests_worker_status", table_name="model_requests")
    op.drop_table("model_requests")
