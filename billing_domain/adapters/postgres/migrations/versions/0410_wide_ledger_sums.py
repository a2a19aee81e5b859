"""The ledger identities' sides as numeric: a sum of valid amounts can pass what bigint holds.

Every amount in the log fits a bigint (the decoder refuses any other), but the identities add them up
over a whole currency: three credits of 2**63 - 1 are a valid, absurd log whose report must still be
stored. numeric holds any integer exactly; the columns stay integral (scale 0).
"""

from __future__ import annotations

from alembic import op

revision = "0410_wide_ledger_sums"
down_revision = "0401_audit_by_function"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE billing_recon.ledger_identity ALTER COLUMN left_minor TYPE numeric(1000, 0), "
               "ALTER COLUMN right_minor TYPE numeric(1000, 0)")


def downgrade() -> None:
    op.execute("ALTER TABLE billing_recon.ledger_identity ALTER COLUMN left_minor TYPE bigint, "
               "ALTER COLUMN right_minor TYPE bigint")
