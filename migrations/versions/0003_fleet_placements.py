"""Fleet: instance origin, drain and reconcile fields; desired placements; model replicas

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("triton_instances") as batch:
        batch.add_column(sa.Column("origin", sa.String(length=16), server_default="settings", nullable=False))
        batch.add_column(sa.Column("last_reconciled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("draining_since", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint("origin", "origin IN ('settings', 'api', 'embedded')")
    op.execute("UPDATE triton_instances SET origin = 'embedded' WHERE name = 'embedded'")
    with op.batch_alter_table("placements") as batch:
        batch.add_column(sa.Column("desired", sa.String(length=16), server_default="ready", nullable=False))
        batch.create_check_constraint("desired", "desired IN ('ready', 'absent')")
    op.create_table(
        "model_replicas",
        sa.Column("model_id", BigId, nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("replicas BETWEEN 1 AND 64", name=op.f("ck_model_replicas_replicas_range")),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_model_replicas_model_id_models"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_model_replicas")),
    )


def downgrade() -> None:
    op.drop_table("model_replicas")
    with op.batch_alter_table("placements") as batch:
        batch.drop_constraint("desired", type_="check")
        batch.drop_column("desired")
    with op.batch_alter_table("triton_instances") as batch:
        batch.drop_constraint("origin", type_="check")
        batch.drop_column("draining_since")
        batch.drop_column("last_error")
        batch.drop_column("last_reconciled_at")
        batch.drop_column("origin")
