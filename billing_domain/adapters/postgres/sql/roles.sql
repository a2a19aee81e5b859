-- Least-privilege roles of the reconciliation pipeline. Idempotent: run it again after a migration
-- adds a table, or to change a password. Run as the owner of schemas `billing` and `billing_recon`
-- (or a superuser), after `billing-recon` has migrated `billing_recon` (ReconStore.migrate()).
--
-- Placeholders, filled in by billing_domain.adapters.postgres.security (identifiers quoted, passwords as SCRAM verifiers,
-- so no clear-text password reaches the server or its log):
--   {recon_role}        reads the projections (schema billing), writes its findings (schema billing_recon)
--   {rebuild_role}      all of the above, and writes the projection rows (rebuild)
--   {recon_password}    SCRAM-SHA-256 verifier of BILLING_RECON_ROLE_PASSWORD
--   {rebuild_password}  SCRAM-SHA-256 verifier of BILLING_REBUILD_ROLE_PASSWORD
--   {database}          the billing database

-- 1. The roles (created once; the password and attributes are re-applied every run).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {recon_role_literal}) THEN
        CREATE ROLE {recon_role} LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {rebuild_role_literal}) THEN
        CREATE ROLE {rebuild_role} LOGIN;
    END IF;
END
$roles$;
ALTER ROLE {recon_role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {recon_password};
ALTER ROLE {rebuild_role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {rebuild_password};

-- 2. Connect. Only the rebuild stages rows in a temporary table. The migration's
--    `CREATE SCHEMA IF NOT EXISTS billing_recon` checks the CREATE privilege on the database even when
--    the schema exists, so both roles need it to start a run; it lets them create schemas, nothing in
--    the schemas below.
GRANT CONNECT, CREATE ON DATABASE {database} TO {recon_role}, {rebuild_role};
GRANT TEMPORARY ON DATABASE {database} TO {rebuild_role};
REVOKE TEMPORARY ON DATABASE {database} FROM {recon_role};

-- 3. The projections: read for both, row writes for the rebuild role. Never DDL.
GRANT USAGE ON SCHEMA billing TO {recon_role}, {rebuild_role};
REVOKE CREATE ON SCHEMA billing FROM {recon_role}, {rebuild_role};
REVOKE ALL ON ALL TABLES IN SCHEMA billing FROM {recon_role}, {rebuild_role};
GRANT SELECT ON ALL TABLES IN SCHEMA billing TO {recon_role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA billing TO {rebuild_role};

-- 4. The pipeline's own tables: findings, ledger identities and checkpoints are rewritten per run.
--    The audit tables are read-only to both roles: rows go in only through the SECURITY DEFINER functions
--    append_rebuild_audit / append_api_audit (migration 0401), which record session_user, so no role can
--    write a row under another role's name. No INSERT, UPDATE, DELETE or TRUNCATE; triggers refuse them too.
GRANT USAGE ON SCHEMA billing_recon TO {recon_role}, {rebuild_role};
REVOKE CREATE ON SCHEMA billing_recon FROM {recon_role}, {rebuild_role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA billing_recon TO {recon_role}, {rebuild_role};
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON billing_recon.rebuild_audit, billing_recon.api_audit
    FROM {recon_role}, {rebuild_role};
REVOKE INSERT, UPDATE, DELETE ON billing_recon.alembic_version FROM {recon_role}, {rebuild_role};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA billing_recon TO {recon_role}, {rebuild_role};
GRANT EXECUTE ON FUNCTION billing_recon.append_rebuild_audit(text, text, text, text, text, boolean, text, jsonb,
    jsonb, jsonb, jsonb, text, jsonb, bigint) TO {recon_role}, {rebuild_role};
GRANT EXECUTE ON FUNCTION billing_recon.append_api_audit(text, text, text, text, text, jsonb, integer,
    double precision, text, text) TO {recon_role}, {rebuild_role};
