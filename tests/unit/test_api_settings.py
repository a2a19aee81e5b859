"""The admin API's settings and its command, without a server: unsafe tokens are refused, no token is shown, the
Dagster URL defaults to the local one, and `billing-recon api` says what is missing. The API over real HTTP is
tests/integration/test_admin_api.py.
"""

from __future__ import annotations

import uuid

import pytest
import typer
from typer.testing import CliRunner

from billing_api.settings import ApiSettings
from billing_cli.api import register
from billing_domain.core.exceptions import ConfigurationError

READ_TOKEN = f"read-{uuid.uuid4().hex}"
WRITE_TOKEN = f"write-{uuid.uuid4().hex}"


@pytest.mark.parametrize(("env", "says"), [
    ({}, "BILLING_API_TOKEN: not set"),
    ({"BILLING_API_TOKEN": "short"}, "BILLING_API_TOKEN: too short"),
    ({"BILLING_API_TOKEN": READ_TOKEN, "BILLING_API_WRITE_TOKEN": READ_TOKEN}, "must differ"),
])
def test_the_api_refuses_to_serve_with_unsafe_tokens(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        ApiSettings.from_env(env)


def test_settings_never_show_a_token_and_default_to_the_local_dagster() -> None:
    settings = ApiSettings.from_env({"BILLING_API_TOKEN": READ_TOKEN, "BILLING_API_WRITE_TOKEN": WRITE_TOKEN})
    assert READ_TOKEN not in repr(settings) and WRITE_TOKEN not in repr(settings)
    assert settings.dagster_graphql_url == "http://127.0.0.1:3000/graphql"
    ui = ApiSettings.from_env({"BILLING_API_TOKEN": READ_TOKEN, "BILLING_DAGSTER_UI_URL": "http://dagster:3000/"})
    assert ui.dagster_graphql_url == "http://dagster:3000/graphql" and ui.run_url("r1") == "http://dagster:3000/runs/r1"


def test_the_api_command_says_what_is_missing() -> None:
    cli = typer.Typer()
    cli.callback()(lambda: None)
    register(cli)
    result = CliRunner().invoke(cli, ["api"], env={"BILLING_API_TOKEN": ""})
    assert result.exit_code == 2 and "BILLING_API_TOKEN" in result.output
