"""The admin API's settings, read from the environment. Tokens never appear in a repr or a log."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

from billing_domain.config import DEFAULT_UI_BASE_URL
from billing_domain.core.exceptions import ConfigurationError

DEFAULT_UI_URL = DEFAULT_UI_BASE_URL  # BILLING_DAGSTER_UI_URL, the pipeline's setting
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class ApiSettings:
    read_token: str = field(repr=False)
    write_token: str | None = field(default=None, repr=False)
    dagster_ui_url: str = DEFAULT_UI_URL
    dagster_graphql_url: str = f"{DEFAULT_UI_URL}/graphql"
    dagster_location: str | None = None  # else: the code location that holds the job
    dagster_timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        ui = (env.get("BILLING_DAGSTER_UI_URL") or DEFAULT_UI_URL).rstrip("/")
        settings = cls(
            read_token=env.get("BILLING_API_TOKEN", ""),
            write_token=env.get("BILLING_API_WRITE_TOKEN") or None,
            dagster_ui_url=ui,
            dagster_graphql_url=(env.get("BILLING_DAGSTER_GRAPHQL_URL") or f"{ui}/graphql"),
            dagster_location=env.get("BILLING_DAGSTER_LOCATION") or None,
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse to serve with tokens that cannot protect anything (fail closed, never open)."""
        if not self.read_token:
            raise ConfigurationError("BILLING_API_TOKEN: not set; the admin API refuses to serve without a token")
        for name, token in (("BILLING_API_TOKEN", self.read_token), ("BILLING_API_WRITE_TOKEN", self.write_token)):
            if token is not None and len(token) < MIN_TOKEN_LENGTH:
                raise ConfigurationError(f"{name}: too short; use at least {MIN_TOKEN_LENGTH} characters")
        if self.write_token is not None and self.write_token == self.read_token:
            raise ConfigurationError("BILLING_API_WRITE_TOKEN: must differ from BILLING_API_TOKEN")

    def run_url(self, run_id: str) -> str:
        return f"{self.dagster_ui_url}/runs/{run_id}"
