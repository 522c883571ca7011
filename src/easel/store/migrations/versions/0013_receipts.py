"""The reproducibility receipt of a generation (docs/provenance.md): `generations.receipt`, written by the
worker that completes it.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("receipt", sa.JSON))  # in place: no rebuild of the table


def downgrade() -> None:
    op.drop_column("generations", "receipt")
