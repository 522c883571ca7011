"""The gateway (docs/gateway.md): what served a generation (`served_by`, `provider`,
`upstream_request_id`), the call ledger (`upstream_calls`) and the providers' circuits
(`upstream_circuits`).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from easel.store.tables import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SERVED = (("served_by", 200), ("provider", 100), ("upstream_request_id", 200))


def upgrade() -> None:
    for column, length in SERVED:  # ALTER TABLE in place: no rebuild of a table rows refer to
        op.add_column("generations", sa.Column(column, sa.String(length)))
    op.create_table(
        "upstream_calls",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("generation_id", sa.String(36)),
        sa.Column("project_id", sa.String(36)),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("upstream_model", sa.String(200), nullable=False),
        sa.Column("credential", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.String(500)),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("credits", sa.Float, nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(200)),
    )
    op.create_index("ix_upstream_calls_list", "upstream_calls", ["created_at", "id"])
    op.create_index("ix_upstream_calls_provider", "upstream_calls", ["provider", "created_at", "id"])
    op.create_index("ix_upstream_calls_generation", "upstream_calls", ["generation_id"])
    op.create_table(
        "upstream_circuits",
        sa.Column("provider", sa.String(100), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("opened_until", UTCDateTime()),
        sa.Column("cooldown_seconds", sa.Float, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("upstream_circuits")
    op.drop_index("ix_upstream_calls_generation", table_name="upstream_calls")
    op.drop_index("ix_upstream_calls_provider", table_name="upstream_calls")
    op.drop_index("ix_upstream_calls_list", table_name="upstream_calls")
    op.drop_table("upstream_calls")
    for column, _ in reversed(SERVED):
        op.drop_column("generations", column)
