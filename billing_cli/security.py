"""`billing-recon roles create`: the least-privilege database roles (billing_domain.adapters.postgres.security)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from billing_cli.support import fail
from billing_domain.config import Settings
from billing_domain.core.exceptions import ConfigurationError

# The adapter's default role names (billing_domain.adapters.postgres.security), named here so that `--help`
# need not import SQLAlchemy and psycopg; tests/unit/test_cli_startup.py holds the two equal.
DEFAULT_RECON_ROLE = "billing_reconciler"
DEFAULT_REBUILD_ROLE = "billing_rebuilder"

roles_app = typer.Typer(help="Least-privilege database roles for the pipeline.", no_args_is_help=True)


@roles_app.command("create")
def create(recon_role: Annotated[str, typer.Option(help="Role that reconciles (reads the projections).")]
           = DEFAULT_RECON_ROLE,
           rebuild_role: Annotated[str, typer.Option(help="Role that may also write the projections.")]
           = DEFAULT_REBUILD_ROLE) -> None:
    """Create or update both roles on BILLING_DATABASE_URL (idempotent). Passwords: BILLING_RECON_ROLE_PASSWORD,
    BILLING_REBUILD_ROLE_PASSWORD. Run it as the schemas' owner, after the migrations."""
    from billing_domain.adapters.postgres.security import RoleSettings, create_roles
    from billing_domain.bootstrap import engine_for, resolve_servers

    settings: Settings | None = None
    try:
        role_settings = RoleSettings.from_env(recon_role=recon_role, rebuild_role=rebuild_role)
        settings = resolve_servers(Settings.from_env())
        if not settings.database_url:
            raise ConfigurationError("BILLING_DATABASE_URL: not set")
        engine = engine_for(settings.database_url)
        try:
            create_roles(engine, role_settings)
        finally:
            engine.dispose()
    except Exception as exc:
        fail(exc, settings)  # one paragraph naming the server, exit 2
    sys.stdout.write(f"roles {recon_role} and {rebuild_role} are in place\n")


def register(app: typer.Typer) -> None:
    app.add_typer(roles_app, name="roles")
