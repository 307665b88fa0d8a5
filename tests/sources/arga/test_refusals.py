"""Readiness that means something (issue 11 item 1): a refused or missing run is an alert
on that run, not the source's readiness; refusals are remembered per key. The pure
bookkeeping, a finished run closed with 1008, then the real daemon against the Arga
simulator: restart, ``argbridge follow`` on purpose, a key refused, a reload that
changes the key."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from argbridge.journal import Journal
from argbridge.sources.arga.refusals import Refusal, Refusals, key_fingerprint
from argbridge.sources.state import StateStore
from tests.conftest import free_port
from tests.support.arga_fake import running_source, simulator
from tests.support.process import Daemon, run_cli


async def test_refusals_are_remembered_per_key_and_say_when_the_key_is_refused(tmp_path: Path):
    async with Journal(tmp_path / "journal", sinks=["s"]) as journal:
        await _bookkeeping(journal.for_source())


async def _bookkeeping(store: StateStore) -> None:
    first = Refusals("arga", key_fingerprint("key-1"))
    await first.add(store, Refusal("demo", "d1", "refused", "close 1008", 1.0))
    assert "key-1" not in (await store.get_state("arga:arga:refused") or "")
    again = Refusals("arga", key_fingerprint("key-1"))
    assert await again.load(store) == 0
    assert again.get("demo", "d1") is not None
    # Discovery off: refused only when every followed run was refused.
    following = {("validation", "r1"): "following"}
    assert again.key_refused(following, discovery=False, listing=None) is None
    every = "Arga refused every followed run (1)"
    assert again.key_refused({}, discovery=False, listing=None) == every
    # Discovery on: only the run listing speaks for the key.
    assert again.key_refused({}, discovery=True, listing=None) is None
    listing = "GET /validation/runs answered 401"
    assert again.key_refused({}, discovery=True, listing=listing) == listing
    assert await again.forget(store, "demo", "d1")
    assert not await again.forget(store, "demo", "d1")
    await again.add(store, Refusal("demo", "d2", "not_found", "close 1008", 2.0))
    # Missing runs say nothing of the key.
    assert again.key_refused({}, discovery=False, listing=None) is None
    rotated = Refusals("arga", key_fingerprint("key-2"))
    assert await rotated.load(store) == 1
    assert rotated.runs == {}
    assert '"runs":[]' in (await store.get_state("arga:arga:refused") or "")  # for good


@pytest.mark.parametrize(
    ("reason", "status", "alert", "auth_failures"),
    [
        ("unauthorized", "auth_failed", "argbridge.source.auth_failed", 1),
        ("Test run not found", "not_found", "argbridge.source.run_not_found", 0),
    ],
)
async def test_a_1008_for_a_finished_run_is_still_reported(
    tmp_path: Path, reason: str, status: str, alert: str, auth_failures: int
):
    async with simulator() as sim:
        run = sim.add_demo_run("d1", steps=2)
        run.publish()  # finished before we connect
        sim.faults.ws_close_1008 = True
        sim.faults.ws_close_1008_reason = reason
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("d1", "demo")
            with anyio.fail_after(10):
                assert await h.wait_run("demo", "d1") == status
            types = await h.types()
            assert types.count(alert) == 1
            assert "arga.demorun.done" in types  # the run's events were still gap-filled
            assert h.metric("argbridge_source_auth_failures_total", component="arga") == (
                auth_failures
            )
            health = h.source.health()
            assert "1 run(s) refused or missing" in health.detail
            # Discovery off and the only followed run refused: that is the key refused.
            # A missing run says nothing of the key.
            assert health.ready is (status == "not_found"), health.detail


async def test_a_refused_run_is_followed_again_only_on_purpose(tmp_path: Path):
    async with simulator() as sim:
        sim.add_validation_run("r1", steps=1).publish()
        demo = sim.add_demo_run("d1", steps=2)  # live: the demo listing shows it
        sim.faults.ws_close_1008 = True
        async with Journal(tmp_path / "journal.db", sinks=["s"]) as journal:
            async with running_source(tmp_path, sim, journal=journal, runs=["r1"]) as h:
                with anyio.fail_after(10):
                    assert await h.wait_run("validation", "r1") == "done"
                    assert await h.discover_once() == 1
                    assert await h.wait_run("demo", "d1") == "auth_failed"
                assert await h.discover_once() == 0  # remembered: not followed again
                health = h.source.health()  # r1 streamed with the same key
                assert health.ready and "1 run(s) refused or missing" in health.detail
            attempts = sim.ws_connections
            # A restart: neither discovery nor the resume tries d1 again.
            async with running_source(tmp_path, sim, journal=journal, runs=["r1"]) as h:
                assert await h.discover_once() == 0
                assert ("demo", "d1") not in h.source.runs
                assert sim.ws_connections == attempts
                assert (await h.types()).count("argbridge.source.auth_failed") == 1
                # argbridge follow (the control API) retries it on purpose.
                sim.faults.ws_close_1008 = False
                assert await h.source.follow("d1", "demo", origin="control", force=True)
                assert h.source.refusals.get("demo", "d1") is None
                with anyio.fail_after(10):
                    await sim.wait_until(lambda: sim.open_streams == 1)
                    demo.publish()
                    assert await h.wait_run("demo", "d1") == "done"
                assert h.source.health().ready


def _toml(state: Path, port: int, sim_url: str, key: str, **src: Any) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in src.items())
    return (
        f'state_dir = "{state}"\n[log]\nlevel = "debug"\nformat = "json"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[sources.arga]\ntype = "arga"\nbase_url = "{sim_url}"\napi_key = "{key}"\n{extra}'
        '[sources.arga.reconnect]\ninitial = "10ms"\nmax = "50ms"\n'
        '[sinks.file]\ntype = "file"\npath = "events.jsonl"\n'
    )


async def _readyz(base: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"{base}/readyz")
    doc: dict[str, Any] = r.json()
    return r.status_code, doc


async def _events(config: Path, type_prefix: str) -> list[str]:
    """Journaled events of a type, by ``argbridge tail`` over the control socket."""
    result = await anyio.to_thread.run_sync(
        lambda: run_cli(
            "tail", "--config", str(config), "-n", "1000", "--type", type_prefix, "--json"
        )
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.strip()]


async def _wait_log(daemon: Daemon, event: str, **match: Any) -> dict[str, Any]:
    def pred(line: dict[str, Any]) -> bool:
        return line.get("event") == event and all(line.get(k) == v for k, v in match.items())

    return await anyio.to_thread.run_sync(lambda: daemon.wait_for(pred))


async def _wait_all(daemon: Daemon, *wanted: tuple[str, dict[str, Any]]) -> None:
    """Until every ``(event, fields)`` was logged, in any order."""
    left = list(wanted)

    def pred(line: dict[str, Any]) -> bool:
        for item in left:
            event, match = item
            if line.get("event") == event and all(line.get(k) == v for k, v in match.items()):
                left.remove(item)
                break
        return not left

    await anyio.to_thread.run_sync(lambda: daemon.wait_for(pred))


@pytest.mark.slow
async def test_one_missing_run_is_an_alert_not_the_sources_readiness(tmp_path: Path):
    state, port = tmp_path / "state", free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "argbridge.toml"
    async with simulator() as sim:
        sim.add_validation_run("r1", steps=2).publish()
        config.write_text(
            _toml(
                state,
                port,
                sim.base_url,
                sim.token,
                poll_interval=0,
                runs='["r1"]',
                demo_runs='["ghost"]',  # no such demo run: closed 1008 "Test run not found"
            )
        )
        with Daemon(config) as daemon:
            await _wait_all(
                daemon,
                ("arga.run_not_found", {"run_id": "ghost"}),
                ("arga.run_finished", {"run_id": "r1"}),
                ("http.listening", {}),
            )
            status, doc = await _readyz(base)
            assert status == 200, doc
            detail = doc["components"]["source:arga"]["detail"]
            assert "1 run(s) refused or missing" in detail
            alerts = await _events(config, "argbridge.source.run_not_found")
            assert len(alerts) == 1 and '"subject":"ghost"' in alerts[0]
            status_cli = await anyio.to_thread.run_sync(
                lambda: run_cli("status", "--config", str(config))
            )
            assert status_cli.returncode == 0, status_cli.stdout
            assert daemon.stop() == 0
        ghost_attempts = sim.ws_connections
        # A restart neither tries the missing run again nor raises a new alert.
        with Daemon(config) as daemon:
            await _wait_all(daemon, ("http.listening", {}), ("arga.run_finished", {"run_id": "r1"}))
            assert (await _readyz(base))[0] == 200
            assert sim.ws_connections == ghost_attempts
            assert len(await _events(config, "argbridge.source.run_not_found")) == 1
            # argbridge follow retries it on purpose (still missing: one more alert).
            follow = await anyio.to_thread.run_sync(
                lambda: run_cli("follow", "ghost", "--demo", "--config", str(config))
            )
            assert follow.returncode == 0, follow.stderr
            await _wait_log(daemon, "arga.run_not_found", run_id="ghost")
            assert sim.ws_connections == ghost_attempts + 1
            assert len(await _events(config, "argbridge.source.run_not_found")) == 2
            assert (await _readyz(base))[0] == 200
            assert daemon.stop() == 0


@pytest.mark.slow
async def test_the_key_refused_makes_the_source_not_ready_and_a_new_key_clears_it(
    tmp_path: Path,
):
    state, port = tmp_path / "state", free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "argbridge.toml"
    async with simulator() as sim:
        sim.add_validation_run("r1", steps=2).publish()
        # Discovery on: the run listing answers 401.
        config.write_text(_toml(state, port, sim.base_url, "wrong-key", poll_interval='"1h"'))
        with Daemon(config) as daemon:
            await _wait_all(
                daemon, ("arga.auth_failed", {"stream": "discovery"}), ("http.listening", {})
            )
            status, doc = await _readyz(base)
            assert status == 503
            detail = doc["components"]["source:arga"]["detail"]
            assert detail.startswith("Arga refused the API key: GET /"), detail
            assert "runs answered 401" in detail
            assert daemon.stop() == 0
        # Discovery off, every followed run refused: the key, said so.
        config.write_text(
            _toml(state, port, sim.base_url, "wrong-key", poll_interval=0, runs='["r1"]')
        )
        with Daemon(config) as daemon:
            await _wait_all(daemon, ("arga.auth_failed", {"run_id": "r1"}), ("http.listening", {}))
            status, doc = await _readyz(base)
            assert status == 503
            assert (
                "Arga refused every followed run (1)" in doc["components"]["source:arga"]["detail"]
            )
            # A reload with the right key clears the remembered refusals: r1 streams.
            config.write_text(
                _toml(state, port, sim.base_url, sim.token, poll_interval=0, runs='["r1"]')
            )
            daemon.signal(signal.SIGHUP)
            await _wait_all(
                daemon,
                ("config.reloaded", {}),
                ("arga.refusals_cleared", {}),
                ("arga.run_finished", {"run_id": "r1"}),
            )
            deadline = time.monotonic() + 10
            while (await _readyz(base))[0] != 200:  # an outside process: poll, bounded
                assert time.monotonic() < deadline
                await anyio.sleep(0.05)
            assert daemon.stop() == 0
