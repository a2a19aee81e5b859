"""Least-privilege database roles for the pipeline: one that reconciles, one that may also rebuild.

`create_roles` applies `sql/roles.sql` (idempotent; read it for the exact grants):

| role (default name)  | schema `billing` (projections) | schema `billing_recon` (findings, audit)         |
| -------------------- | ------------------------------ | ------------------------------------------------ |
| `billing_reconciler` | SELECT                         | read and write; audit tables: SELECT only         |
| `billing_rebuilder`  | SELECT, INSERT, UPDATE, DELETE | read and write; audit tables: SELECT only         |

Audit rows (`rebuild_audit`, `api_audit`) are appended only by EXECUTE on the SECURITY DEFINER functions
`billing_recon.append_rebuild_audit` / `append_api_audit`, which record the role that logged in
(`session_user`): no role may INSERT, UPDATE, DELETE or TRUNCATE them, and triggers refuse all four to
anyone, the owner included. Neither role may run DDL in either schema. Passwords come from the environment
(`BILLING_RECON_ROLE_PASSWORD`, `BILLING_REBUILD_ROLE_PASSWORD`) and reach the server only as
SCRAM-SHA-256 verifiers, so no clear-text password is in a statement, a server log or our logs.
Run it as the owner of both schemas (or a superuser), after the `billing_recon` migrations.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from psycopg import sql
from sqlalchemy.engine import Engine

from billing_domain.core.exceptions import ConfigurationError

log = logging.getLogger(__name__)
ENV_RECON_PASSWORD = "BILLING_RECON_ROLE_PASSWORD"
ENV_REBUILD_PASSWORD = "BILLING_REBUILD_ROLE_PASSWORD"
DEFAULT_RECON_ROLE = "billing_reconciler"
DEFAULT_REBUILD_ROLE = "billing_rebuilder"
SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)


@dataclass(frozen=True, slots=True)
class RoleSettings:
    recon_password: str
    rebuild_password: str
    recon_role: str = DEFAULT_RECON_ROLE
    rebuild_role: str = DEFAULT_REBUILD_ROLE

    def __repr__(self) -> str:  # never show a password, even in a traceback's locals
        return f"RoleSettings(recon_role={self.recon_role!r}, rebuild_role={self.rebuild_role!r}, passwords=***)"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, recon_role: str = DEFAULT_RECON_ROLE,
                 rebuild_role: str = DEFAULT_REBUILD_ROLE) -> RoleSettings:
        """Read both passwords; a missing or empty one is a `ConfigurationError` naming its variable."""
        env = os.environ if env is None else env
        missing = [name for name in (ENV_RECON_PASSWORD, ENV_REBUILD_PASSWORD) if not env.get(name)]
        if missing:
            raise ConfigurationError(f"{', '.join(missing)}: not set; the role passwords come from the environment")
        if recon_role == rebuild_role:
            raise ConfigurationError("rebuild_role: must differ from recon_role")
        return cls(env[ENV_RECON_PASSWORD], env[ENV_REBUILD_PASSWORD], recon_role, rebuild_role)


def scram_sha256_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The verifier PostgreSQL stores for `password` (RFC 5802/7677), accepted as-is by `ALTER ROLE ... PASSWORD`.

    Passwords are used as UTF-8 without SASLprep, which equals SASLprep for ASCII passwords.
    """
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def roles_template() -> str:
    """The SQL of `sql/roles.sql`, with its placeholders."""
    return resources.files("billing_domain.adapters.postgres").joinpath("sql/roles.sql").read_text(encoding="utf-8")


def roles_sql(settings: RoleSettings, database: str) -> sql.Composed:
    """The statements, with identifiers quoted and the passwords as fresh SCRAM verifiers."""
    return sql.SQL(roles_template()).format(  # the template is a trusted file of the package
        recon_role=sql.Identifier(settings.recon_role), rebuild_role=sql.Identifier(settings.rebuild_role),
        recon_role_literal=sql.Literal(settings.recon_role), rebuild_role_literal=sql.Literal(settings.rebuild_role),
        recon_password=sql.Literal(scram_sha256_verifier(settings.recon_password)),
        rebuild_password=sql.Literal(scram_sha256_verifier(settings.rebuild_password)),
        database=sql.Identifier(database))


def create_roles(engine: Engine, settings: RoleSettings) -> None:
    """Create or update both roles and their grants, in one transaction (safe to run again)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('billing.security.roles'))")
        database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute(roles_sql(settings, str(database)).as_string(driver))  # not logged: it holds the verifiers
    log.info("roles %s and %s are in place on database %s", settings.recon_role, settings.rebuild_role, database)
