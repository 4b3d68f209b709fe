"""Audit log pages: an index on (created_at, id), the order the listing reads and its keyset cursor

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 03:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_events_created_at_id", "audit_events", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_created_at_id", table_name="audit_events")
