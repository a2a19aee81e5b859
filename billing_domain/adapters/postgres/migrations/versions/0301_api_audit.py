"""The admin API's audit trail: one append-only row per HTTP call (who, what, answer, when).

Revision ID: 0301_api_audit
"""

from alembic import op

revision = "0301_api_audit"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE billing_recon.api_audit (
        audit_id     bigserial PRIMARY KEY,
        recorded_at  timestamptz NOT NULL DEFAULT now(),
        role         text        NOT NULL,          -- read | write | anonymous | invalid (never the token)
        method       text        NOT NULL,
        endpoint     text        NOT NULL,          -- the route template, e.g. .../accounts/{account_id}/rebuild
        path         text        NOT NULL,
        params       jsonb       NOT NULL DEFAULT '{}',  -- path, query and body parameters
        status       integer     NOT NULL,
        duration_ms  double precision NOT NULL,
        client       text,
        dagster_run_id text                          -- the run a write launched, if any
    );
    CREATE INDEX api_audit_time_idx ON billing_recon.api_audit (recorded_at);
    -- Like the rebuild audit, the API's trail is evidence: append-only whatever the role.
    CREATE FUNCTION billing_recon.refuse_api_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'billing_recon.api_audit is append-only';
    END $$;
    CREATE TRIGGER api_audit_append_only BEFORE UPDATE OR DELETE ON billing_recon.api_audit
        FOR EACH ROW EXECUTE FUNCTION billing_recon.refuse_api_audit_change();
    """)


def downgrade() -> None:
    op.execute("DROP TABLE billing_recon.api_audit")
    op.execute("DROP FUNCTION billing_recon.refuse_api_audit_change()")
