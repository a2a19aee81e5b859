"""The embedded stack's pure parts: Apache Kafka's server.properties, the broker's port choice, the broker setting,
and the refusals (a damaged data folder, a missing Java, another broker already running) that say what to do."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

from billing_domain.config import DEFAULT_STACK_BROKER, stack_broker_setting
from billing_domain.core.exceptions import ConfigurationError
from billing_sandbox.stack import EmbeddedStack, StackError
from billing_sandbox.stack import kafka as kafka_module
from billing_sandbox.stack.common import choose_ports, port_is_free, read_ports, record_ports
from billing_sandbox.stack.kafka import (
    LOG4J2,
    POM,
    java_major,
    new_cluster_id,
    pinned_version,
    render_server_properties,
)

ROOT = Path(__file__).resolve().parents[2]


def _properties(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_a_partly_deleted_data_folder_is_refused_with_a_way_out(tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path, "tansu")
    (stack.pgdata / "base").mkdir(parents=True)  # what is left when the cluster's files were deleted
    with pytest.raises(StackError, match=r"PG_VERSION is missing.*Remove that folder"):
        stack.up()
    assert stack.status() is None  # nothing started, nothing recorded


# --- server.properties ------------------------------------------------------------------------------------
def test_server_properties_make_one_kraft_node_on_loopback_with_test_defaults(tmp_path: Path) -> None:
    props = _properties(render_server_properties(41001, 41002, tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:41001,CONTROLLER://127.0.0.1:41002"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:41001"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:41002"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "data")
    # Our code creates its topics; everything internal has one replica; no wait before a group's first rebalance.
    assert props["auto.create.topics.enable"] == "false"
    for name in ("default.replication.factor", "min.insync.replicas", "offsets.topic.replication.factor",
                 "transaction.state.log.replication.factor", "transaction.state.log.min.isr"):
        assert props[name] == "1", name
    assert props["group.initial.rebalance.delay.ms"] == "0"
    # Retention is Kafka's own default: the embedded broker does not hide a topic created without infinite retention.
    assert not any(name.startswith("log.retention") for name in props)


def test_server_properties_escape_what_java_properties_would_misread() -> None:
    props = _properties(render_server_properties(1, 2, Path("/tmp/a\\b")))
    assert props["log.dirs"] == "/tmp/a\\\\b"  # Properties.load reads `\\` back as one backslash


# --- the jars, the JVM, the storage ---------------------------------------------------------------------
def test_the_pom_pins_a_kafka_4_release_and_ships_with_the_package() -> None:
    assert re.fullmatch(r"4\.\d+\.\d+", pinned_version())
    assert "<artifactId>kafka_2.13</artifactId>" in POM.read_text()
    assert "log4j-slf4j" in POM.read_text(), "without a binding the broker's slf4j logging goes nowhere"
    assert "${sys:kafka.logs.dir}/server.log" in LOG4J2.read_text()
    package_data = (ROOT / "pyproject.toml").read_text()
    assert "kafka/pom.xml" in package_data and "kafka/log4j2.properties" in package_data


@pytest.mark.parametrize(("output", "major"), [
    ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
    ('openjdk version "25" 2025-09-16', 25),
    ('java version "1.8.0_392"', 8),
    ("no version here", None),
])
def test_java_major_reads_java_version_output(output: str, major: int | None) -> None:
    assert java_major(output) == major


def test_cluster_ids_look_like_kafkas_own() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster) and not cluster.startswith("-") for cluster in ids)


# --- ports --------------------------------------------------------------------------------------------
def test_ports_are_kept_while_all_are_free_and_replaced_otherwise() -> None:
    fresh = lambda count: list(range(50_000, 50_000 + count))  # noqa: E731
    assert choose_ports([40001, 40002], 2, is_free=lambda _: True, fresh=fresh) == [40001, 40002]
    assert choose_ports([40001, 40002], 2, is_free=lambda p: p != 40002, fresh=fresh) == [50_000, 50_001]
    assert choose_ports(None, 2, is_free=lambda _: True, fresh=fresh) == [50_000, 50_001]
    assert choose_ports([40001], 2, is_free=lambda _: True, fresh=fresh) == [50_000, 50_001]  # another broker's
    assert choose_ports([40001, 40001], 2, is_free=lambda _: True, fresh=fresh) == [50_000, 50_001]


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)


def test_ports_are_recorded_per_broker_and_a_damaged_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "broker-ports.json"
    assert read_ports(path, "kafka") is None
    record_ports(path, "kafka", [40001, 40002])
    record_ports(path, "tansu", [40003])
    assert read_ports(path, "kafka") == [40001, 40002] and read_ports(path, "tansu") == [40003]
    path.write_text("{not json")
    assert read_ports(path, "kafka") is None
    record_ports(path, "kafka", [40004, 40005])
    assert read_ports(path, "kafka") == [40004, 40005]


# --- the broker setting --------------------------------------------------------------------------------
def test_the_broker_setting_is_checked_and_names_the_variable() -> None:
    assert DEFAULT_STACK_BROKER == "tansu"  # Python alone runs `make demo`
    assert stack_broker_setting({}) is None
    assert stack_broker_setting({"BILLING_STACK_BROKER": "  "}) is None
    assert stack_broker_setting({"BILLING_STACK_BROKER": " Kafka "}) == "kafka"
    assert stack_broker_setting({"BILLING_STACK_BROKER": "tansu"}) == "tansu"
    with pytest.raises(ConfigurationError, match=r"BILLING_STACK_BROKER: 'redpanda'.*tansu or kafka"):
        stack_broker_setting({"BILLING_STACK_BROKER": "redpanda"})


def test_the_constructor_argument_wins_over_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_STACK_BROKER", "kafka")
    assert EmbeddedStack(tmp_path).broker == "kafka"
    assert EmbeddedStack(tmp_path, "tansu").broker == "tansu"
    monkeypatch.delenv("BILLING_STACK_BROKER")
    assert EmbeddedStack(tmp_path).broker == DEFAULT_STACK_BROKER
    with pytest.raises(ConfigurationError, match="'kafak'"):
        EmbeddedStack(tmp_path, "kafak")


def test_the_stack_folder_defaults_to_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_STACK_DIR", str(tmp_path / "here"))
    assert EmbeddedStack().dir == tmp_path / "here"


def _recorded_running(stack: EmbeddedStack, broker: str) -> None:
    """A state file naming a live process (this one) as the broker: a stack that runs, as `up` sees it."""
    stack.dir.mkdir(parents=True, exist_ok=True)
    stack.state_file.write_text(json.dumps({"pg_port": 1, "broker_port": 2, "broker_pid": os.getpid(),
                                            "stack_dir": str(stack.dir), "broker": broker}))


def test_up_refuses_to_switch_a_running_stack_to_another_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                ) -> None:
    monkeypatch.delenv("BILLING_STACK_BROKER", raising=False)
    _recorded_running(EmbeddedStack(tmp_path), "tansu")
    with pytest.raises(StackError, match=r"runs tansu, but kafka was asked for.*stack down"):
        EmbeddedStack(tmp_path, "kafka").up()
    assert EmbeddedStack(tmp_path).broker == "tansu"  # no choice made: the running broker is kept


def test_a_state_file_from_before_the_choice_reads_as_tansu(tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path, "tansu")
    stack.state_file.write_text(json.dumps({"pg_port": 1, "broker_port": 2, "broker_pid": 3,
                                            "stack_dir": str(tmp_path)}))
    info = stack.status()
    assert info is not None and info.broker == "tansu" and "broker tansu" in info.describe()


def test_kafka_without_java_is_one_paragraph_naming_it_and_starts_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_module, "find_java", lambda: None)
    stack = EmbeddedStack(tmp_path / "stack", "kafka")
    with pytest.raises(StackError) as refused:
        stack.up()
    message = str(refused.value)
    assert "no `java` was found" in message and "Java 17" in message and "BILLING_STACK_BROKER" in message
    assert "\n" not in message
    assert stack.status() is None and not stack.pgdata.exists()  # PostgreSQL was not started for nothing


def test_kafka_without_maven_and_no_cached_jars_names_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_module, "find_java", lambda: "/usr/bin/java")
    monkeypatch.setattr(kafka_module.ApacheKafka, "_run", lambda *_: _Done('openjdk version "17.0.1"'))
    monkeypatch.setattr(kafka_module.shutil, "which", lambda _: None)
    with pytest.raises(StackError, match=r"no `mvn` was found, and the jars are not cached yet"):
        EmbeddedStack(tmp_path / "stack", "kafka").up()


def test_an_old_java_is_refused_with_its_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_module, "find_java", lambda: "/opt/java8/bin/java")
    monkeypatch.setattr(kafka_module.ApacheKafka, "_run", lambda *_: _Done('java version "1.8.0_392"'))
    with pytest.raises(StackError, match=r"/opt/java8/bin/java is Java 8"):
        EmbeddedStack(tmp_path / "stack", "kafka").up()


class _Done:
    def __init__(self, stderr: str) -> None:
        self.stderr = stderr
