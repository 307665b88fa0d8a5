"""Live reload (issue 11 item 6): the pure diff, then the real daemon reloaded with
SIGHUP — a broken file keeps the running config; sources, sinks and routes added,
changed and removed under a signed webhook load refuse no request and lose or repeat
no event."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from argbridge.config.settings import load_settings
from argbridge.reload import diff, effective
from tests.conftest import free_port
from tests.support.process import Daemon, run_cli
from tests.support.webhooks import OLD_SECRET, SECRET, incident_body, sw_headers


def _settings(**kw):
    base = {
        "http": {"enabled": False},
        "sources": {"a": {"type": "replay"}},
        "sinks": {"f": {"type": "file"}, "g": {"type": "file", "path": "g.jsonl"}},
    }
    base.update(kw)
    return load_settings(None, **base)


def test_diff_names_what_changed_and_keeps_restart_only_keys():
    old = _settings()
    new = _settings(
        sources={"a": {"type": "replay", "interval": 1}, "b": {"type": "replay"}},
        sinks={"f": {"type": "file"}, "h": {"type": "file", "path": "h.jsonl"}},
        routes=[{"sinks": ["f"]}],
        state_dir="/elsewhere",
        http={"enabled": False, "port": 1},
    )
    applied, kept = effective(old, new)
    assert kept == ("state_dir", "http")
    assert applied.state_dir == old.state_dir and applied.http == old.http
    changes = diff(old, applied, kept)
    assert changes.sources.to_json() == {"added": ["b"], "removed": [], "changed": ["a"]}
    assert changes.sinks.to_json() == {"added": ["h"], "removed": ["g"], "changed": []}
    assert changes.routes_changed
    assert not diff(old, _settings()).any


def test_a_rotated_secret_is_a_changed_component(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("H11_HOOK_SECRET", SECRET)
    src = {"w": {"type": "argus-webhook", "secrets": ["env:H11_HOOK_SECRET"]}}
    before = load_settings(None, sources=src)
    monkeypatch.setenv("H11_HOOK_SECRET", OLD_SECRET)
    after = load_settings(None, sources=src)
    assert diff(before, after).sources.changed == ("w",)


def _config(state: Path, port: int, *, sources: str, sinks: str, routes: str = "") -> str:
    return (
        f'state_dir = "{state}"\n[log]\nlevel = "debug"\nformat = "json"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n[runtime]\ndrain_timeout = "10s"\n'
        + sources
        + sinks
        + routes
    )


ARGUS = f'[sources.argus]\ntype = "argus-webhook"\nsecrets = ["{SECRET}"]\n'
ARGUS_ROTATING = (
    f'[sources.argus]\ntype = "argus-webhook"\nsecrets = ["{OLD_SECRET}", "{SECRET}"]\n'
)
DEPLOYS = '[sources.deploys]\ntype = "webhook"\nscheme = "hmac-sha256"\nsecrets = ["k"]\n'
FILE = '[sinks.file]\ntype = "file"\npath = "events.jsonl"\nbatch_size = 50\n'
FILE_CHANGED = '[sinks.file]\ntype = "file"\npath = "events.jsonl"\nbatch_size = 7\n'
FILE2 = '[sinks.file2]\ntype = "file"\npath = "events2.jsonl"\n'


async def _status_json(config: Path) -> dict[str, Any]:
    """``argbridge status --json`` over the control socket the config names."""
    result = await anyio.to_thread.run_sync(
        lambda: run_cli("status", "--config", str(config), "--json")
    )
    doc: dict[str, Any] = orjson.loads(result.stdout)
    return doc


@pytest.mark.slow
async def test_sighup_with_a_broken_file_keeps_the_running_config(tmp_path: Path):
    port = free_port()
    config = tmp_path / "argbridge.toml"
    good = _config(tmp_path / "state", port, sources=ARGUS, sinks=FILE)
    config.write_text(good)
    base = f"http://127.0.0.1:{port}"
    with Daemon(config) as daemon:
        await anyio.to_thread.run_sync(daemon.wait_event, "http.listening")
        before = await anyio.to_thread.run_sync(
            lambda: run_cli("status", "--config", str(config), "--json")
        )
        loaded = orjson.loads(before.stdout)["config"]
        config.write_text(good + '[sinks.broken]\ntype = "kafka"\nacks = "most"\n')
        daemon.signal(signal.SIGHUP)
        line = await anyio.to_thread.run_sync(daemon.wait_event, "config.reload_rejected")
        assert "sinks.broken.acks: must be one of 0, 1, all" in line["errors"]
        # Still the old config: the webhook source answers, status says so.
        async with httpx.AsyncClient(timeout=10) as client:
            body = incident_body("INC-1")
            r = await client.post(
                f"{base}/webhooks/argus",
                content=body,
                headers={**sw_headers(body), "content-type": "application/json"},
            )
        assert r.status_code == 200
        status = await anyio.to_thread.run_sync(lambda: run_cli("status", "--config", str(config)))
        assert "LAST RELOAD REJECTED" in status.stdout
        assert "sinks.broken.acks" in status.stdout
        assert f"sha256 {loaded['sha256'][:16]}" in status.stdout
        doc = orjson.loads(
            (
                await anyio.to_thread.run_sync(
                    lambda: run_cli("status", "--config", str(config), "--json")
                )
            ).stdout
        )
        assert doc["config"]["sha256"] == loaded["sha256"]
        assert doc["config"]["loaded_at"] == loaded["loaded_at"]
        assert list(doc["sinks"]) == ["file"]
        # Fixed: the next SIGHUP applies it, with a new hash and load time.
        config.write_text(good + FILE2)
        daemon.signal(signal.SIGHUP)
        await anyio.to_thread.run_sync(daemon.wait_event, "config.reloaded")
        doc = orjson.loads(
            (
                await anyio.to_thread.run_sync(
                    lambda: run_cli("status", "--config", str(config), "--json")
                )
            ).stdout
        )
        assert doc["config"]["sha256"] != loaded["sha256"]
        assert doc["config"]["loaded_at"] > loaded["loaded_at"]
        assert doc["config"]["last_reload"]["ok"] is True
        assert sorted(doc["sinks"]) == ["file", "file2"]
        assert daemon.stop() == 0


@pytest.mark.slow
async def test_reloads_under_a_webhook_load_refuse_nothing_and_lose_nothing(tmp_path: Path):
    port = free_port()
    state = tmp_path / "state"
    config = tmp_path / "argbridge.toml"
    config.write_text(_config(state, port, sources=ARGUS, sinks=FILE))
    base = f"http://127.0.0.1:{port}"
    steps = [
        # A sink and a source added, a route introduced.
        _config(
            state,
            port,
            sources=ARGUS + DEPLOYS,
            sinks=FILE + FILE2,
            routes='[[routes]]\nsinks = ["file", "file2"]\n',
        ),
        # The sink under load rebuilt, the webhook source under load swapped (secret
        # rotation: old and new both verify).
        _config(
            state,
            port,
            sources=ARGUS_ROTATING + DEPLOYS,
            sinks=FILE_CHANGED + FILE2,
            routes='[[routes]]\nsinks = ["file", "file2"]\n',
        ),
        # Removed again.
        _config(state, port, sources=ARGUS_ROTATING, sinks=FILE_CHANGED),
    ]
    outcomes: list[tuple[int, str]] = []
    failures: list[str] = []
    #: ``reached[0]`` is set once ``outcomes`` holds ``wanted[0]`` answers.
    wanted = [0]
    reached = [anyio.Event()]
    with Daemon(config) as daemon:
        await anyio.to_thread.run_sync(daemon.wait_event, "http.listening")
        stop = anyio.Event()

        async def load(worker: int, client: httpx.AsyncClient) -> None:
            n = 0
            while not stop.is_set():
                body = incident_body(f"INC-{worker}-{n}")
                n += 1
                try:
                    r = await client.post(
                        f"{base}/webhooks/argus",
                        content=body,
                        headers={**sw_headers(body), "content-type": "application/json"},
                    )
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                accepted_id = r.json().get("id", "") if r.status_code == 200 else r.text
                outcomes.append((r.status_code, accepted_id))
                if len(outcomes) >= wanted[0]:
                    reached[0].set()

        async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
            for w in range(4):
                tg.start_soon(load, w, client)
            for text in steps:
                wanted[0] = len(outcomes) + 50  # the load keeps flowing across the reload
                reached[0] = anyio.Event()
                config.write_text(text)
                daemon.signal(signal.SIGHUP)
                await anyio.to_thread.run_sync(daemon.wait_event, "config.reloaded")
                with anyio.fail_after(20):
                    await reached[0].wait()
            stop.set()
        accepted = [i for status, i in outcomes if status == 200]
        refused = [(status, i) for status, i in outcomes if status != 200]
        assert not failures and not refused, (failures[:3], refused[:3])
        assert len(accepted) == len(set(accepted)) >= 150

        def delivered() -> None:
            daemon.wait_for(
                lambda line: (
                    line.get("event") == "sink.caught_up"
                    and line.get("component") == "file"
                    and line.get("cursor", 0) >= len(accepted)
                )
            )

        await anyio.to_thread.run_sync(delivered)
        assert daemon.stop() == 0
    lines = (state / "events.jsonl").read_bytes().splitlines()
    ids = Counter(orjson.loads(line)["id"] for line in lines)
    assert set(ids) == set(accepted), "every accepted event reached the rebuilt sink"
    assert max(ids.values()) == 1, "and none twice"
    reloaded = [line for line in daemon.seen if line.get("event") == "config.reloaded"]
    assert len(reloaded) == 3


@pytest.mark.slow
async def test_sighup_rereads_secret_references(tmp_path: Path):
    port = free_port()
    secret_file = tmp_path / "argus-secret"
    secret_file.write_text(OLD_SECRET + "\n")
    config = tmp_path / "argbridge.toml"
    config.write_text(
        _config(
            tmp_path / "state",
            port,
            sources=f'[sources.argus]\ntype = "argus-webhook"\nsecrets = ["file:{secret_file}"]\n',
            sinks=FILE,
        )
    )
    url = f"http://127.0.0.1:{port}/webhooks/argus"

    async def post(secret: str, n: int) -> int:
        body = incident_body(f"INC-{n}")
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(
                url,
                content=body,
                headers={**sw_headers(body, secret=secret), "content-type": "application/json"},
            )
        return r.status_code

    with Daemon(config) as daemon:
        await anyio.to_thread.run_sync(daemon.wait_event, "http.listening")
        assert await post(OLD_SECRET, 1) == 200
        assert await post(SECRET, 2) == 401
        secret_file.write_text(SECRET + "\n")  # rotated; the config file is unchanged
        daemon.signal(signal.SIGHUP)
        line = await anyio.to_thread.run_sync(daemon.wait_event, "config.reloaded")
        assert line["sources"]["changed"] == ["argus"]
        assert await post(SECRET, 3) == 200
        assert await post(OLD_SECRET, 4) == 401
        assert daemon.stop() == 0
    assert SECRET not in "".join(daemon.raw) and OLD_SECRET not in "".join(daemon.raw)
