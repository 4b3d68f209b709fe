"""Tenant quotas of aliases (of its live models) and live API keys (NULL: the settings' default)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("max_aliases", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_keys", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("max_keys")
        batch.drop_column("max_aliases")
