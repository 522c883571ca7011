"""Generations in the order they last changed (the project-wide event stream, GET /api/v1/events): an
index on (updated_at, id). Not led by project_id: the stream reads a short recent range and filters the
project, and an index led by project_id would compete with ix_generations_project_round in PostgreSQL's
plans for the create's round lookup.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_generations_updated", "generations", ["updated_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_generations_updated", table_name="generations")
