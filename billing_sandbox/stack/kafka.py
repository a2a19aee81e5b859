"""Apache Kafka 4.x for the embedded stack: one KRaft node (broker and controller) on loopback ports.

Everything lives under `<stack dir>/kafka/`:
- `lib/`: the jars of `billing_sandbox/kafka/pom.xml` (the pinned `org.apache.kafka:kafka_2.13` and a log4j2
  binding), resolved once by Maven and reused while the pom is unchanged (`lib/.pom-sha256`);
- `cluster-id` and `data/`: the KRaft storage, formatted once; the log directory survives `down` and `up`;
- `server.properties`: rendered at each start (the ports may change when the old ones are taken);
- `logs/server.log`: the broker's own log (log4j2, rolled at 10 MB); `logs/jvm.log`: what the JVM prints itself.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from billing_sandbox.stack.common import LOOPBACK, StackError, log_tail

PACKAGE_FILES = Path(__file__).resolve().parents[1] / "kafka"
POM = PACKAGE_FILES / "pom.xml"
LOG4J2 = PACKAGE_FILES / "log4j2.properties"
MIN_JAVA = 17  # Kafka 4's broker is built for Java 17
HEAP = "512m"  # beside PostgreSQL on a 2-core, shared machine; Kafka serves reads from the page cache, not the heap
# Fast start and a small footprint: one GC thread, no hsperfdata file, exit (not limp) on an OutOfMemoryError.
JVM_FLAGS = ("-Xms128m", f"-Xmx{HEAP}", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-XX:+ExitOnOutOfMemoryError",
             "-Djava.awt.headless=true")
MAVEN_TIMEOUT = 900.0
TOOL_TIMEOUT = 120.0
NODE_ID = 1

# Defaults for tests and the demo: nothing created behind our back (our code creates its topics), one replica of
# everything, no wait before a consumer group's first rebalance, and internal topics small enough to create fast.
TEST_DEFAULTS: Mapping[str, str] = {
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "8",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "8",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # A killed broker (the reliability tests' fault) may register again only once its old session has expired:
    # 4 s instead of 9, with heartbeats often enough to keep a live one registered through a busy moment.
    "broker.session.timeout.ms": "4000",
    "broker.heartbeat.interval.ms": "500",
    # 2 cores: fewer threads than Kafka's defaults (3 network, 8 I/O), and a compaction buffer that fits the heap
    # (its 128 MiB default is a quarter of it).
    "num.network.threads": "2",
    "num.io.threads": "4",
    "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
}


@dataclass(frozen=True, slots=True)
class Tools:
    java: str
    maven: str | None  # needed only while the jars are not cached


def render_server_properties(broker_port: int, controller_port: int, log_dir: Path,
                             advertised_port: int | None = None) -> str:
    """The node's server.properties: a combined broker and controller on loopback, a standalone KRaft quorum.
    `advertised_port` sends clients elsewhere than the listener (the reliability tests' TCP proxy)."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "listeners": f"PLAINTEXT://{LOOPBACK}:{broker_port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{advertised_port or broker_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "controller.quorum.bootstrap.servers": f"{LOOPBACK}:{controller_port}",
        "log.dirs": str(log_dir),
        **TEST_DEFAULTS,
    }
    lines = [f"{key}={_escape(value)}" for key, value in settings.items()]
    return "# Written by billing-recon (billing_sandbox/stack/kafka.py) at every start: edits are lost.\n" + (
        "\n".join(lines) + "\n")


def _escape(value: str) -> str:
    """A java.util.Properties value: a backslash would start an escape; a leading space would be dropped."""
    value = value.replace("\\", "\\\\")
    return "\\" + value if value.startswith(" ") else value


def new_cluster_id() -> str:
    """A KRaft cluster id as `kafka-storage.sh random-uuid` makes one: 16 random bytes, URL-safe base64 without
    padding. Like Kafka, never one starting with '-', which a command line would read as an option."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def java_major(version_output: str) -> int | None:
    """The major version in `java -version`'s output (`17.0.15` is 17, the old `1.8.0_392` is 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def pinned_version(pom: Path = POM) -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    return match.group(1) if match else "?"


def find_java(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    home = env.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def missing_tools_message(missing: str) -> str:
    return (f"BILLING_STACK_BROKER=kafka runs Apache Kafka {pinned_version()}, which needs Java {MIN_JAVA} or newer "
            f"(`java` on PATH, or JAVA_HOME) and, until its jars are cached in the stack folder, Maven (`mvn`) to "
            f"fetch them from Maven Central: {missing}. Install them (on Debian: `apt-get install "
            f"openjdk-17-jre-headless maven`), or unset BILLING_STACK_BROKER to run Tansu, which needs nothing but "
            "pip.")


class ApacheKafka:
    """One Apache Kafka node under `<stack dir>/kafka`; `lib` may be shared by several stacks (one resolve)."""

    name = "kafka"
    port_count = 2  # clients', then the controller's
    stop_grace = 60.0  # a clean shutdown flushes the logs and writes the clean-shutdown marker

    def __init__(self, stack_dir: Path, lib: Path | None = None) -> None:
        self.home = stack_dir / "kafka"
        self.lib = (lib or self.home / "lib").absolute()
        self.data = self.home / "data"
        self.logs = self.home / "logs"
        self.properties = self.home / "server.properties"
        self.cluster_id_file = self.home / "cluster-id"
        self.log_file = self.logs / "server.log"
        self.maven_log = self.home / "maven.log"
        self.description = f"Apache Kafka {pinned_version()}"
        self.advertised_port: int | None = None  # clients are sent to the listener unless set

    # --- start ------------------------------------------------------------------------------------------
    def launch(self, ports: Sequence[int]) -> subprocess.Popen[bytes]:
        tools = self.tools()
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ensure_jars(tools)
        self.properties.write_text(render_server_properties(ports[0], ports[1], self.data, self.advertised_port))
        self.ensure_formatted(tools.java)
        with (self.logs / "jvm.log").open("ab") as jvm_log:  # the child keeps its own descriptor
            return subprocess.Popen(
                [tools.java, *JVM_FLAGS, *self._logging_flags(), "-cp", self._classpath(), "kafka.Kafka",
                 str(self.properties)],
                stdout=jvm_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=self.home,
            )

    def tools(self) -> Tools:
        """Java (checked to be recent enough) and Maven, or one paragraph naming what is missing."""
        java = find_java()
        if java is None:
            raise StackError(missing_tools_message("no `java` was found"))
        major = java_major(self._run([java, "-version"], "java -version").stderr)
        if major is None or major < MIN_JAVA:
            raise StackError(missing_tools_message(f"{java} is Java {major or 'of an unknown version'}"))
        maven = shutil.which("mvn")
        if maven is None and not self.jars_cached():
            raise StackError(missing_tools_message("no `mvn` was found, and the jars are not cached yet"))
        return Tools(java, maven)

    # --- the jars ----------------------------------------------------------------------------------------
    def jars_cached(self) -> bool:
        marker = self.lib / ".pom-sha256"
        return marker.exists() and marker.read_text().strip() == _pom_digest()

    def ensure_jars(self, tools: Tools) -> None:
        """Resolve the pom's jars into `lib` once; a new pom (another Kafka version) resolves again. Maven writes
        into a private folder renamed into place at the end, so an interrupted or concurrent resolve leaves no
        half-filled cache."""
        if self.jars_cached():
            return
        assert tools.maven is not None  # tools() refuses a missing Maven when the jars are not cached
        partial = self.lib.with_name(f"{self.lib.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        self.home.mkdir(parents=True, exist_ok=True)
        command = [tools.maven, "-B", "-q", "-Dstyle.color=never", "-f", str(POM), "dependency:copy-dependencies",
                   f"-DoutputDirectory={partial}", "-DincludeScope=runtime"]
        with self.maven_log.open("a") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            try:
                done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=MAVEN_TIMEOUT, check=False)
            except subprocess.TimeoutExpired:
                raise StackError(f"Maven did not resolve Apache Kafka's jars within {MAVEN_TIMEOUT:.0f} s; see "
                                 f"{self.maven_log}") from None
        if done.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            shutil.rmtree(partial, ignore_errors=True)
            raise StackError(f"Maven could not resolve Apache Kafka's jars from {POM} (exit {done.returncode}); the "
                             f"end of {self.maven_log}:\n{log_tail(self.maven_log)}")
        (partial / ".pom-sha256").write_text(_pom_digest() + "\n")
        shutil.rmtree(self.lib, ignore_errors=True)  # a cache of another pom
        self.lib.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, self.lib)

    def _classpath(self) -> str:
        return str(self.lib / "*")  # the JVM expands the wildcard itself

    # --- the storage -------------------------------------------------------------------------------------
    def ensure_formatted(self, java: str) -> None:
        """Format the log directory once (a standalone KRaft quorum of this node); later starts keep its events."""
        if (self.data / "meta.properties").exists():
            self._keep_cluster_id()
            return
        if self.data.exists() and any(self.data.iterdir()):
            raise StackError(f"{self.data} holds files but no meta.properties: Kafka's storage was partly deleted. "
                             "Remove that folder to start with an empty broker.")
        self._run([java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:-UsePerfData", *self._logging_flags(), "-cp",
                   self._classpath(), "kafka.tools.StorageTool", "format", "--standalone", "--cluster-id",
                   self.cluster_id(), "--config", str(self.properties)], "kafka-storage format")

    def cluster_id(self) -> str:
        if not self.cluster_id_file.exists():
            self.cluster_id_file.write_text(new_cluster_id() + "\n")
        return self.cluster_id_file.read_text().strip()

    def _keep_cluster_id(self) -> None:
        """A stack folder whose cluster-id file was lost gets it back from the storage it describes."""
        if self.cluster_id_file.exists():
            return
        text = (self.data / "meta.properties").read_text()
        match = re.search(r"^cluster\.id=(\S+)", text, re.MULTILINE)
        if match:
            self.cluster_id_file.write_text(match.group(1) + "\n")

    # --- helpers -----------------------------------------------------------------------------------------
    def _logging_flags(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={LOG4J2}", f"-Dkafka.logs.dir={self.logs}"]

    def _run(self, command: list[str], what: str) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                                  stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"{what} failed: {exc}") from None
        if done.returncode != 0:
            raise StackError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
        return done


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()
