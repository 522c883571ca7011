"""Lists that cost the same at a million rows as at a hundred (docs/api/native.md, "Pages"): an index for
each list's filter and order, so that a page (by cursor or offset) and the bounded count of its total
are index range scans, never a scan of the table or a sort.

- generations, newest first: (project_id, created_at, id, deleted_at), which replaces
  ix_generations_project_created; with a status filter: (project_id, status, created_at, id,
  deleted_at). deleted_at comes last: a live list filters it inside the index, in the index's order (an
  index with deleted_at before created_at does not give that order on PostgreSQL, whose planner does not
  treat `deleted_at IS NULL` as fixing the column), and a list with the deleted ones uses the same index.
- images, live, newest first: partial (project_id, created_at, index, id); in a folder, partial
  (project_id, folder, created_at, index, id); unfiled, partial (project_id, created_at, index, id)
  WHERE folder IS NULL. They replace ix_images_project_folder.
- webhook messages, newest first: (project_id, created_at, id) replaces ix_webhook_messages_project_created.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LIVE = sa.text("deleted_at IS NULL")
UNFILED = sa.text("deleted_at IS NULL AND folder IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_generations_project_status_list",
        "generations",
        ["project_id", "status", "created_at", "id", "deleted_at"],
    )
    op.create_index(
        "ix_generations_project_list", "generations", ["project_id", "created_at", "id", "deleted_at"]
    )
    op.drop_index("ix_generations_project_created", table_name="generations")
    op.create_index(
        "ix_images_live",
        "images",
        ["project_id", "created_at", "index", "id"],
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_index(
        "ix_images_live_folder",
        "images",
        ["project_id", "folder", "created_at", "index", "id"],
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_index(
        "ix_images_live_unfiled",
        "images",
        ["project_id", "created_at", "index", "id"],
        sqlite_where=UNFILED,
        postgresql_where=UNFILED,
    )
    op.drop_index("ix_images_project_folder", table_name="images")
    op.create_index(
        "ix_webhook_messages_project_list", "webhook_messages", ["project_id", "created_at", "id"]
    )
    op.drop_index("ix_webhook_messages_project_created", table_name="webhook_messages")


def downgrade() -> None:
    op.create_index("ix_webhook_messages_project_created", "webhook_messages", ["project_id", "created_at"])
    op.drop_index("ix_webhook_messages_project_list", table_name="webhook_messages")
    op.create_index("ix_images_project_folder", "images", ["project_id", "folder", "created_at"])
    op.drop_index("ix_images_live_unfiled", table_name="images")
    op.drop_index("ix_images_live_folder", table_name="images")
    op.drop_index("ix_images_live", table_name="images")
    op.create_index("ix_generations_project_created", "generations", ["project_id", "created_at"])
    op.drop_index("ix_generations_project_list", table_name="generations")
    op.drop_index("ix_generations_project_status_list", table_name="generations")
