"""The least-privilege roles' passwords come from the environment (no server needed): a missing one is named,
none is shown. The roles themselves, on the real server, are tests/reliability/test_security.py."""

from __future__ import annotations

import pytest

from billing_domain.adapters.postgres.security import RoleSettings
from billing_domain.core.exceptions import ConfigurationError


def test_passwords_come_from_the_environment_and_name_the_missing_variable() -> None:
    with pytest.raises(ConfigurationError, match="BILLING_REBUILD_ROLE_PASSWORD"):
        RoleSettings.from_env({"BILLING_RECON_ROLE_PASSWORD": "x"})
    settings = RoleSettings.from_env({"BILLING_RECON_ROLE_PASSWORD": "s3cret-a", "BILLING_REBUILD_ROLE_PASSWORD": "b"})
    assert "s3cret-a" not in repr(settings)
