"""Reconciliation runs, findings, ledger identities and the append-only rebuild audit.

Revision ID: 0001
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE billing_recon.recon_run (
        run_id       text PRIMARY KEY,
        scope        text        NOT NULL,
        source       text        NOT NULL,          -- dagster | cli | api
        started_at   timestamptz NOT NULL,
        finished_at  timestamptz,
        cut          jsonb       NOT NULL DEFAULT '{}',
        summary      jsonb       NOT NULL DEFAULT '{}',
        stats        jsonb       NOT NULL DEFAULT '{}'
    );
    CREATE TABLE billing_recon.finding (
        finding_id   bigserial PRIMARY KEY,
        run_id       text        NOT NULL REFERENCES billing_recon.recon_run (run_id),
        entity_type  text        NOT NULL CHECK (entity_type IN ('account', 'transaction', 'ledger')),
        entity_id    text        NOT NULL,
        kind         text        NOT NULL,
        severity     text        NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
        detail       text        NOT NULL,
        expected     jsonb,                          -- what the events say
        actual       jsonb,                          -- what the projection says
        topic        text,
        "partition"  integer,
        "offset"     bigint,
        event_id     text,
        created_at   timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX finding_run_idx ON billing_recon.finding (run_id, entity_type, kind);
    CREATE INDEX finding_entity_idx ON billing_recon.finding (entity_type, entity_id);
    CREATE TABLE billing_recon.ledger_identity (
        run_id       text    NOT NULL REFERENCES billing_recon.recon_run (run_id),
        currency     text    NOT NULL,
        identity     text    NOT NULL,
        description  text    NOT NULL,
        left_minor   bigint  NOT NULL,
        right_minor  bigint  NOT NULL,
        holds        boolean NOT NULL,
        PRIMARY KEY (run_id, currency, identity)
    );
    CREATE TABLE billing_recon.rebuild_audit (
        audit_id     bigserial PRIMARY KEY,
        recorded_at  timestamptz NOT NULL DEFAULT now(),
        actor        text        NOT NULL,
        reason       text        NOT NULL,
        operation    text        NOT NULL,          -- rebuild_accounts | rebuild_transactions | ...
        run_id       text,
        dry_run      boolean     NOT NULL,
        entity_type  text        NOT NULL,
        entity_ids   jsonb       NOT NULL,
        cut          jsonb       NOT NULL DEFAULT '{}',
        before       jsonb       NOT NULL DEFAULT '{}',
        after        jsonb       NOT NULL DEFAULT '{}',
        outcome      text        NOT NULL,          -- applied | dry_run | refused | failed | partial
        details      jsonb       NOT NULL DEFAULT '{}'
    );
    -- Audit rows are evidence: nobody edits or deletes them, whatever role they use.
    CREATE FUNCTION billing_recon.refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'billing_recon.rebuild_audit is append-only';
    END $$;
    CREATE TRIGGER rebuild_audit_append_only BEFORE UPDATE OR DELETE ON billing_recon.rebuild_audit
        FOR EACH ROW EXECUTE FUNCTION billing_recon.refuse_audit_change();
    """)


def downgrade() -> None:
    op.execute("DROP TABLE billing_recon.rebuild_audit, billing_recon.ledger_identity, "
               "billing_recon.finding, billing_recon.recon_run CASCADE")
    op.execute("DROP FUNCTION billing_recon.refuse_audit_change()")
