"""Apache Kafka brokers for the tests: KRaft, combined broker+controller, on free ports.

:func:`start_kafka` formats KRaft storage and starts one or three nodes from the jars of
:mod:`tests.support.kafka_dist`, each a JVM in its own process group that gets SIGTERM if
the test process dies, and waits until every node has registered (the broker's log says
``Kafka Server started``, then a metadata request lists all brokers). Shapes:

- one node: ``PLAINTEXT`` for plain clients, and with ``secure=True`` also ``SSL`` (client
  certificate required: mTLS), ``SASL_SSL`` and ``SASL_PLAINTEXT`` (PLAIN, SCRAM-SHA-256,
  SCRAM-SHA-512; users in :data:`USERS`), certificates made by ``trustme``; with
  ``proxied=True`` a ``PROXIED`` listener advertised behind a :class:`TcpProxy`, so a test
  can cut the network between the client and the broker;
- three nodes: replication factor 3, ``min.insync.replicas=2`` (also for the offsets and
  transaction logs), for leader failover.

Topics are not created on demand (``auto.create.topics.enable=false``, as on managed
clusters): create them (:meth:`KafkaCluster.create_topic`) or let the sink do it
(``create_topics``). The secured node runs the ``StandardAuthorizer``: a resource without
ACLs is open to everyone and PLAINTEXT clients are super users, so only tests that add
rules (:meth:`KafkaCluster.allow` / :meth:`KafkaCluster.deny`, for the SASL user ``bob``)
see permissions at work.

:meth:`KafkaNode.kill` is ``kill -9``; :meth:`KafkaNode.start` restarts a node on the same
log dirs. Records are read back with librdkafka (``confluent-kafka``), as consumers do.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.kafka_dist import NEWEST_4X, KafkaDist, kafka_dist, log_config_args
from tests.support.tcp_proxy import TcpProxy

START_TIMEOUT = 90.0
JVM_HEAP = ("-Xms128m", "-Xmx512m")
#: What kafka-server-start.sh gives a broker (KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS).
PRODUCTION_JVM = (
    "-Xms1G",
    "-Xmx1G",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
)
#: SASL users (PLAIN and SCRAM); bob is for tests that take permissions away with ACLs.
USERS = {"alice": "alice-secret", "bob": "bob-secret"}
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
#: Broker start-up times of this process, for the test run's summary.
STARTUPS: list[str] = []


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open until every one is chosen)."""
    import socket

    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None

    def preexec() -> None:  # pragma: no cover - runs in the child
        import ctypes

        os.setpgid(0, 0)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)

    return preexec


@dataclass(frozen=True)
class TlsFiles:
    """PEM files made by trustme: the CA, the broker's keystore, a client's key pair."""

    ca: Path
    server_keystore: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA nobody trusts, for "untrusted certificate" tests


def make_tls(folder: Path) -> TlsFiles:
    import trustme
    from cryptography.hazmat.primitives import serialization

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("argbridge-client")

    def pkcs8(blob: bytes) -> bytes:  # Kafka's PEM keystore reads PKCS#8 keys only
        key = serialization.load_pem_private_key(blob, password=None)
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    files = TlsFiles(
        ca=folder / "ca.pem",
        server_keystore=folder / "server-keystore.pem",
        client_cert=folder / "client-cert.pem",
        client_key=folder / "client-key.pem",
        other_ca=folder / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    chain = b"".join(pem.bytes() for pem in server.cert_chain_pems)
    files.server_keystore.write_bytes(pkcs8(server.private_key_pem.bytes()) + chain)
    files.client_cert.write_bytes(b"".join(pem.bytes() for pem in client.cert_chain_pems))
    files.client_key.write_bytes(pkcs8(client.private_key_pem.bytes()))
    trustme.CA().cert_pem.write_to_path(str(files.other_ca))
    return files


@dataclass
class KafkaNode:
    dist: KafkaDist
    node_id: int
    home: Path
    ports: dict[str, int]
    advertised: dict[str, int]
    properties: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    #: JVM options (heap, GC); the tests' small heap unless start_kafka was given others.
    jvm: tuple[str, ...] = (*JVM_HEAP, "-XX:+UseSerialGC")

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start (or restart, on the same log dirs) this node's JVM. Call it from the
        main thread: the JVM gets SIGTERM when the thread that started it ends (Linux's
        PR_SET_PDEATHSIG follows the thread), so a worker thread would kill it."""
        if self.running:
            return
        import threading

        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "start Kafka nodes from the main thread: a JVM started from another "
                "thread gets SIGTERM when that thread ends (PR_SET_PDEATHSIG)"
            )
        out = open(self.home / "stdout.txt", "ab")
        self._started_at = time.monotonic()
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.proc = subprocess.Popen(
            [
                "java",
                *self.jvm,
                "-Djava.awt.headless=true",
                *log_config_args(self.dist, self.log_file),
                "-cp",
                self.dist.classpath,
                "kafka.Kafka",
                str(self.home / "server.properties"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(),
        )
        out.close()

    def wait_started(self, deadline: float) -> float:
        """Poll the broker's own log (an outside process) until it says it started."""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Kafka node {self.node_id} exited: {self.tail()}")
            with contextlib.suppress(FileNotFoundError):
                with open(self.log_file, "rb") as f:
                    f.seek(self._log_offset)
                    if b"Kafka Server started" in f.read():
                        return time.monotonic() - self._started_at
            time.sleep(0.05)
        raise TimeoutError(f"Kafka node {self.node_id} did not start: {self.tail()}")

    def kill(self) -> None:
        """``kill -9``: no controlled shutdown, the log dirs stay as they are."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def tail(self, lines: int = 20) -> str:
        text = ""
        for path in (self.home / "stdout.txt", self.log_file):
            with contextlib.suppress(FileNotFoundError):
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text


@dataclass(frozen=True)
class Record:
    """A record read back with librdkafka, named as aiokafka's ``ConsumerRecord`` is."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, msg: Any) -> Record:
        return cls(
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            key=msg.key(),
            value=msg.value(),
            headers=tuple((k, v or b"") for k, v in (msg.headers() or [])),
        )


@dataclass
class KafkaCluster:
    dist: KafkaDist
    nodes: list[KafkaNode]
    tls: TlsFiles | None = None
    proxy: TcpProxy | None = None
    startup_seconds: float = 0.0
    _admin: Any = field(default=None, repr=False)

    @property
    def version(self) -> str:
        return self.dist.version

    def bootstrap_for(self, listener: str = "PLAINTEXT") -> str:
        return ",".join(
            f"127.0.0.1:{n.advertised.get(listener, n.ports[listener])}" for n in self.nodes
        )

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_for("PLAINTEXT")

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self._admin

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Every running node started, and a metadata request lists all of them."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.running:
                node.wait_started(deadline)
        expected = {n.node_id for n in self.nodes if n.running}
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                md = self.admin().list_topics(timeout=2)
                if set(md.brokers) >= expected:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"Kafka brokers {sorted(expected)} not all registered")

    def create_topic(
        self, name: str, partitions: int = 4, replication: int | None = None, **config: str
    ) -> None:
        from confluent_kafka.cimpl import NewTopic

        rf = replication if replication is not None else min(3, len(self.nodes))
        futures = self.admin().create_topics(
            [NewTopic(name, partitions, rf, config=config)], operation_timeout=30
        )
        futures[name].result(timeout=60)

    def deny(self, user: str, operation: str, *, topic_prefix: str | None = None) -> None:
        """A DENY ACL for ``User:<user>``: ``operation`` (``WRITE``, ``DESCRIBE``,
        ``CREATE``…) on the topics starting with ``topic_prefix``, or on the cluster.
        (Once a resource has an ACL, only what is allowed on it explicitly is.)"""
        self.acl(user, operation, "DENY", topic_prefix=topic_prefix)

    def allow(self, user: str, operation: str, *, topic_prefix: str | None = None) -> None:
        """An ALLOW ACL, as :meth:`deny`."""
        self.acl(user, operation, "ALLOW", topic_prefix=topic_prefix)

    def acl(
        self, user: str, operation: str, permission: str, *, topic_prefix: str | None = None
    ) -> None:
        from confluent_kafka.admin import (  # type: ignore[attr-defined]
            AclBinding,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        if topic_prefix is None:
            resource, name, pattern = ResourceType.BROKER, "kafka-cluster", "LITERAL"
        else:
            resource, name, pattern = ResourceType.TOPIC, topic_prefix, "PREFIXED"
        binding = AclBinding(
            resource,
            name,
            ResourcePatternType[pattern],
            f"User:{user}",
            "*",
            AclOperation[operation],
            AclPermissionType[permission],
        )
        for future in self.admin().create_acls([binding]).values():
            future.result(timeout=30)

    def leader_of(self, topic: str, partition: int = 0, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            md = self.admin().list_topics(topic=topic, timeout=5)
            part = md.topics[topic].partitions.get(partition)
            if part is not None and part.leader >= 0:
                return int(part.leader)
            time.sleep(0.1)
        raise TimeoutError(f"no leader for {topic}[{partition}]")

    def read_all(
        self,
        topic: str,
        *,
        at_least: int = 0,
        isolation: str = "read_committed",
        timeout: float = 60.0,
    ) -> list[Any]:
        """Every record of ``topic`` from offset 0, read with librdkafka.

        Waits until at least ``at_least`` records came, then until every partition
        reached its end, so nothing written (a duplicate) is missed.
        """
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"read-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": isolation,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            md = consumer.list_topics(topic, timeout=10)
            parts = sorted(md.topics[topic].partitions)
            consumer.assign([TopicPartition(topic, p, 0) for p in parts])
            records: list[Any] = []
            at_end: set[int] = set()
            deadline = time.monotonic() + timeout
            while len(records) < at_least or len(at_end) < len(parts):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"read {len(records)} of {at_least} from {topic}")
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(int(msg.partition() or 0))
                        continue
                    raise RuntimeError(str(err))
                at_end.discard(msg.partition())
                records.append(msg)
            return records
        finally:
            consumer.close()

    async def consume(
        self, topic: str, count: int, *, within: float = 60.0, isolation: str = "read_committed"
    ) -> list[Record]:
        """:meth:`read_all` from async code (in a worker thread), as :class:`Record`."""
        import anyio.to_thread

        msgs = await anyio.to_thread.run_sync(
            lambda: self.read_all(topic, at_least=count, isolation=isolation, timeout=within)
        )
        return [Record.of(m) for m in msgs]

    def freeze(self) -> None:
        """Every node stopped with SIGSTOP: connections stay open, nothing answers."""
        for node in self.nodes:
            if node.running:
                node.pause()

    def thaw(self) -> None:
        for node in self.nodes:
            if node.running:
                node.resume()

    def console_consume(self, topic: str, count: int, timeout: float = 60.0) -> list[str]:
        """``count`` records read by the Java console consumer of the same jars."""
        prop = "--formatter-property" if self.dist.major >= 4 else "--property"
        proc = subprocess.run(
            [
                "java",
                "-Xmx256m",
                *log_config_args(self.dist, self.nodes[0].home / "console.log"),
                "-cp",
                self.dist.classpath,
                "org.apache.kafka.tools.consumer.ConsoleConsumer",
                "--bootstrap-server",
                self.bootstrap,
                "--topic",
                topic,
                "--from-beginning",
                "--max-messages",
                str(count),
                prop,
                "print.key=true",
                prop,
                "print.headers=true",
                prop,
                "key.separator=\t",
            ],
            capture_output=True,
            timeout=timeout,
            check=True,
        )
        return proc.stdout.decode().splitlines()

    def stop(self) -> None:
        if self._admin is not None:
            self._admin = None
        for node in self.nodes:
            node.kill()
        if self.proxy is not None:
            self.proxy.close()


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _properties(
    node_id: int,
    home: Path,
    ports: dict[str, int],
    advertised: dict[str, int],
    voters: str,
    n_nodes: int,
    tls: TlsFiles | None,
) -> dict[str, str]:
    rf = str(min(3, n_nodes))
    isr = "2" if n_nodes >= 3 else "1"
    listeners = dict(ports)
    protocol = {
        "PLAINTEXT": "PLAINTEXT",
        "CONTROLLER": "PLAINTEXT",
        "PROXIED": "PLAINTEXT",
        "SSL": "SSL",
        "SASL_SSL": "SASL_SSL",
        "SASL_PLAINTEXT": "SASL_PLAINTEXT",
    }
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "listeners": ",".join(f"{k}://127.0.0.1:{v}" for k, v in listeners.items()),
        "advertised.listeners": ",".join(
            f"{k}://127.0.0.1:{advertised.get(k, v)}"
            for k, v in listeners.items()
            if k != "CONTROLLER"
        ),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(f"{k}:{protocol[k]}" for k in listeners),
        "controller.quorum.voters": voters,
        "log.dirs": str(home / "data"),
        "num.partitions": "4",
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        # As on managed clusters: the sink checks and creates its topics (create_topics).
        "auto.create.topics.enable": "false",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "log.flush.interval.messages": str(2**62),
    }
    if tls is not None:
        props.update(
            {
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(tls.server_keystore),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(tls.ca),
                "listener.name.ssl.ssl.client.auth": "required",
                "sasl.enabled.mechanisms": "PLAIN," + ",".join(SCRAM_MECHANISMS),
                # ACLs apply (tests add DENY rules for the SASL user); without any rule on
                # a resource everyone may use it, and PLAINTEXT clients are super users.
                "authorizer.class.name": (
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
                ),
                "allow.everyone.if.no.acl.found": "true",
                "super.users": "User:ANONYMOUS",
            }
        )
        plain_users = " ".join(f'user_{u}="{p}"' for u, p in USERS.items())
        for listener in ("sasl_ssl", "sasl_plaintext"):
            props[f"listener.name.{listener}.plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            )
            for mech in SCRAM_MECHANISMS:
                props[f"listener.name.{listener}.{mech.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
    return props


def start_kafka(
    root: Path,
    *,
    nodes: int = 1,
    version: str = NEWEST_4X,
    secure: bool = False,
    proxied: bool = False,
    overrides: dict[str, str] | None = None,
    jvm: tuple[str, ...] | None = None,
) -> KafkaCluster:
    """Format and start a cluster of ``nodes`` combined nodes under ``root`` (``jvm``:
    the JVM options, e.g. the heap and GC of ``kafka-server-start.sh`` for a benchmark;
    by default a small heap for the tests)."""
    dist = kafka_dist(version)
    started = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    tls = make_tls(root / "tls") if secure else None
    names = ["PLAINTEXT", "CONTROLLER"]
    if secure:
        names += ["SSL", "SASL_SSL", "SASL_PLAINTEXT"]
    if proxied:
        names.append("PROXIED")
    free = iter(_free_ports(len(names) * nodes))
    all_ports = [{name: next(free) for name in names} for _ in range(nodes)]
    proxy: TcpProxy | None = None
    advertised: list[dict[str, int]] = [{} for _ in range(nodes)]
    if proxied:
        if nodes != 1:
            raise ValueError("the proxied listener is for one node")
        proxy = TcpProxy(("127.0.0.1", all_ports[0]["PROXIED"]))
        advertised[0]["PROXIED"] = proxy.port
    voters = ",".join(f"{i + 1}@127.0.0.1:{p['CONTROLLER']}" for i, p in enumerate(all_ports))
    cluster_id = _cluster_id()
    members: list[KafkaNode] = []
    formats: list[subprocess.Popen[bytes]] = []
    for i, ports in enumerate(all_ports):
        home = root / f"node{i + 1}"
        home.mkdir(parents=True, exist_ok=True)
        props = _properties(i + 1, home, ports, advertised[i], voters, nodes, tls)
        props.update(overrides or {})
        (home / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        scram = []
        if secure:
            for mech in SCRAM_MECHANISMS:
                for user, password in USERS.items():
                    scram += ["--add-scram", f"{mech}=[name={user},password={password}]"]
        formats.append(
            subprocess.Popen(
                [
                    "java",
                    "-Xmx256m",
                    *log_config_args(dist, home / "format.log"),
                    "-cp",
                    dist.classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(home / "server.properties"),
                    *scram,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
        member = KafkaNode(dist, i + 1, home, ports, advertised[i], props)
        if jvm is not None:
            member.jvm = jvm
        members.append(member)
    for proc in formats:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"kafka-storage format failed: {out.decode(errors='replace')}")
    cluster = KafkaCluster(dist, members, tls=tls, proxy=proxy)
    try:
        for node in members:
            node.start()
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    cluster.startup_seconds = time.monotonic() - started
    STARTUPS.append(
        f"Apache Kafka {version}: {nodes} node(s){' with TLS/SASL' if secure else ''} "
        f"formatted and started in {cluster.startup_seconds:.1f} s"
    )
    return cluster
