"""Pytest plugin: the Apache Kafka fixtures and the guard that CI ran them.

Fixtures (each broker shape starts once per test session, on first use):

- ``kafka``: one node of the newest 4.x with PLAINTEXT, SSL (mTLS), SASL_SSL and
  SASL_PLAINTEXT listeners and a PROXIED listener behind a cuttable :class:`TcpProxy`;
- ``kafka_cluster``: three nodes of the newest 4.x, replication factor 3,
  ``min.insync.replicas=2``;
- ``broker``: ``kafka``, or Tansu where Apache Kafka cannot run (the fallback);
- ``kafka_any``: one node of each version in ``ARGBRIDGE_KAFKA_VERSIONS`` (a comma list,
  default the newest 4.x; ``make soak`` adds the newest 3.9): the compatibility matrix.

Before each test the fixture puts the shape back as a test may have left it: killed
nodes restarted on their log dirs, paused ones resumed, the proxy restored.

The tests that need a broker run first, those of the three-node cluster before those of
one node, each shape stopped after the last test that uses it: the rest of the suite runs
with no JVM beside it (four idle brokers take about 0.16 of a core on this machine's
two). When the session ends the brokers still running stop, and every broker directory
is removed.

Under pytest-xdist (``make test`` runs two workers, ``--dist loadgroup``) every test that
needs a broker is in one ``xdist_group``, so one worker starts the brokers and runs those
tests in the order above while the other runs the rest. The controller counts the Kafka
tests that passed (the CI guard below) from the workers' reports, and prints the brokers'
start-up lines they forward as a report property.

Without Java or Maven the tests that need Apache Kafka are skipped, unless
``ARGBRIDGE_REQUIRE_KAFKA=1`` (set by ``make test`` under ``CI=true``): then they fail,
and the session fails too if no Apache Kafka test passed, so CI never skips the Kafka
suite silently. The terminal summary prints each broker's start-up time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support.apache_kafka import STARTUPS, KafkaCluster, start_kafka
from tests.support.kafka_dist import NEWEST_4X, KafkaUnavailable
from tests.support.tansu import Tansu, start_tansu, stop_tansu

FIXTURES = frozenset({"kafka", "kafka_cluster", "kafka_any"})  # "broker" may be Tansu
MARK = "apache_kafka"
#: The xdist group of every test that needs a broker: one worker runs them all.
GROUP = "kafka"
#: The report property carrying a broker start (its shape, its start-up line) from the
#: test that started it, from an xdist worker too.
STARTUP_PROPERTY = "kafka_startup"
#: Shape → the tests that started it. Each shape starts once a session (stopped only after
#: its last test): a second start means the broker tests were split across xdist workers
#: or out of their order, and fails the session (see :func:`restarted_shapes`).
_starts: dict[str, set[str]] = {}
_clusters: dict[tuple[str, int], KafkaCluster] = {}
#: The session's broker directories (log dirs, certificates), removed after the brokers
#: stop: a three-node cluster leaves ~700 MB of logs behind otherwise.
_roots: list[Path] = []
_passed = 0


def required() -> bool:
    return os.environ.get("ARGBRIDGE_REQUIRE_KAFKA", "") not in ("", "0")


def matrix_versions() -> list[str]:
    raw = os.environ.get("ARGBRIDGE_KAFKA_VERSIONS", NEWEST_4X)
    return [v.strip() for v in raw.split(",") if v.strip()]


def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="argbridge-kafka-"))
    _roots.append(root)
    return root


def _started(version: str, nodes: int, node: pytest.Item) -> KafkaCluster:
    """The session's cluster of that shape, healed (raises :class:`KafkaUnavailable`);
    started for ``node`` if it was not yet (its reports carry the start-up line)."""
    key = (version, nodes)
    cluster = _clusters.get(key)
    if cluster is None:
        cluster = start_kafka(
            _root(), nodes=nodes, version=version, secure=nodes == 1, proxied=nodes == 1
        )
        _clusters[key] = cluster
        node.user_properties.append((STARTUP_PROPERTY, [f"{version} x{nodes}", STARTUPS[-1]]))
    heal(cluster)
    return cluster


def _shape(version: str, nodes: int, node: pytest.Item) -> KafkaCluster:
    try:
        return _started(version, nodes, node)
    except KafkaUnavailable as exc:
        if required():
            pytest.fail(f"Apache Kafka is required here (ARGBRIDGE_REQUIRE_KAFKA): {exc}")
        pytest.skip(f"Apache Kafka unavailable: {exc}")


def heal(cluster: KafkaCluster) -> None:
    """Undo what a test did to the brokers: resume, restart, restore the proxy."""
    restarted = False
    for node in cluster.nodes:
        if node.running:
            node.resume()
        else:
            node.start()
            restarted = True
    if cluster.proxy is not None and cluster.proxy.is_cut:
        cluster.proxy.restore()
    if restarted:
        cluster.wait_ready()


@pytest.fixture
def kafka(request: pytest.FixtureRequest) -> KafkaCluster:
    return _shape(NEWEST_4X, 1, request.node)


@pytest.fixture
def kafka_cluster(request: pytest.FixtureRequest) -> KafkaCluster:
    return _shape(NEWEST_4X, 3, request.node)


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[KafkaCluster | Tansu]:
    """Apache Kafka (one node, newest 4.x), or Tansu on a machine without Java/Maven
    (never under ``ARGBRIDGE_REQUIRE_KAFKA``). Topics outlive a test: use fresh names."""
    try:
        cluster = _started(NEWEST_4X, 1, request.node)
    except KafkaUnavailable as exc:
        if required():
            pytest.fail(f"Apache Kafka is required here (ARGBRIDGE_REQUIRE_KAFKA): {exc}")
    else:
        request.node.add_marker(MARK)
        yield cluster
        return
    tansu = start_tansu()
    try:
        yield tansu
    finally:
        stop_tansu(tansu)


@pytest.fixture(params=matrix_versions())
def kafka_any(request: pytest.FixtureRequest) -> KafkaCluster:
    return _shape(str(request.param), 1, request.node)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARK}: needs Apache Kafka brokers (Java + Maven)")


def shapes_of(item: pytest.Item) -> set[tuple[str, int]]:
    """The broker shapes ``item`` starts: (version, nodes)."""
    names = set(getattr(item, "fixturenames", ()))
    shapes: set[tuple[str, int]] = set()
    if "kafka_cluster" in names:
        shapes.add((NEWEST_4X, 3))
    if names & {"kafka", "broker"}:
        shapes.add((NEWEST_4X, 1))
    if "kafka_any" in names:
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            shapes.add((str(callspec.params["kafka_any"]), 1))
    return shapes


def _order(item: pytest.Item) -> int:
    """0: the cluster's tests, 1: one node's, 2: the rest (a stable sort keeps the
    collection order inside each)."""
    shapes = shapes_of(item)
    if any(nodes > 1 for _, nodes in shapes):
        return 0
    return 1 if shapes else 2


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(MARK)
        if shapes_of(item):
            item.add_marker(pytest.mark.xdist_group(GROUP))
    items.sort(key=_order)


#: Each shape's last test (by node id) in the session's final order.
_last_use: dict[tuple[str, int], str] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    _last_use.clear()
    for item in session.items:
        for shape in shapes_of(item):
            _last_use[shape] = item.nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    for shape, last in list(_last_use.items()):
        if last == item.nodeid:
            del _last_use[shape]
            cluster = _clusters.pop(shape, None)
            if cluster is not None:
                cluster.stop()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _passed
    if report.when == "call" and report.passed and MARK in report.keywords:
        _passed += 1
    for name, value in report.user_properties:
        if name == STARTUP_PROPERTY:
            shape, line = cast("list[str]", value)
            _starts.setdefault(shape, set()).add(report.nodeid)
            if line not in STARTUPS:
                STARTUPS.append(line)  # a worker's broker (xdist's controller prints it)


def restarted_shapes() -> list[str]:
    """The broker shapes started more than once this session."""
    return sorted(shape for shape, tests in _starts.items() if len(tests) > 1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for cluster in _clusters.values():
        cluster.stop()
    _clusters.clear()
    for root in _roots:
        shutil.rmtree(root, ignore_errors=True)
    _roots.clear()
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller, which sees every report, judges
    if required() and _passed == 0 and session.testscollected and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if restarted_shapes() and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in STARTUPS:
        terminalreporter.write_line(line)
    if required() and _passed == 0:
        terminalreporter.write_line(
            "FAILED: no Apache Kafka test passed, and ARGBRIDGE_REQUIRE_KAFKA is set "
            "(make test under CI=true): the Kafka suite must run in CI",
            red=True,
        )
    elif _passed:
        terminalreporter.write_line(f"Apache Kafka tests passed: {_passed}")
    for shape in restarted_shapes():
        terminalreporter.write_line(
            f"FAILED: the Apache Kafka {shape} node(s) shape started more than once (by "
            f"{', '.join(sorted(_starts[shape]))}): its tests did not run on one worker in "
            "one block. Under pytest-xdist, --dist loadgroup must keep the xdist_group "
            "(it silently stopped grouping on pytest 9.2: pytest-xdist issue #1386)",
            red=True,
        )
