"""A project's generations in the order they last changed (the project-wide event stream,
GET /api/v1/events): an index on (project_id, updated_at, id).

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
    op.create_index("ix_generations_project_updated", "generations", ["project_id", "updated_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_generations_project_updated", table_name="generations")
