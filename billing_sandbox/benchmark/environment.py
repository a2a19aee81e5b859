"""Where the benchmark runs: the servers, a fresh database and topic prefix per run, the machine."""

from __future__ import annotations

import os
import platform
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from billing_domain.bootstrap import Services, wire
from billing_domain.config import DEFAULT_TOPIC_PARTITIONS, Settings, Topics
from billing_sandbox.stack import EmbeddedStack

PARTITIONS = DEFAULT_TOPIC_PARTITIONS  # the settings' default, as the daily job runs
# Settings that would send a measured command to other tables or topics than the run's.
OVERRIDING = ("BILLING_RECON_DATABASE_URL", "BILLING_ACCOUNT_TOPIC", "BILLING_TRANSACTION_TOPIC")


@dataclass(frozen=True, slots=True)
class BenchTarget:
    """The servers and names of one run; picklable, so each stage process opens its own clients."""

    bootstrap_servers: str
    database_url: str
    topic_prefix: str
    partitions: int = PARTITIONS
    replay_engine: str | None = None  # BILLING_REPLAY_ENGINE for the commands; None: the caller's or the default

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)

    def command_env(self) -> dict[str, str]:
        """The environment a user's command gets for this run: the servers and topics, nothing that would
        point it elsewhere (a recon database or topic names of the caller's own)."""
        env = {k: v for k, v in os.environ.items() if k not in OVERRIDING}
        if self.replay_engine is not None:
            env["BILLING_REPLAY_ENGINE"] = self.replay_engine
        return env | {"BILLING_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
                      "BILLING_DATABASE_URL": self.database_url, "BILLING_TOPIC_PREFIX": self.topic_prefix,
                      "BILLING_TOPIC_PARTITIONS": str(self.partitions)}

    def open(self) -> Services:
        """The composition root's adapters on this run's servers and topics."""
        return wire(Settings(kafka_bootstrap_servers=self.bootstrap_servers, database_url=self.database_url,
                             topics=self.topics, topic_partitions=self.partitions))


def replay_engine_of(target: BenchTarget) -> str:
    """The replay engine the run's commands use, as their settings read it."""
    return Settings.from_env(target.command_env()).replay_engine


def uses_configured_servers() -> bool:
    """Both servers named in the environment: the bench then runs on them, not on the embedded stack."""
    return bool(os.environ.get("BILLING_KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("BILLING_DATABASE_URL"))


@contextmanager
def bench_target(stack_dir: Path, *, keep: bool = False, partitions: int = PARTITIONS) -> Iterator[BenchTarget]:
    """Configured servers (both env vars set) or the embedded stack under `stack_dir`; a fresh database
    and topic prefix either way. The database is dropped afterwards unless `keep`."""
    kafka, database = os.environ.get("BILLING_KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("BILLING_DATABASE_URL")
    stack = None
    if not (kafka and database):
        stack = EmbeddedStack(stack_dir)
        started_here = not stack.is_healthy()
        info = stack.up()
        kafka, database = info.bootstrap_servers, info.database_url
    run = uuid.uuid4().hex[:10]
    database_url = create_database(database, f"bench_{run}")
    target = BenchTarget(kafka, database_url, f"bench{run}.", partitions)
    try:
        yield target
    finally:
        if not keep:
            drop_database(database_url)
            delete_topics(target)
        if stack is not None and started_here and not keep:
            stack.down()


def create_database(server_url: str, name: str) -> str:
    url = make_url(server_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(database_url: str) -> None:
    url = make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def delete_topics(target: BenchTarget) -> None:
    """Best effort: the embedded broker keeps events in memory, so give them back."""
    from confluent_kafka.admin import AdminClient

    try:
        futures = AdminClient({"bootstrap.servers": target.bootstrap_servers}).delete_topics(list(target.topics.all()))
        for future in futures.values():
            future.result(timeout=30)
    except Exception:
        pass


def machine() -> dict[str, Any]:
    """What the figures were measured on: cores, memory, CPU model, versions."""
    cpu_model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu_model, "free_h": _free_h(),
            "memory_total_bytes": _mem_total(), "python": platform.python_version(),
            "platform": platform.platform()}


def _free_h() -> str:
    try:
        return subprocess.run(["free", "-h"], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0
