-- Run once by the postgres image's entrypoint, on an empty data directory, as POSTGRES_USER
-- connected to POSTGRES_DB (`billing`). Passwords come from the container's environment
-- (psql's \getenv, PostgreSQL 15+), so none is written here.
--
-- Roles:
--   DAGSTER_PG_USER  Dagster's run/event/schedule storage: owns DAGSTER_PG_DB, nothing in `billing`.
--   billing_owner    NOLOGIN; owns schema `billing` and the projection tables (the engine's side:
--                    grant it to the engine's login role when the engine writes to this server).
--   billing_recon    the pipeline: reads and repairs (rebuild) the projections, owns `billing_recon`
--                    (its findings); cannot create or drop anything in `billing`.
--   billing_viewer   NOLOGIN; read-only on both schemas, for dashboards and people (GRANT it to them).
\set ON_ERROR_STOP on
\getenv dagster_user DAGSTER_PG_USER
\getenv dagster_password DAGSTER_PG_PASSWORD
\getenv dagster_db DAGSTER_PG_DB
\getenv recon_password BILLING_RECON_DB_PASSWORD

-- Dagster's own database, kept apart from the billing data.
CREATE ROLE :"dagster_user" LOGIN PASSWORD :'dagster_password';
CREATE DATABASE :"dagster_db" OWNER :"dagster_user";
REVOKE ALL ON DATABASE :"dagster_db" FROM PUBLIC;

-- The billing database (this one).
CREATE ROLE billing_owner NOLOGIN;
CREATE ROLE billing_recon LOGIN PASSWORD :'recon_password';
CREATE ROLE billing_viewer NOLOGIN;

REVOKE ALL ON DATABASE :"DBNAME" FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"DBNAME" TO billing_recon;  -- TEMPORARY: rebuild stages rows
GRANT CONNECT ON DATABASE :"DBNAME" TO billing_owner, billing_viewer;

-- The projections exactly as the billing-engine contract fixes them, owned by billing_owner. A copy of
-- billing_domain/adapters/postgres/projection_ddl.py (psql cannot import it): tests/unit/test_projection_ddl.py
-- checks that the two agree.
CREATE SCHEMA billing AUTHORIZATION billing_owner;
SET ROLE billing_owner;
CREATE TABLE billing.account_projection (
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
CREATE TABLE billing.transaction_projection (
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
RESET ROLE;

GRANT USAGE ON SCHEMA billing TO billing_recon, billing_viewer;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA billing TO billing_recon;
GRANT SELECT ON ALL TABLES IN SCHEMA billing TO billing_viewer;
ALTER DEFAULT PRIVILEGES FOR ROLE billing_owner IN SCHEMA billing
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO billing_recon;
ALTER DEFAULT PRIVILEGES FOR ROLE billing_owner IN SCHEMA billing
    GRANT SELECT ON TABLES TO billing_viewer;

-- The pipeline's own tables (findings, audit), created by billing_recon in its own schema.
CREATE SCHEMA billing_recon AUTHORIZATION billing_recon;
GRANT USAGE ON SCHEMA billing_recon TO billing_viewer;
ALTER DEFAULT PRIVILEGES FOR ROLE billing_recon IN SCHEMA billing_recon
    GRANT SELECT ON TABLES TO billing_viewer;
