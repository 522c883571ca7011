"""Budgets held by a maintained counter (store/credits.py): `spent_credits` on projects and API keys, the
credits of their charged (queued, running, succeeded) generations, so that a create checks a budget with
one conditional UPDATE instead of summing every generation of the project under its row lock. Filled
here from the generations already recorded.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

CHARGED = ("queued", "running", "succeeded")


def upgrade() -> None:
    for table in ("projects", "api_keys"):  # ALTER TABLE in place: no rebuild of tables rows refer to
        op.add_column(table, sa.Column("spent_credits", sa.Float, nullable=False, server_default="0"))
    projects = sa.table("projects", sa.column("id"), sa.column("spent_credits"))
    keys = sa.table("api_keys", sa.column("id"), sa.column("spent_credits"))
    g = sa.table(
        "generations", sa.column("id"), sa.column("project_id"), sa.column("status"), sa.column("credits")
    )
    k = sa.table("generation_keys", sa.column("generation_id"), sa.column("key_id"))
    total = sa.func.coalesce(sa.func.sum(g.c.credits), 0.0)
    charged = g.c.status.in_(CHARGED)
    by_project = sa.select(total).where(g.c.project_id == projects.c.id, charged).scalar_subquery()
    by_key = (
        sa.select(total)
        .select_from(g.join(k, k.c.generation_id == g.c.id))
        .where(k.c.key_id == keys.c.id, charged)
        .scalar_subquery()
    )
    op.execute(projects.update().values(spent_credits=by_project))
    op.execute(keys.update().values(spent_credits=by_key))


def downgrade() -> None:
    for table in ("api_keys", "projects"):
        op.drop_column(table, "spent_credits")
