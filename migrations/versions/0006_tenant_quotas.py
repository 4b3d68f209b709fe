"""Tenant quotas: the most live models, live versions and artifact bytes a tenant may hold (NULL: the
settings' default)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 06:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("max_models", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_versions", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_artifact_bytes", BigId, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("max_artifact_bytes")
        batch.drop_column("max_versions")
        batch.drop_column("max_models")
