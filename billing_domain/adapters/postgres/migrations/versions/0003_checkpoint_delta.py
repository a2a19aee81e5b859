"""Checkpoints carry the delta memo: what the next run needs to re-diff only what changed.

Revision ID: 0003_checkpoint_delta
"""

from alembic import op

revision = "0003_checkpoint_delta"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # msgpack (billing_domain.services.delta_memo.DeltaMemo); NULL: the next run diffs everything.
    op.execute("ALTER TABLE billing_recon.checkpoint ADD COLUMN delta bytea")


def downgrade() -> None:
    op.execute("ALTER TABLE billing_recon.checkpoint DROP COLUMN delta")
