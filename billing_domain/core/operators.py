"""Who asks for an operation, and how the entry point knows it: the operator every audit row names.

The database adds what no caller can choose: the role that logged in (`session_user`, recorded by
`billing_recon.append_rebuild_audit`). The operator is what the entry point could establish:

| entry point | operator | `authenticated_by` |
| --- | --- | --- |
| admin API | the bearer token's name | `api_token` (checked by the API; passed to the run as a tag) |
| Dagster run | `dagster/user` (set by Dagster's own login) | `dagster_run_user` |
| Dagster run | a launch tag `user`, or the run config's `actor` | `dagster_run_tag`, `run_config`: self-declared |
| command line | `--operator` / `--actor`, else `$USER` | `cli_option`, `env_user`: self-declared |
| a library call | the name given | `self_declared` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from billing_domain.core.exceptions import ConfigurationError

AuthMethod = Literal["api_token", "dagster_run_user", "dagster_run_tag", "run_config", "cli_option", "env_user",
                     "self_declared"]
VERIFIED: frozenset[str] = frozenset({"api_token", "dagster_run_user"})
API_TOKEN_TAG = "billing/api_token"  # set by the admin API on the runs it launches: the token's name
DECLARED_ACTOR_TAG = "billing/actor"  # the actor an API caller named in its body: self-declared
NAME_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    authenticated_by: AuthMethod = "self_declared"
    declared: str | None = None  # a self-declared name given besides an authenticated one (kept in details)

    @property
    def self_declared(self) -> bool:
        return self.authenticated_by not in VERIFIED

    def check(self) -> None:
        if not self.name or not self.name.strip():
            raise ConfigurationError("actor: name who asks for it (it goes to the audit trail); it is empty")

    def to_json(self) -> dict[str, str | bool | None]:
        return {"name": self.name, "authenticated_by": self.authenticated_by, "self_declared": self.self_declared,
                "declared": self.declared}

    def __str__(self) -> str:
        return f"{self.name} ({self.authenticated_by}{', self-declared' if self.self_declared else ''})"


def resolve(operator: Operator | None, actor: str | None) -> Operator:
    """The operator of a service call: the one given, else a bare actor name (self-declared). Checked."""
    resolved = operator if operator is not None else Operator((actor or "").strip()[:NAME_LIMIT])
    resolved.check()
    return resolved


def from_cli(option: str | None, env: Mapping[str, str] | None = None) -> Operator:
    """`--operator NAME` if given, else `$USER`; both self-declared (a shell cannot prove who types)."""
    if option:  # given: a blank name is a mistake to report, not a reason to fall back to $USER
        operator = Operator(option.strip()[:NAME_LIMIT], "cli_option")
        operator.check()
        return operator
    env = os.environ if env is None else env
    user = (env.get("USER") or env.get("LOGNAME") or "").strip()[:NAME_LIMIT]
    return Operator(user or f"uid:{os.getuid()}", "env_user")  # a container often has no $USER


def from_dagster_run(configured_actor: str | None, tags: Mapping[str, str]) -> Operator:
    """The operator of a Dagster run: the API token that launched it, else Dagster's user, else the
    self-declared names (launch tag `user`, the config's `actor`), else `dagster` (a schedule or sensor)."""
    declared = configured_actor or tags.get(DECLARED_ACTOR_TAG) or None
    if tags.get(API_TOKEN_TAG):
        return Operator(tags[API_TOKEN_TAG][:NAME_LIMIT], "api_token", declared)
    if tags.get("dagster/user"):
        return Operator(tags["dagster/user"][:NAME_LIMIT], "dagster_run_user", declared)
    if configured_actor:
        return Operator(configured_actor[:NAME_LIMIT], "run_config")
    if tags.get("user"):
        return Operator(tags["user"][:NAME_LIMIT], "dagster_run_tag")
    return Operator("dagster", "self_declared")
