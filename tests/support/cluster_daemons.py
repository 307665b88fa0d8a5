"""The config file of one cluster-mode daemon following the Arga simulator: shared by the
three-daemon test (tests/cluster/test_cluster_daemons.py) and bench/bench_cluster.py."""

from __future__ import annotations

from pathlib import Path

from argbridge.simulator.arga import ArgaSimulator
from tests.support.apache_kafka import KafkaCluster


def arga_cluster_config(
    path: Path,
    state_dir: Path,
    kafka: KafkaCluster,
    sim: ArgaSimulator,
    deployment: str,
    instance_id: str,
    *,
    session: float,
    heartbeat: float,
    max_streams: int,
    reconnect_max: float = 1.0,
    request_timeout: float | None = None,
) -> Path:
    """Write the config to ``path`` and return it (``request_timeout``: the Kafka
    clients' own default when ``None``)."""
    timeout = f'request_timeout = "{request_timeout}s"\n' if request_timeout is not None else ""
    path.write_text(
        f"""
state_dir = "{state_dir}"
[log]
level = "info"
format = "json"
[http]
enabled = false
[runtime]
drain_timeout = "5s"
[cluster]
enabled = true
deployment = "{deployment}"
instance_id = "{instance_id}"
bootstrap_servers = "{kafka.bootstrap}"
replication_factor = 1
events_partitions = 6
session_timeout = "{session}s"
heartbeat_interval = "{heartbeat}s"
{timeout}[sources.arga]
type = "arga"
base_url = "{sim.base_url}"
api_key = "{sim.token}"
poll_interval = "1s"
max_streams = {max_streams}
[sources.arga.reconnect]
initial = "0.2s"
max = "{reconnect_max}s"
"""
    )
    return path
