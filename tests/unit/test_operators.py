"""Who the audit names, per entry point, and whether that name was checked by anyone (billing_domain.core.operators)."""

from __future__ import annotations

import os

import pytest

from billing_domain.core.exceptions import ConfigurationError
from billing_domain.core.operators import (
    API_TOKEN_TAG,
    DECLARED_ACTOR_TAG,
    Operator,
    from_cli,
    from_dagster_run,
    resolve,
)


def test_a_dagster_run_names_the_api_token_then_dagsters_user_then_the_self_declared_names() -> None:
    api = from_dagster_run(None, {API_TOKEN_TAG: "BILLING_API_WRITE_TOKEN", DECLARED_ACTOR_TAG: "alice",
                                  "dagster/user": "bob"})
    assert (api.name, api.authenticated_by, api.declared, api.self_declared) == (
        "BILLING_API_WRITE_TOKEN", "api_token", "alice", False)
    user = from_dagster_run("carol", {"dagster/user": "bob@example.com"})
    assert (user.name, user.authenticated_by, user.declared, user.self_declared) == (
        "bob@example.com", "dagster_run_user", "carol", False)
    assert from_dagster_run("carol", {"user": "dave"}) == Operator("carol", "run_config")
    assert from_dagster_run(None, {"user": "dave"}) == Operator("dave", "dagster_run_tag")
    assert from_dagster_run(None, {}) == Operator("dagster", "self_declared")  # a schedule or a sensor
    assert all(o.self_declared for o in (Operator("x", "run_config"), Operator("x", "dagster_run_tag"),
                                         Operator("x", "cli_option"), Operator("x", "env_user")))


def test_the_command_line_names_operator_option_then_user_both_self_declared() -> None:
    assert from_cli("ana", {"USER": "root"}) == Operator("ana", "cli_option")
    assert from_cli("", {"USER": "root"}) == Operator("root", "env_user")
    assert from_cli(None, {}) == Operator(f"uid:{os.getuid()}", "env_user")
    with pytest.raises(ConfigurationError, match="actor"):
        from_cli("   ", {"USER": "root"})  # given but blank is a mistake, not a fallback to $USER


def test_a_bare_actor_is_self_declared_and_an_empty_one_refused() -> None:
    assert resolve(None, " alice ") == Operator("alice", "self_declared")
    assert resolve(Operator("tok", "api_token"), "ignored") == Operator("tok", "api_token")
    with pytest.raises(ConfigurationError, match="actor"):
        resolve(None, " ")
    assert str(Operator("ana", "cli_option")) == "ana (cli_option, self-declared)"
