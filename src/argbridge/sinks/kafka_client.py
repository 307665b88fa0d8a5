"""Building aiokafka clients from a Kafka sink's configuration, and naming their failures.

Owns the mapping from :class:`~argbridge.config.kafka.KafkaClientConfig` (and the sink's
producer keys) to aiokafka's arguments: :func:`client_kwargs` (bootstrap, client id, TLS
context, SASL, request timeout: what every client takes), :func:`producer_kwargs` (plus
acks, idempotence, compression, batching), :func:`admin_kwargs`, and the constructors
:func:`new_producer` and :func:`new_admin`. A transactional producer is
``new_producer(cfg, transactional_id=...)``. :class:`ProducerStops` stops producers
within a bound without abandoning them (a stop cut short leaves connections open).
:func:`create_topics` and :func:`broker_count` are the admin steps every module that makes
its own topics takes (the sink's ``create_topics``, the progress topic, the cluster's
control, events and retry topics).

aiokafka reports a failed bootstrap as "Unable to bootstrap from [...]" and only logs the
cause. :func:`diagnose` opens one connection per bootstrap server the way the client does
(TLS, then SASL) and returns the cause in words (:func:`describe`): an authentication
failure, an untrusted certificate, a refused connection, a timeout. Secrets never reach
these texts.

OAUTHBEARER: aiokafka supports it only through an ``AbstractTokenProvider`` object written
in Python (no configuration-only OIDC client-credentials flow), so it is not a key here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from argbridge.config.kafka import KafkaClientConfig

if TYPE_CHECKING:
    from argbridge.config.sinks import KafkaSinkConfig

#: Failure kinds (the first words of a description; ``/readyz`` shows them).
AUTHENTICATION = "authentication failed"
CERTIFICATE = "TLS certificate not trusted"
TLS = "TLS handshake failed"
REFUSED = "connection refused"
TIMED_OUT = "timed out"
AUTHORIZATION = "not authorized"
KINDS = (AUTHENTICATION, CERTIFICATE, TLS, REFUSED, TIMED_OUT, AUTHORIZATION)
#: The kinds that retrying soon will not fix: the sink backs off to ``retry_max``.
CONFIGURATION_KINDS = frozenset({AUTHENTICATION, CERTIFICATE, TLS, AUTHORIZATION})


def ssl_context(cfg: KafkaClientConfig) -> ssl.SSLContext | None:
    """The TLS context of an ``SSL``/``SASL_SSL`` connection (``None`` otherwise):
    ``ssl_cafile`` (else the system's CAs), the client certificate for mTLS, hostname
    verification unless ``ssl_check_hostname = false``."""
    if not cfg.security_protocol.endswith("SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=cfg.ssl_cafile,
        certfile=cfg.ssl_certfile,
        keyfile=cfg.ssl_keyfile,
        password=cfg.ssl_password.get_secret_value() if cfg.ssl_password else None,
    )
    if cfg.ssl_cafile is None:
        context.load_default_certs()
    context.check_hostname = cfg.ssl_check_hostname
    return context


def client_kwargs(cfg: KafkaClientConfig) -> dict[str, Any]:
    """What every aiokafka client takes: servers, client id, TLS, SASL, request timeout."""
    servers = cfg.bootstrap_servers
    kwargs: dict[str, Any] = {
        "bootstrap_servers": servers if isinstance(servers, str) else list(servers),
        "client_id": cfg.client_id,
        "request_timeout_ms": int(cfg.request_timeout * 1000),
        "security_protocol": cfg.security_protocol,
        "ssl_context": ssl_context(cfg),
    }
    if cfg.sasl_mechanism is not None:
        assert cfg.sasl_password is not None  # the config's validator ensures it
        kwargs.update(
            sasl_mechanism=cfg.sasl_mechanism,
            sasl_plain_username=cfg.sasl_username,
            sasl_plain_password=cfg.sasl_password.get_secret_value(),
        )
    return kwargs


def producer_kwargs(cfg: KafkaSinkConfig) -> dict[str, Any]:
    """An ``AIOKafkaProducer``'s arguments for the sink: :func:`client_kwargs` plus acks,
    idempotence, compression and batching."""
    return {
        **client_kwargs(cfg),
        "acks": cfg.acks if cfg.acks == "all" else int(cfg.acks),
        "compression_type": None if cfg.compression == "none" else cfg.compression,
        "enable_idempotence": cfg.enable_idempotence,
        "linger_ms": int(cfg.linger * 1000),
        "max_batch_size": cfg.max_batch_bytes,
        "max_request_size": max(cfg.max_batch_bytes, cfg.max_record_bytes) + 64 * 1024,
    }


def admin_kwargs(cfg: KafkaClientConfig) -> dict[str, Any]:
    """An ``AIOKafkaAdminClient``'s arguments (topic checks, creation, the health probe)."""
    return {**client_kwargs(cfg), "client_id": f"{cfg.client_id}-admin"}


def new_producer(cfg: KafkaSinkConfig, **overrides: Any) -> AIOKafkaProducer:
    """An unstarted producer (``overrides``: e.g. ``transactional_id``)."""
    return AIOKafkaProducer(**{**producer_kwargs(cfg), **overrides})


def new_admin(cfg: KafkaClientConfig) -> AIOKafkaAdminClient:
    """An unstarted admin client."""
    return AIOKafkaAdminClient(**admin_kwargs(cfg))


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]") or server, int(port or 9092)


def _servers(cfg: KafkaClientConfig) -> list[str]:
    s = cfg.bootstrap_servers
    return [x.strip() for x in s.split(",")] if isinstance(s, str) else list(s)


async def diagnose(cfg: KafkaClientConfig, per_server: float) -> str | None:
    """Why the bootstrap servers cannot be used: one connection to each, made as the
    clients make it (TCP, TLS, API versions, SASL). ``None`` when one of them works."""
    causes: list[str] = []
    kwargs = client_kwargs(cfg)
    conn_kwargs = {
        k: kwargs[k]
        for k in ("client_id", "security_protocol", "ssl_context")
        if kwargs.get(k) is not None
    }
    for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        if key in kwargs:
            conn_kwargs[key] = kwargs[key]
    for server in _servers(cfg):
        host, port = _host_port(server)
        try:
            with anyio.fail_after(per_server):
                conn = await create_conn(
                    host, port, request_timeout_ms=int(per_server * 1000), **conn_kwargs
                )
        except (Exception, TimeoutError) as exc:
            causes.append(f"{server}: {describe(exc)}")
            continue
        conn.close()
        return None
    return "; ".join(causes) or "no bootstrap server"


def kind(exc: BaseException) -> str | None:
    """The failure kind of ``exc`` (one of this module's constants), if it is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            SaslAuthenticationFailed
            | AuthenticationFailedError
            | AuthenticationMethodNotSupported
            | IllegalSaslStateError
            | UnsupportedSaslMechanismError,
        ):
            return AUTHENTICATION
        if isinstance(
            current,
            TopicAuthorizationFailedError
            | ClusterAuthorizationFailedError
            | TransactionalIdAuthorizationFailed,
        ):
            return AUTHORIZATION
        if isinstance(current, ssl.SSLCertVerificationError):
            return CERTIFICATE
        if isinstance(current, ssl.SSLError):
            return TLS
        if isinstance(current, ConnectionRefusedError):
            return REFUSED
        if isinstance(current, TimeoutError):
            return TIMED_OUT
        current = current.__cause__ or current.__context__
    return None


def describe(exc: BaseException) -> str:
    """``exc`` in words for logs and ``/readyz``: its kind first, then the details."""
    found = kind(exc)
    if isinstance(exc, TimeoutError):
        return TIMED_OUT
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = exc.verify_message or str(exc)
    elif isinstance(exc, KafkaError | KafkaConnectionError):
        text = f"{type(exc).__name__}: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return f"{found} ({text})" if found else text


#: Kafka's TOPIC_ALREADY_EXISTS: a topic made meanwhile (by another instance, or a retry
#: after a timeout) is no failure.
TOPIC_ALREADY_EXISTS = 36


async def broker_count(admin: AIOKafkaAdminClient) -> int:
    """The brokers the cluster reports (at least one): what a replication factor is capped
    at."""
    brokers = (await admin.describe_cluster()).get("brokers") or ()
    return len(brokers) or 1


def compacted_topic(name: str, partitions: int, replication: int, **configs: str) -> NewTopic:
    """A compacted topic (a table of the newest value per key) whose writes wait for two
    in-sync replicas wherever there are two; ``configs``: more topic settings."""
    return NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=replication,
        topic_configs={
            "cleanup.policy": "compact",
            "min.insync.replicas": str(min(2, replication)),
            **configs,
        },
    )


async def create_topics(
    admin: AIOKafkaAdminClient, topics: Sequence[NewTopic], broker_timeout: float
) -> list[str]:
    """Create ``topics`` (``broker_timeout``: the broker's own bound, seconds); ``"topic: message"``
    for each one the broker refused (one that already exists is not refused)."""
    response = await admin.create_topics(list(topics), timeout_ms=int(broker_timeout * 1000))
    failed = []
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        if code in (0, TOPIC_ALREADY_EXISTS):
            continue
        message = entry[2] if len(entry) > 2 and entry[2] else f"error {code}"
        failed.append(f"{topic}: {message}")
    return failed


async def wait_until_led(
    admin: AIOKafkaAdminClient, topics: Sequence[str], bound: float, poll: float = 0.05
) -> None:
    """Return once every topic of ``topics`` is in the cluster's metadata with a leader for
    each of its partitions: a topic just created (by this instance or another one at the
    same moment) may not be yet, and a consumer group whose leader computed its assignment
    then gives the topic's partitions to nobody until a metadata refresh minutes later.
    Polls the brokers every ``poll`` seconds; ``TimeoutError`` after ``bound``."""
    wanted = set(topics)
    with anyio.fail_after(bound):
        while True:
            described = await admin.describe_topics(sorted(wanted))
            led = {
                t["topic"]
                for t in described
                if t["error_code"] == 0
                and t["partitions"]
                and all(p["error_code"] == 0 and p["leader"] >= 0 for p in t["partitions"])
            }
            if wanted <= led:
                return
            await anyio.sleep(poll)


class ProducerStops:
    """Stops producers, waiting a bounded time for each.

    Against a frozen broker aiokafka's ``stop`` does not end (and a second call is a
    no-op); cancelling it leaves its connections open. So a stop that outlasts its bound
    keeps running as a task and closes the connections once the broker answers again;
    :meth:`finish` (on the sink's ``aclose``) gives the stragglers one more bounded wait,
    then cancels them."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._running: set[asyncio.Future[Any]] = set()

    async def stop(self, producer: AIOKafkaProducer, bound: float) -> None:
        task = asyncio.ensure_future(producer.stop())
        task.add_done_callback(self._stopped)
        self._running.add(task)
        with anyio.CancelScope(shield=True):
            await asyncio.wait((task,), timeout=bound)

    def _stopped(self, task: asyncio.Future[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.debug("kafka.stop_failed", error=task.exception())

    async def finish(self, bound: float) -> None:
        if self._running:
            with anyio.CancelScope(shield=True):
                await asyncio.wait(tuple(self._running), timeout=bound)
            for task in tuple(self._running):
                task.cancel()
