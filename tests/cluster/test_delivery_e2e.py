"""One Slack post and one outbound webhook per event, cluster-wide: three daemon processes
on one Apache Kafka broker, the real Slack and webhook receivers of tests/support.

Signed Argus webhooks are posted round-robin to the three instances, some retried onto a
different instance (same webhook id: same event id); then a burst goes to one instance,
which is killed (SIGKILL) as soon as it answered the first of them: every webhook it did
not answer is retried on another instance, as a load balancer would. The killed instance
is restarted at the end (its journal may hold events it never got acked: it produces
them again, and the delivery consumers drop the repeats). Every acknowledged event id
reaches the Slack server exactly once and the outbound receiver exactly once.

The burst starts once everything before it is delivered and committed, and its
incidents are chosen on events-topic partitions the doomed instance's delivery consumers
do not own: what is under test is the webhook acknowledgement. A delivery consumer killed
between a delivery and its offset commit leaves that delivery to the next owner (at least
once: docs/cluster-delivery.md; seen here as a repeated Slack post before the burst
waited for the groups to catch up).
"""

from __future__ import annotations

import base64
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from argbridge.delivery.kafka_records import partition_for
from tests.conftest import free_port
from tests.support.process import Daemon, Line, run_cli
from tests.support.receivers import Reply, SlackServer, WebhookReceiver, serve
from tests.support.webhooks import SECRET, incident_body, sw_headers

pytestmark = pytest.mark.timeout(300)
OUT_SECRET = "whsec_" + base64.b64encode(b"x" * 32).decode()
PARTITIONS = 6
SINKS = ("chat", "hook")
_ID = re.compile(r"id ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def write_config(
    root: Path, i: int, port: int, bootstrap: str, deployment: str, slack: str, hook: str
) -> Path:
    state = root / f"i{i}"
    state.mkdir(parents=True, exist_ok=True)
    config = state / "argbridge.toml"
    config.write_text(
        f"""
state_dir = "{state / "state"}"
[log]
level = "debug"
format = "json"
[http]
enabled = true
host = "127.0.0.1"
port = {port}
[runtime]
drain_timeout = "5s"
[sources.argus]
type = "argus-webhook"
secrets = ["{SECRET}"]
[sinks.chat]
type = "slack"
webhook_url = "{slack}/hook"
rate = 500
burst = 500
[sinks.hook]
type = "webhook"
url = "{hook}/hook"
secrets = ["{OUT_SECRET}"]
allow_private = true
[cluster]
enabled = true
bootstrap_servers = "{bootstrap}"
deployment = "{deployment}"
instance_id = "i{i}"
events_partitions = {PARTITIONS}
replication_factor = 1
session_timeout = "6s"
heartbeat_interval = "1s"
request_timeout = "5s"
webhook_ack = "kafka"
"""
    )
    return config


class Instance:
    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.daemon: Daemon | None = None
        #: The events-topic partitions each delivery consumer was last assigned.
        self.owned: dict[str, list[int]] = {}

    def start(self) -> None:
        self.daemon = Daemon(self.config)
        self.owned = {}

    async def wait(self, predicate: Any, within: float = 90) -> Line:
        assert self.daemon is not None
        daemon = self.daemon

        def matched(line: Line) -> bool:
            if line.get("event") == "delivery.dedupe_rebuilt":
                self.owned[line["component"]] = list(line["events_partitions"])
            return bool(predicate(line))

        return await anyio.to_thread.run_sync(daemon.wait_for, matched, within)

    async def owns(self, count: int) -> None:
        """Until both delivery consumers were last assigned ``count`` events partitions."""

        def done(_: Any = None) -> bool:
            return all(len(self.owned.get(s, ())) == count for s in SINKS)

        if not done():
            await self.wait(done)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/argus"


def webhook(incident: str) -> tuple[bytes, dict[str, str]]:
    body = incident_body(incident)
    headers = {**sw_headers(body, msg_id=f"msg_{incident}"), "content-type": "application/json"}
    return body, headers


async def group_caught_up(bootstrap: str, deployment: str) -> None:
    """Both delivery groups committed every events-topic offset (the broker's state,
    polled with a deadline)."""
    topic = f"{deployment}.events"
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    with anyio.fail_after(90):
        while True:
            done = True
            for sink in SINKS:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=bootstrap,
                    group_id=f"{deployment}.delivery.{sink}",
                    enable_auto_commit=False,
                )
                await consumer.start()
                try:
                    ends = await consumer.end_offsets(tps)
                    for tp in tps:
                        if (await consumer.committed(tp) or 0) < ends[tp]:
                            done = False
                finally:
                    await consumer.stop()
            if done:
                return
            await anyio.sleep(0.5)  # polling the broker, an outside process


# Three daemons with kills (20-75 s): in `make soak` with the other fault loops.
@pytest.mark.soak
async def test_one_post_and_one_webhook_per_event_across_three_instances(tmp_path, kafka):
    receiver = WebhookReceiver([OUT_SECRET])
    slack = SlackServer()
    deployment = f"e2e{uuid.uuid4().hex[:8]}"
    accepted: dict[str, str] = {}  # event id -> incident

    async with serve(receiver.router) as hook, serve(slack.router) as slack_base:
        instances = []
        for i in range(3):
            port = free_port()
            config = write_config(tmp_path, i, port, kafka.bootstrap, deployment, slack_base, hook)
            instances.append(Instance(config, port))
        try:
            for inst in instances:
                inst.start()
            for inst in instances:
                await inst.wait(lambda line: line.get("event") == "daemon.ready")
            for inst in instances:
                await inst.owns(PARTITIONS // 3)

            async with httpx.AsyncClient(timeout=30) as client:

                async def post(inst: Instance, incident: str) -> httpx.Response:
                    body, headers = webhook(incident)
                    return await client.post(inst.url(), content=body, headers=headers)

                # 1. Round-robin, every third retried onto a different instance.
                for n in range(30):
                    incident = f"INC-rr-{n}"
                    first = await post(instances[n % 3], incident)
                    assert first.status_code == 200, first.text
                    accepted[first.json()["id"]] = incident
                    if n % 3 == 0:
                        again = await post(instances[(n + 1) % 3], incident)
                        assert again.status_code == 200, again.text
                        assert again.json()["id"] == first.json()["id"]

                # 2. A burst to instance 2, killed once it answered the first webhook;
                # its delivery consumers idle (all delivered and committed so far).
                await group_caught_up(kafka.bootstrap, deployment)
                doomed, others = instances[2], instances[:2]
                theirs = {p for s in SINKS for p in doomed.owned[s]}
                burst = [
                    f"INC-kill-{n}"
                    for n in range(400)
                    if partition_for(f"INC-kill-{n}".encode(), list(range(PARTITIONS)), "")
                    not in theirs
                ][:24]
                answered = anyio.Event()
                unanswered: list[str] = []

                async def one(incident: str) -> None:
                    try:
                        r = await post(doomed, incident)
                    except httpx.HTTPError:
                        unanswered.append(incident)
                        return
                    if r.status_code != 200:
                        unanswered.append(incident)
                        return
                    accepted[r.json()["id"]] = incident
                    answered.set()

                async with anyio.create_task_group() as tg:
                    for incident in burst:
                        tg.start_soon(one, incident)
                    await answered.wait()
                    assert doomed.daemon is not None
                    doomed.daemon.signal(signal.SIGKILL)
                print(f"burst of {len(burst)}: {len(unanswered)} unanswered by the killed instance")
                for incident in unanswered:  # the load balancer retries elsewhere
                    r = await post(others[len(incident) % 2], incident)
                    assert r.status_code == 200, r.text
                    accepted[r.json()["id"]] = incident
                assert sorted(accepted.values()) == sorted(
                    [f"INC-rr-{n}" for n in range(30)] + burst
                )

            # The survivors take the killed instance's partitions.
            for inst in others:
                await inst.owns(PARTITIONS // 2)
            # 3. The killed instance comes back: what it journaled but never got acked
            # reaches the events topic now, and is dropped as a repeat.
            assert doomed.daemon is not None
            doomed.daemon.proc.wait()
            doomed.start()
            await doomed.wait(lambda line: line.get("event") == "daemon.ready")
            await doomed.wait(
                lambda line: (
                    line.get("event") == "sink.caught_up"
                    and line.get("component") == "cluster:events"
                )
            )
            await group_caught_up(kafka.bootstrap, deployment)
        finally:
            for inst in instances:
                if inst.daemon is not None:
                    inst.daemon.stop()

    rebuilds = [
        line
        for inst in instances
        if inst.daemon is not None
        for line in inst.daemon.seen
        if line.get("event") == "delivery.dedupe_rebuilt" and line.get("ids")
    ]
    print("rebuilds with ids:", [(r["component"], r["ids"], r["seconds"]) for r in rebuilds])
    # Every acknowledged event: exactly once at the outbound receiver...
    assert not receiver.invalid
    hook_ids = [r.payload["id"] for r in receiver.received]
    assert sorted(i for i in hook_ids if i in accepted) == sorted(accepted)
    assert len(hook_ids) == len(set(hook_ids)), "an event reached the receiver twice"
    # ... and exactly once at Slack (its message names the event id).
    slack_ids = [m for p in slack.posts for m in _ID.findall(orjson.dumps(p).decode())]
    posted = sorted(i for i in slack_ids if i in accepted)
    assert posted == sorted(accepted), "every accepted event posted exactly once"
    assert not slack.invalid


async def test_dead_letters_are_where_argbridge_dlq_finds_them(tmp_path, kafka):
    """A webhook the destination refuses for good (410) is a dead letter in the journal of
    the instance that gave up: ``argbridge dlq list`` shows it, ``dlq replay`` sends it."""
    receiver = WebhookReceiver([OUT_SECRET])
    receiver.script.append(Reply(410))
    slack = SlackServer()
    deployment = f"dlq{uuid.uuid4().hex[:8]}"
    async with serve(receiver.router) as hook, serve(slack.router) as slack_base:
        port = free_port()
        config = write_config(tmp_path, 0, port, kafka.bootstrap, deployment, slack_base, hook)
        inst = Instance(config, port)
        inst.start()
        try:
            await inst.wait(lambda line: line.get("event") == "daemon.ready")
            await inst.owns(PARTITIONS)
            async with httpx.AsyncClient(timeout=30) as client:
                body, headers = webhook("INC-dlq")
                r = await client.post(inst.url(), content=body, headers=headers)
            assert r.status_code == 200, r.text
            event_id = r.json()["id"]
            await inst.wait(lambda line: line.get("event") == "webhook.dead_letter")

            listed = await anyio.to_thread.run_sync(
                lambda: run_cli("dlq", "list", "--config", str(config), "--json")
            )
            assert listed.returncode == 0, listed.stderr
            items = orjson.loads(listed.stdout)["items"]
            assert [(d["sink"], d["event_id"]) for d in items] == [("hook", event_id)]
            assert "410" in items[0]["reason"]

            replayed = await anyio.to_thread.run_sync(
                lambda: run_cli("dlq", "replay", "--config", str(config), "--sink", "hook")
            )
            assert replayed.returncode == 0, replayed.stderr + replayed.stdout
            with anyio.fail_after(30):
                await receiver.wait_for(2)
            assert [x.payload["id"] for x in receiver.received] == [event_id, event_id]

            # The cluster-fed sinks' local cursors follow the events topic's acks: no
            # backlog holds the journal (``argbridge status``, polled with a deadline).
            with anyio.fail_after(30):
                while True:
                    status = await anyio.to_thread.run_sync(
                        lambda: run_cli("status", "--config", str(config), "--json")
                    )
                    assert status.returncode == 0, status.stderr
                    sinks = orjson.loads(status.stdout)["sinks"]
                    if all(sinks[name]["backlog"] == 0 for name in SINKS):
                        break
                    await anyio.sleep(0.2)  # polling the daemon, an outside process
            assert all(sinks[name]["started"] for name in SINKS)
        finally:
            if inst.daemon is not None:
                inst.daemon.stop()
