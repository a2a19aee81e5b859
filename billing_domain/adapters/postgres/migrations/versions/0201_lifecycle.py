"""Finding lifecycle: one row per finding identity (entity_type, entity_id, kind) across runs,
the status each identity had in each full run, the runs applied, and the operators' notes.

Revision ID: 0201_lifecycle
"""

from alembic import op

revision = "0201_lifecycle"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE billing_recon.finding_lifecycle (
        entity_type     text        NOT NULL,
        entity_id       text        NOT NULL,
        kind            text        NOT NULL,
        status          text        NOT NULL CHECK (status IN ('new', 'open', 'escalated', 'resolved',
                                                               'acknowledged', 'accepted')),
        severity        text        NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
        detail          text        NOT NULL,
        first_seen_run  text        NOT NULL,
        first_seen_at   timestamptz NOT NULL,
        last_seen_run   text        NOT NULL,
        last_seen_at    timestamptz NOT NULL,
        runs_seen       integer     NOT NULL DEFAULT 1,
        resolved_run    text,
        resolved_at     timestamptz,
        note            text,                     -- the operator's note of an acknowledge / accept
        operator        text,
        noted_at        timestamptz,
        updated_run     text        NOT NULL,     -- the last full run that changed this row
        PRIMARY KEY (entity_type, entity_id, kind)
    );
    CREATE INDEX finding_lifecycle_status_idx ON billing_recon.finding_lifecycle (status);
    CREATE TABLE billing_recon.finding_lifecycle_run (
        run_id       text NOT NULL,
        entity_type  text NOT NULL,
        entity_id    text NOT NULL,
        kind         text NOT NULL,
        status       text NOT NULL,               -- the status this finding had in this run
        severity     text NOT NULL,
        PRIMARY KEY (run_id, entity_type, entity_id, kind)
    );
    CREATE TABLE billing_recon.finding_lifecycle_applied (
        run_id       text PRIMARY KEY,
        finished_at  timestamptz NOT NULL,
        applied_at   timestamptz NOT NULL DEFAULT now(),
        counts       jsonb       NOT NULL DEFAULT '{}'
    );
    CREATE TABLE billing_recon.finding_note (
        note_id      bigserial PRIMARY KEY,
        recorded_at  timestamptz NOT NULL DEFAULT now(),
        entity_type  text NOT NULL,
        entity_id    text NOT NULL,
        kind         text NOT NULL,
        action       text NOT NULL CHECK (action IN ('acknowledge', 'accept')),
        note         text NOT NULL,
        operator     text NOT NULL
    );
    CREATE INDEX finding_note_key_idx ON billing_recon.finding_note (entity_type, entity_id, kind);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE billing_recon.finding_note, billing_recon.finding_lifecycle_applied, "
               "billing_recon.finding_lifecycle_run, billing_recon.finding_lifecycle")
