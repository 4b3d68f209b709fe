"""model_versions.released_at for keep-warm unloading; alias_history.actor

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 14:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("alias_history") as batch:
        batch.add_column(sa.Column("actor", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alias_history") as batch:
        batch.drop_column("actor")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("released_at")
