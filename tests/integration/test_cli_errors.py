"""`billing-recon` as an operator runs it: a real process against the real test servers, its exit code and its
output. An error is exit 2 and a short paragraph naming what to fix (issue 14.5, issue 18.1); an empty id list is
an error, never the default selection (issue 14.2); the settings' thresholds reach every command.

Every run has a generous subprocess timeout (30 s): an unreachable server must end the command within seconds,
not after a minute of retries.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from support.builders import EventFactory, project, stuck_transfer_history

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.adapters.postgres.security import RoleSettings, create_roles
from billing_domain.config import Topics

CLI = "from billing_cli.app import app; app(prog_name='billing-recon')"
TIMEOUT_S = 30
MAX_LINES = 20
PASSWORD = f"pw-{secrets.token_hex(6)}"


def billing_recon(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The command in its own process, with only the given BILLING_* settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    return subprocess.run([sys.executable, "-c", CLI, *args], env=base | env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)


def assert_error(result: subprocess.CompletedProcess[str], *says: str) -> None:
    """Exit 2, no traceback, a short output that says each of `says`, and never a password."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    assert len(output.splitlines()) < MAX_LINES, output
    assert PASSWORD not in output
    for text in says:
        assert text in output, (text, output)


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def env(servers: Any, topics: Topics, database_url: str) -> dict[str, str]:
    return {"BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_DATABASE_URL": database_url,
            "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"), "BILLING_TOPIC_PARTITIONS": "3"}


@pytest.fixture
def seeded(env: dict[str, str], event_store: KafkaEventStore, projection_store: ProjectionStore) -> dict[str, str]:
    """A history with faults a rebuild would repair (acc-a's balance, acc-c's row), reconciled once, so the
    default selection ("what the latest report flagged") is not empty."""
    events = stuck_transfer_history(EventFactory(datetime.now(UTC) - timedelta(hours=1)))
    event_store.append(events)
    project(events, projection_store)
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor + 7 "
                             "WHERE account_id = 'acc-a'")
        conn.exec_driver_sql("DELETE FROM billing.account_projection WHERE account_id = 'acc-c'")
    reconciled = billing_recon(env, "reconcile", "all")
    assert reconciled.returncode == 1, reconciled.stdout + reconciled.stderr
    return env


def _database_state(projections: ProjectionStore) -> tuple[Any, ...]:
    recon = ReconStore(projections.engine)
    return (sorted(projections.read_accounts().items()), sorted(projections.read_transactions().items()),
            recon.audit_records())


# --- settings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "value", "says"), [
    ("BILLING_STUCK_AFTER_MINUTES", "nan", "finite"),
    ("BILLING_STUCK_AFTER_MINUTES", "-5", "above zero"),
    ("BILLING_LAG_WINDOW_SECONDS", "inf", "finite"),
    ("BILLING_TOPIC_PARTITIONS", "inf", "whole number"),
    ("BILLING_TOPIC_PARTITIONS", "2.5", "whole number"),
    ("BILLING_TOPIC_PARTITIONS", "0", "between 1 and"),
    ("BILLING_DATABASE_URL", f"postgresql://u:{PASSWORD}@host:port/db", "not a database URL"),
    ("BILLING_DATABASE_URL", "not a url", "not a database URL"),
    ("BILLING_DATABASE_URL", f"mysql://u:{PASSWORD}@127.0.0.1/db", "not PostgreSQL"),
    ("BILLING_DATABASE_URL", "", "not set"),
    ("BILLING_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:notaport", "HOST:PORT"),
], ids=lambda v: v.replace(PASSWORD, "PASSWORD"))  # the same ids in every process (pytest-xdist's workers)
def test_a_bad_setting_is_exit_2_naming_the_setting(env: dict[str, str], name: str, value: str, says: str) -> None:
    assert_error(billing_recon(env | {name: value}, "reconcile", "all"), f"error: {name}", says)


@pytest.mark.parametrize("args", [
    ("stuck", "--minutes", "-5"),
    ("reconcile", "transactions", "--stuck-minutes", "-5"),
    ("reconcile", "transactions", "--stuck-minutes", "nan"),
    ("recover-sagas", "--reason", "x", "--stuck-minutes", "0"),
    ("as-of", "--at", "2026-01-31T00:00:00Z", "--stuck-minutes", "inf"),
])
def test_minutes_must_be_a_positive_finite_number(env: dict[str, str], args: tuple[str, ...]) -> None:
    flag = next(a for a in args if a.startswith("--") and "minutes" in a)
    assert_error(billing_recon(env, *args), "Invalid value", flag)


# --- explicit selections ----------------------------------------------------------------------------
def test_an_empty_id_list_is_an_error_and_writes_nothing(seeded: dict[str, str],
                                                         projection_store: ProjectionStore) -> None:
    """`--ids ""`, `--ids ","`, `--ids "$UNSET"`: before, each rebuilt everything the latest report flagged."""
    before = _database_state(projection_store)
    for args in (("rebuild", "accounts", "--ids", "", "--reason", "x"),
                 ("rebuild", "accounts", "--ids", " , ", "--ids", "", "--reason", "x"),
                 ("rebuild", "transactions", "--ids", ",", "--reason", "x"),
                 ("recover-sagas", "--ids", "   ", "--reason", "x", "--execute")):
        assert_error(billing_recon(seeded, *args), "--ids")
    assert _database_state(projection_store) == before  # no row written, no audit of a rebuild or a recovery


def test_no_selection_flag_still_means_what_the_latest_report_flagged(seeded: dict[str, str]) -> None:
    dry = billing_recon(seeded, "rebuild", "accounts", "--reason", "check", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    changed = {c["entity_id"] for c in json.loads(dry.stdout)["changes"] if c["action"] != "unchanged"}
    assert {"acc-a", "acc-c"} <= changed


def test_the_stuck_threshold_comes_from_the_settings_unless_given(seeded: dict[str, str]) -> None:
    """tx-2 has been pending about 56 minutes: stuck at 5, not at 120 (BILLING_STUCK_AFTER_MINUTES)."""
    def stuck(env: dict[str, str], *flags: str) -> bool:
        result = billing_recon(env, "reconcile", "transactions", "--json", "--full", *flags)
        assert result.returncode in (0, 1), result.stdout + result.stderr
        return any(f["kind"] == "stuck" for f in json.loads(result.stdout)["findings"])

    patient = seeded | {"BILLING_STUCK_AFTER_MINUTES": "120"}
    assert stuck(seeded) and not stuck(patient)
    assert stuck(patient, "--stuck-minutes", "5")  # the option wins over the setting


# --- servers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ("reconcile", "all"), ("findings", "list"), ("reconcile", "account", "acc-1"),
    ("rebuild", "accounts", "--all", "--reason", "x"),
])
def test_a_closed_postgres_port_is_exit_2_within_seconds(env: dict[str, str], args: tuple[str, ...]) -> None:
    port = closed_port()
    down = env | {"BILLING_DATABASE_URL": f"postgresql://billing:{PASSWORD}@127.0.0.1:{port}/billing"}
    assert_error(billing_recon(down, *args), "PostgreSQL", f"127.0.0.1:{port}", "***", "Connection refused")


def test_a_missing_database_is_exit_2_naming_it(env: dict[str, str]) -> None:
    missing = make_url(env["BILLING_DATABASE_URL"]).set(database=f"no_such_{uuid.uuid4().hex[:8]}")
    url = missing.render_as_string(hide_password=False)
    assert_error(billing_recon(env | {"BILLING_DATABASE_URL": url}, "reconcile", "all"), str(missing.database),
                 "does not exist")


def test_a_closed_kafka_port_is_exit_2_within_seconds(env: dict[str, str]) -> None:
    port = closed_port()
    result = billing_recon(env | {"BILLING_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}, "reconcile", "all")
    assert_error(result, "Kafka", f"127.0.0.1:{port}")


def test_the_reconciliation_role_gets_a_short_permission_error_on_rebuild(
        seeded: dict[str, str], projection_store: ProjectionStore) -> None:
    suffix = uuid.uuid4().hex[:6]
    roles = RoleSettings(PASSWORD, f"rebuild-{secrets.token_hex(8)}", f"billing_reconciler_{suffix}",
                         f"billing_rebuilder_{suffix}")
    create_roles(projection_store.engine, roles)
    url = make_url(seeded["BILLING_DATABASE_URL"]).set(drivername="postgresql", username=roles.recon_role,
                                                       password=PASSWORD)
    before = sorted(projection_store.read_accounts().items())
    result = billing_recon(seeded | {"BILLING_DATABASE_URL": url.render_as_string(hide_password=False)},
                           "rebuild", "accounts", "--all", "--reason", "repair")
    assert_error(result, "permission denied", roles.recon_role, "***", "rebuild role")
    assert sorted(projection_store.read_accounts().items()) == before


def test_an_unwritable_output_path_is_exit_2_naming_it(env: dict[str, str], tmp_path: Path) -> None:
    assert billing_recon(env, "reconcile", "all").returncode == 0  # a run to export
    missing = tmp_path / "no-such-folder" / "findings.csv"
    assert_error(billing_recon(env, "export-findings", "--out", str(missing)), str(missing), "No such file")
