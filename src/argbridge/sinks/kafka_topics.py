"""A Kafka sink's topics: its admin client, the check of its fixed topics at start, and
the partitions of each topic it writes to, with the topics the broker refused for good.

:class:`SinkTopics` belongs to one :class:`~argbridge.sinks.kafka.KafkaSink` (the
exactly-once sink reaches it through the sink that builds its records). It owns:

- the admin client, started on first use and dropped after a failure (the readiness
  probe's metadata request goes through it too);
- :meth:`SinkTopics.check`: the fixed topics (those the routes to this sink name without
  a template) exist, are made when ``create_topics`` is on, or are named as missing or
  not authorized;
- :meth:`SinkTopics.partitions`: a topic's partitions before its first record. A
  templated topic is asked about first (one metadata request), since aiokafka would wait
  ``request_timeout`` for a topic that does not exist; an unknown or forbidden topic
  raises :class:`Refused` and is remembered for ``REFUSED_TOPIC_TTL`` (its records are
  dead-lettered, never retried forever).

What a failure means for the sink's health and ``/readyz`` stays the sink's business.
"""

from __future__ import annotations

from typing import Any

import anyio
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAuthorizationFailedError

from argbridge.clock import Clock
from argbridge.config.settings import Settings
from argbridge.config.sinks import KafkaSinkConfig
from argbridge.errors import SinkError
from argbridge.sinks import kafka_client

#: Bound on closing the admin client (with a dead broker it may not end).
ADMIN_CLOSE_TIMEOUT = 5.0
#: How long a topic the broker refused (unknown, not authorized) stays refused before it
#: is asked again, and how many such topics are remembered.
REFUSED_TOPIC_TTL = 30.0
#: How long an unknown topic may take to appear on a broker that creates topics on demand.
AUTO_CREATE_WAIT = 2.0
_MAX_REFUSED_TOPICS = 1024
#: Kafka error codes in a metadata answer.
_UNKNOWN_TOPIC, _TOPIC_AUTHORIZATION = 3, 29


class Refused(Exception):
    """The broker refused a topic for good (the reason says why)."""


class SinkTopics:
    """One Kafka sink's admin client and topic checks (see the module docstring)."""

    def __init__(
        self, config: KafkaSinkConfig, name: str, settings: Settings, clock: Clock, log: Any
    ) -> None:
        self.config = config
        self._clock = clock
        self._log = log
        #: The fixed topics this sink writes to (checked / created at start).
        self.fixed = fixed_topics(config, name, settings)
        self._admin: AIOKafkaAdminClient | None = None
        self._admin_lock = anyio.Lock()
        #: Topics the broker refused: topic -> (reason, monotonic time to ask again).
        self._refused: dict[str, tuple[str, float]] = {}

    # -- the admin client -----------------------------------------------------------------

    async def admin(self) -> AIOKafkaAdminClient:
        """The admin client, started now if there is none."""
        async with self._admin_lock:
            if self._admin is None:
                admin = kafka_client.new_admin(self.config)
                try:
                    await admin.start()
                except BaseException:
                    with anyio.move_on_after(ADMIN_CLOSE_TIMEOUT, shield=True):
                        await admin.close()
                    raise
                self._admin = admin
            return self._admin

    async def drop_admin(self) -> None:
        """Close the admin client (after a failure, or at the end); the next use starts
        another."""
        admin, self._admin = self._admin, None
        if admin is not None:
            with anyio.move_on_after(ADMIN_CLOSE_TIMEOUT, shield=True):
                try:
                    await admin.close()
                except Exception as exc:
                    self._log.debug("kafka.admin_close_failed", error=exc)

    # -- the fixed topics, at start ---------------------------------------------------------

    async def check(self) -> str | None:
        """``None`` when every fixed topic exists (the missing ones made now with
        ``create_topics``); else what is wrong with them, in words (missing, not
        authorized to describe). Raises :class:`SinkError` when the broker refuses to
        create one, and aiokafka's errors when the brokers do not answer (unbounded
        here: the caller bounds it)."""
        topics = sorted(self.fixed)
        if not topics:
            return None
        states: dict[str, int] = {}
        # Listing asks for no topic by name: nothing is created on demand here.
        admin = await self.admin()
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing and self.config.create_topics:
            await self.create(missing)
            missing = []
        elif missing:
            # Hidden (no Describe permission) or absent; a broker that creates topics on
            # demand creates them now, as a produce would.
            states = await self.states(missing)
            missing = [t for t in missing if states.get(t) == _UNKNOWN_TOPIC]
        denied = [t for t in topics if states.get(t) == _TOPIC_AUTHORIZATION]
        parts = []
        if missing:
            parts.append(
                f"missing topics: {', '.join(missing)} (create them, or set create_topics = true)"
            )
        if denied:
            parts.append(
                f"not authorized to describe topics: {', '.join(denied)} (the sink needs "
                "Describe and Write on them)"
            )
        return "; ".join(parts) or None

    async def states(self, topics: list[str]) -> dict[str, int]:
        """Topic -> Kafka error code of a metadata request for it (0: it exists).

        A broker that creates topics on demand answers "unknown topic" to the request
        that creates one: an unknown topic is asked about again for up to
        ``AUTO_CREATE_WAIT`` before it counts as missing (unless the sink creates it)."""
        admin = await self.admin()
        deadline = self._clock.monotonic() + AUTO_CREATE_WAIT
        while True:
            described = await admin.describe_topics(topics)
            states = {t["topic"]: int(t["error_code"]) for t in described}
            unknown = [t for t in topics if states.get(t) == _UNKNOWN_TOPIC]
            if not unknown or self.config.create_topics:
                return states
            if self._clock.monotonic() >= deadline:
                return states
            await self._clock.sleep(0.1)

    async def create(self, topics: list[str]) -> None:
        """Create ``topics`` with the sink's ``topic_partitions`` and
        ``topic_replication_factor``; :class:`SinkError` names each one refused."""
        cfg = self.config
        admin = await self.admin()
        failed = await kafka_client.create_topics(
            admin,
            [NewTopic(t, cfg.topic_partitions, cfg.topic_replication_factor) for t in topics],
            cfg.request_timeout,
        )
        if failed:
            raise SinkError(f"kafka: cannot create topics: {'; '.join(failed)}")
        self._log.info(
            "kafka.topics_created",
            topics=topics,
            partitions=cfg.topic_partitions,
            replication_factor=cfg.topic_replication_factor,
        )

    # -- any topic, before its first record ------------------------------------------------

    async def partitions(self, producer: AIOKafkaProducer, topic: str) -> list[int]:
        """``topic``'s sorted partitions. A templated topic is asked about first; raises
        :class:`Refused` when the broker refuses the topic for good (remembered for
        ``REFUSED_TOPIC_TTL``)."""
        now = self._clock.monotonic()
        refused = self._refused.get(topic)
        if refused is not None:
            if refused[1] > now:
                raise Refused(refused[0])
            del self._refused[topic]
        try:
            if topic not in self.fixed:
                code = (await self.states([topic])).get(topic, 0)
                if code == _UNKNOWN_TOPIC and self.config.create_topics:
                    await self.create([topic])
                elif code == _UNKNOWN_TOPIC:
                    raise Refused(
                        f"unknown topic {topic!r} (create it, or set create_topics = true)"
                    )
                elif code == _TOPIC_AUTHORIZATION:
                    raise Refused(f"topic authorization failed for {topic!r}")
            try:
                partitions = sorted(await producer.partitions_for(topic))
            except TopicAuthorizationFailedError:
                raise Refused(f"topic authorization failed for {topic!r}") from None
        except Refused as exc:
            if len(self._refused) >= _MAX_REFUSED_TOPICS:
                self._refused.clear()
            self._refused[topic] = (str(exc), now + REFUSED_TOPIC_TTL)
            raise
        if not partitions:
            raise SinkError(f"kafka: topic {topic!r} has no partitions")
        return partitions


def fixed_topics(config: KafkaSinkConfig, name: str, settings: Settings) -> set[str]:
    """The topics without a template among those the routes to this sink write to."""
    routes = [r for r in settings.routes if name in r.sinks]
    templates = {(r.topic or config.topic) for r in routes} if routes else {config.topic}
    return {t for t in templates if "{" not in t}
