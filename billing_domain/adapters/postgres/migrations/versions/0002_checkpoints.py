"""Replay checkpoints: every aggregate's folded state and the offsets it covers.

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE billing_recon.checkpoint (
        topics        text PRIMARY KEY,              -- '<account topic>,<transaction topic>'
        code_version  text        NOT NULL,          -- a checkpoint of another code version is not trusted
        created_at    timestamptz NOT NULL,
        run_id        text,
        cut           jsonb       NOT NULL,          -- end offsets covered, per topic:partition
        tail_marks    jsonb       NOT NULL,          -- crc32 of the message at end-1: detects a recreated topic
        ledger        bytea       NOT NULL           -- msgpack: credits and debits per currency and reason
    );
    CREATE TABLE billing_recon.checkpoint_entity (
        topics        text    NOT NULL REFERENCES billing_recon.checkpoint (topics) ON DELETE CASCADE,
        entity_type   text    NOT NULL,              -- account | transaction | money
        entity_id     text    NOT NULL,
        topic         text    NOT NULL,
        "partition"   integer NOT NULL,
        state         bytea   NOT NULL,              -- msgpack of the folded state
        PRIMARY KEY (topics, entity_type, entity_id)
    );
    """)


def downgrade() -> None:
    op.execute("DROP TABLE billing_recon.checkpoint_entity, billing_recon.checkpoint")
