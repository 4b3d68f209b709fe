"""Residency (issue 12): measured memory and load time per version, unreturned memory, pinned aliases

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("memory_bytes", BigId, nullable=True))
        batch.add_column(sa.Column("memory_source", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("load_seconds", sa.Double(), nullable=True))
        batch.add_column(sa.Column("memory_unreturned_bytes", BigId, nullable=True))
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("pinned_aliases", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("pinned_aliases")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("memory_unreturned_bytes")
        batch.drop_column("load_seconds")
        batch.drop_column("memory_source")
        batch.drop_column("memory_bytes")
