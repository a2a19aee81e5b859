"""`billing-recon stack status|up|env|down` as a user runs them: the real command, a real stack in a temporary
folder (BILLING_STACK_DIR), the exit codes before and after, and the servers it names answering or gone. The
default broker, Tansu; tests/integration/test_kafka_stack.py does the same with Apache Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from sqlalchemy.engine import make_url

from billing_sandbox.stack import EmbeddedStack, _port_open

CLI = Path(sys.executable).parent / "billing-recon"


def _stack(stack_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BILLING_STACK_DIR": str(stack_dir)}
    for name in ("BILLING_KAFKA_BOOTSTRAP_SERVERS", "BILLING_DATABASE_URL"):  # the stack's own servers, not these
        env.pop(name, None)
    env.pop("BILLING_STACK_BROKER", None)  # the default broker (Tansu); test_kafka_stack.py runs Apache Kafka
    return subprocess.run([str(CLI), "stack", *args], env=env, capture_output=True, text=True, timeout=240,
                          check=False)


def _exports(output: str) -> dict[str, str]:
    lines = [line.removeprefix("export ") for line in output.splitlines() if line.startswith("export ")]
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def stack_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "stack"
    try:
        yield folder
    finally:
        EmbeddedStack(folder).destroy()  # whatever the test did, no server outlives it


def _answers(exported: dict[str, str]) -> None:
    """The database and the broker the command printed accept connections and answer."""
    url = make_url(exported["BILLING_DATABASE_URL"]).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    metadata = AdminClient({"bootstrap.servers": exported["BILLING_KAFKA_BOOTSTRAP_SERVERS"]}).list_topics(timeout=30)
    assert metadata.brokers, "the broker answered with its metadata"


def _not_running(stack_dir: Path) -> None:
    status = _stack(stack_dir, "status")
    assert status.returncode == 1 and status.stdout.startswith("not running"), (status.stdout, status.stderr)


def _running(stack_dir: Path) -> None:
    status = _stack(stack_dir, "status")
    assert status.returncode == 0 and status.stdout.startswith("running: broker tansu"), (status.stdout, status.stderr)


def _up(stack_dir: Path) -> dict[str, str]:
    up = _stack(stack_dir, "up")
    assert up.returncode == 0, up.stderr
    exported = _exports(up.stdout)
    assert set(exported) == {"BILLING_KAFKA_BOOTSTRAP_SERVERS", "BILLING_DATABASE_URL"}, up.stdout
    _answers(exported)
    return exported


def _ports_closed(exported: dict[str, str]) -> bool:
    pg_port = make_url(exported["BILLING_DATABASE_URL"]).port
    broker_port = int(exported["BILLING_KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    return pg_port is not None and not _port_open(pg_port) and not _port_open(broker_port)


# One test, one stack: the folder's first `up` (initdb) is the slow part, so every step shares it.
@pytest.mark.timeout(600)
def test_status_up_env_down_and_their_exit_codes(stack_dir: Path) -> None:
    _not_running(stack_dir)
    no_env = _stack(stack_dir, "env")
    assert no_env.returncode == 2 and "stack up" in no_env.stdout + no_env.stderr

    exported = _up(stack_dir)
    _running(stack_dir)
    again = _stack(stack_dir, "up")  # idempotent: the running servers are reused, same addresses
    assert again.returncode == 0 and _exports(again.stdout) == exported
    env = _stack(stack_dir, "env")
    assert env.returncode == 0 and _exports(env.stdout) == exported

    down = _stack(stack_dir, "down")
    assert down.returncode == 0, down.stderr
    _not_running(stack_dir)
    assert _ports_closed(exported)
    assert (stack_dir / "pgdata" / "PG_VERSION").exists()  # down keeps PostgreSQL's data folder

    # A recorded server that died reads as not running, and `up` brings it back on the kept folder.
    _up(stack_dir)
    EmbeddedStack(stack_dir).kill_postgres()
    _not_running(stack_dir)
    _up(stack_dir)
    _running(stack_dir)
