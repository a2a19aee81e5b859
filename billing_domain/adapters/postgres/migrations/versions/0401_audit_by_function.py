"""Audit rows are written only through SECURITY DEFINER functions that record who wrote them.

Until now both roles could INSERT audit rows under any actor name and the owner could TRUNCATE the
tables (the triggers covered only UPDATE and DELETE). After this revision:

- `billing_recon.append_rebuild_audit(...)` and `billing_recon.append_api_audit(...)` are the only
  ways in: they record `session_user` (the database role that logged in, which the caller cannot
  choose) next to the operator the entry point authenticated and how (`operator_auth`);
- a BEFORE INSERT trigger refuses rows that do not come through them (that stops the owner too, who
  keeps INSERT because the functions run with its rights), and overwrites `db_role` in any case;
- a BEFORE TRUNCATE trigger refuses TRUNCATE for every role, superusers included, and TRUNCATE,
  UPDATE and DELETE are revoked from PUBLIC and from the owner itself (the roles' grants are in
  `sql/roles.sql`);
- a rebuild that writes appends a `pending` row before its first write and a completion row
  (`completes` = the pending row's id) after: the table stays append-only, and a pending row with no
  completion is an operation that was interrupted.

The owner (or a superuser) can still drop the triggers: nothing inside a database protects a table
from its owner. Run the pipeline as the least-privilege roles, never as the owner.

Revision ID: 0401_audit_by_function
"""

from alembic import op

revision = "0401_audit_by_function"
down_revision = "0301_api_audit"
branch_labels = None
depends_on = None

# How the entry point knew who asks. Only `api_token` and `dagster_run_user` are checked by something
# other than the caller's word; the others are self-declared, and say so.
OPERATOR_AUTH = ("api_token", "dagster_run_user", "dagster_run_tag", "run_config", "cli_option", "env_user",
                 "self_declared")
AUTH_LIST = ", ".join(f"'{a}'" for a in OPERATOR_AUTH)
GUARD = "billing_recon.audit_writer"  # a transaction-local setting only the functions below set


def upgrade() -> None:
    op.execute(f"""
    ALTER TABLE billing_recon.rebuild_audit
        ADD COLUMN db_role text,
        ADD COLUMN operator_auth text CHECK (operator_auth IN ({AUTH_LIST})),
        ADD COLUMN completes bigint UNIQUE REFERENCES billing_recon.rebuild_audit (audit_id);
    ALTER TABLE billing_recon.api_audit
        ADD COLUMN db_role text,
        ADD COLUMN token_name text;
    COMMENT ON COLUMN billing_recon.rebuild_audit.actor IS 'the operator: who asks, as the entry point knew it';
    COMMENT ON COLUMN billing_recon.rebuild_audit.db_role IS 'session_user of the connection that wrote the row';

    CREATE FUNCTION billing_recon.append_rebuild_audit(
        p_operator text, p_operator_auth text, p_reason text, p_operation text, p_run_id text,
        p_dry_run boolean, p_entity_type text, p_entity_ids jsonb, p_cut jsonb, p_before jsonb,
        p_after jsonb, p_outcome text, p_details jsonb, p_completes bigint DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DECLARE
        new_id bigint;
    BEGIN
        IF p_completes IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM billing_recon.rebuild_audit
                WHERE audit_id = p_completes AND outcome = 'pending' AND operation = p_operation) THEN
            RAISE EXCEPTION 'audit #% is not a pending % record', p_completes, p_operation;
        END IF;
        PERFORM set_config('{GUARD}', 'append_rebuild_audit', true);
        INSERT INTO billing_recon.rebuild_audit (actor, operator_auth, reason, operation, run_id, dry_run,
                                                 entity_type, entity_ids, cut, before, after, outcome, details,
                                                 completes)
        VALUES (p_operator, p_operator_auth, p_reason, p_operation, p_run_id, p_dry_run, p_entity_type,
                p_entity_ids, p_cut, p_before, p_after, p_outcome, p_details, p_completes)
        RETURNING audit_id INTO new_id;
        PERFORM set_config('{GUARD}', '', true);
        RETURN new_id;
    END $$;

    CREATE FUNCTION billing_recon.append_api_audit(
        p_role text, p_token_name text, p_method text, p_endpoint text, p_path text, p_params jsonb,
        p_status integer, p_duration_ms double precision, p_client text, p_dagster_run_id text) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DECLARE
        new_id bigint;
    BEGIN
        PERFORM set_config('{GUARD}', 'append_api_audit', true);
        INSERT INTO billing_recon.api_audit (role, token_name, method, endpoint, path, params, status, duration_ms,
                                             client, dagster_run_id)
        VALUES (p_role, p_token_name, p_method, p_endpoint, p_path, p_params, p_status, p_duration_ms, p_client,
                p_dagster_run_id)
        RETURNING audit_id INTO new_id;
        PERFORM set_config('{GUARD}', '', true);
        RETURN new_id;
    END $$;

    -- Rows come only through the functions above; whoever inserts, db_role is the session's, never a value
    -- the caller chose.
    CREATE FUNCTION billing_recon.audit_insert_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF coalesce(current_setting('{GUARD}', true), '') <> TG_ARGV[0] THEN
            RAISE EXCEPTION '% is written only through billing_recon.%(...)', TG_TABLE_NAME, TG_ARGV[0]
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        NEW.db_role := session_user;
        NEW.recorded_at := now();
        RETURN NEW;
    END $$;
    CREATE TRIGGER rebuild_audit_insert_guard BEFORE INSERT ON billing_recon.rebuild_audit
        FOR EACH ROW EXECUTE FUNCTION billing_recon.audit_insert_guard('append_rebuild_audit');
    CREATE TRIGGER api_audit_insert_guard BEFORE INSERT ON billing_recon.api_audit
        FOR EACH ROW EXECUTE FUNCTION billing_recon.audit_insert_guard('append_api_audit');
    CREATE TRIGGER rebuild_audit_no_truncate BEFORE TRUNCATE ON billing_recon.rebuild_audit
        FOR EACH STATEMENT EXECUTE FUNCTION billing_recon.refuse_audit_change();
    CREATE TRIGGER api_audit_no_truncate BEFORE TRUNCATE ON billing_recon.api_audit
        FOR EACH STATEMENT EXECUTE FUNCTION billing_recon.refuse_api_audit_change();

    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON billing_recon.rebuild_audit, billing_recon.api_audit FROM PUBLIC;
    -- The owner keeps INSERT (the functions run with its rights) and loses what no one may do.
    REVOKE UPDATE, DELETE, TRUNCATE ON billing_recon.rebuild_audit, billing_recon.api_audit FROM CURRENT_USER;
    REVOKE ALL ON FUNCTION billing_recon.append_rebuild_audit(text, text, text, text, text, boolean, text, jsonb,
        jsonb, jsonb, jsonb, text, jsonb, bigint) FROM PUBLIC;
    REVOKE ALL ON FUNCTION billing_recon.append_api_audit(text, text, text, text, text, jsonb, integer,
        double precision, text, text) FROM PUBLIC;
    """)


def downgrade() -> None:
    op.execute("""
    DROP TRIGGER api_audit_no_truncate ON billing_recon.api_audit;
    DROP TRIGGER rebuild_audit_no_truncate ON billing_recon.rebuild_audit;
    DROP TRIGGER api_audit_insert_guard ON billing_recon.api_audit;
    DROP TRIGGER rebuild_audit_insert_guard ON billing_recon.rebuild_audit;
    DROP FUNCTION billing_recon.audit_insert_guard();
    DROP FUNCTION billing_recon.append_api_audit(text, text, text, text, text, jsonb, integer, double precision,
                                                 text, text);
    DROP FUNCTION billing_recon.append_rebuild_audit(text, text, text, text, text, boolean, text, jsonb, jsonb,
                                                     jsonb, jsonb, text, jsonb, bigint);
    GRANT UPDATE, DELETE, TRUNCATE ON billing_recon.rebuild_audit, billing_recon.api_audit TO CURRENT_USER;
    ALTER TABLE billing_recon.api_audit DROP COLUMN token_name, DROP COLUMN db_role;
    ALTER TABLE billing_recon.rebuild_audit DROP COLUMN completes, DROP COLUMN operator_auth, DROP COLUMN db_role;
    """)
