"""The demo's daemon configuration, built in code (ports and secrets differ per run).

There is no ``config/demo.toml``: every address is a free loopback port chosen at start
and every secret is generated per run, so :func:`demo_settings` builds the tree the way
a TOML file would (``argbridge demo --print-config`` shows it, secrets masked):

- ``sources.arga``: ``type = "arga"`` with ``simulate`` (the in-process Arga simulator:
  validation runs over SSE, demo runs over WebSocket);
- ``sources.argus``: ``type = "argus-webhook"`` at ``POST /webhooks/argus``, Standard
  Webhooks with the demo's inbound secret;
- ``sinks.file`` always (``events.jsonl`` in the state directory); ``sinks.kafka`` when
  a broker is given; ``sinks.slack`` to the local Slack console; ``sinks.webhook`` to
  the local verifying receiver (``allow_private = true``: it is on loopback);
- routes: everything to file, Kafka and the webhook; to Slack only what a channel
  wants — incidents, run endings and demo-run results;
- ``http.port = 0`` (a free port), short drain deadline, logs at ``warning``.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argbridge.config import load_settings
from argbridge.config.settings import Settings

KAFKA_TOPIC = "argbridge.demo"
SLACK_TYPES = ("argus.incident.", "arga.validation.run.", "arga.demorun.done")


def new_secret() -> str:
    """A fresh Standard Webhooks secret (``whsec_<base64 of 24 random bytes>``)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


@dataclass(frozen=True, slots=True)
class DemoPlan:
    """Everything the demo's configuration depends on."""

    state_dir: Path
    argus_secret: str
    receiver_url: str
    receiver_secret: str
    slack_url: str
    kafka_bootstrap: str | None = None
    tick: float = 0.5
    steps: int = 4
    log_level: str = "warning"


def demo_config(plan: DemoPlan) -> dict[str, Any]:
    """The configuration tree (what a TOML file would contain)."""
    sinks: dict[str, Any] = {
        "file": {"type": "file", "path": "events.jsonl", "fsync": False},
    }
    everything = ["file"]
    if plan.kafka_bootstrap is not None:
        sinks["kafka"] = {
            "type": "kafka",
            "bootstrap_servers": plan.kafka_bootstrap,
            "topic": KAFKA_TOPIC,
            "request_timeout": "5s",
            "call_timeout": "10s",
            "retry_max": "5s",
            # Tansu cannot run aiokafka's idempotent producer (InitProducerId v0).
            "enable_idempotence": False,
        }
        everything.append("kafka")
    sinks["slack"] = {
        "type": "slack",
        "webhook_url": plan.slack_url,
        "rate": 20.0,
        "burst": 20,
        "retry_max": "5s",
    }
    sinks["webhook"] = {
        "type": "webhook",
        "url": plan.receiver_url,
        "secrets": [plan.receiver_secret],
        "allow_private": True,
        "timeout": "5s",
        "retry_schedule": ["0s", "1s", "5s", "30s"],
        "retry_max": "5s",
    }
    everything.append("webhook")
    return {
        "state_dir": str(plan.state_dir),
        "log": {"level": plan.log_level, "format": "auto"},
        "runtime": {"drain_timeout": "3s", "restart_max": "5s"},
        "http": {"enabled": True, "host": "127.0.0.1", "port": 0, "shutdown_timeout": "2s"},
        "sources": {
            "arga": {
                "type": "arga",
                "poll_interval": "1s",
                "reconnect": {"initial": "200ms", "max": "5s"},
                "simulate": {"tick": plan.tick, "steps": plan.steps, "loop": True},
            },
            "argus": {"type": "argus-webhook", "secrets": [plan.argus_secret]},
        },
        "sinks": sinks,
        "routes": [
            {"name": "everything", "sinks": everything},
            {
                "name": "to-slack",
                "sinks": ["slack"],
                "filters": [{"any": [{"prefix": {"type": t}} for t in SLACK_TYPES]}],
            },
        ],
    }


def demo_settings(plan: DemoPlan) -> Settings:
    """Validated settings (``ARGBRIDGE_*`` environment overrides apply as usual)."""
    return load_settings(None, **demo_config(plan))


def render_toml(config: dict[str, Any], mask: tuple[str, ...] = ()) -> str:
    """A TOML rendering of the tree (for ``--print-config``); values in ``mask`` hidden."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            shown = "**********" if v in mask else v
            return '"' + shown.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v).__name__)

    def table(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if prefix and scalars:
            lines.extend(["", f"[{prefix}]"])
        for k, v in scalars.items():
            if k == "routes":
                continue
            lines.append(f"{k} = {value(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", {k: v for k, v in config.items() if k != "routes"})
    for route in config.get("routes", []):
        lines.extend(["", "[[routes]]"])
        lines.extend(f"{k} = {value(v)}" for k, v in route.items())
    return "\n".join(lines).lstrip("\n") + "\n"
