"""Shadow projection tables for the shadow rebuild: the contract's columns, rebuilt from the events.

Unlogged: they are scratch, rebuilt from the log on every shadow rebuild.

The statements are frozen here, not imported from projection_ddl (the tables' one definition): a revision must
create the same tables whenever it runs. tests/unit/test_projection_ddl.py checks them against `shadow_ddl()`.

Revision ID: 0202_shadow
"""

from alembic import op

revision = "0202_shadow"
down_revision = "0201_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE UNLOGGED TABLE IF NOT EXISTS billing_recon.shadow_account_projection (
        account_id         text PRIMARY KEY,
        owner_id           text        NOT NULL,
        currency           char(3)     NOT NULL,
        balance_minor      bigint      NOT NULL,
        min_balance_minor  bigint      NOT NULL,
        max_balance_minor  bigint      NOT NULL,
        status             text        NOT NULL,
        version            integer     NOT NULL,
        last_event_id      text,
        updated_at         timestamptz NOT NULL
    );
    CREATE UNLOGGED TABLE IF NOT EXISTS billing_recon.shadow_transaction_projection (
        transaction_id          text PRIMARY KEY,
        source_account_id       text        NOT NULL,
        destination_account_id  text        NOT NULL,
        amount_minor            bigint      NOT NULL,
        currency                char(3)     NOT NULL,
        status                  text        NOT NULL,
        failure_reason          text,
        version                 integer     NOT NULL,
        initiated_at            timestamptz NOT NULL,
        updated_at              timestamptz NOT NULL
    );
    """)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS billing_recon.shadow_transaction_projection, "
               "billing_recon.shadow_account_projection")
