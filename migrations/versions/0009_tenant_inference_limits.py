"""A tenant's own inference limits: request rate, burst, requests in flight (NULL: the settings' default)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("inference_rate_limit", sa.Double(), nullable=True))
        batch.add_column(sa.Column("inference_burst", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("inference_max_concurrency", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("inference_max_concurrency")
        batch.drop_column("inference_burst")
        batch.drop_column("inference_rate_limit")
