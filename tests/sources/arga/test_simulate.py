"""``simulate``: the arga source serves itself from the in-process simulator (the
embedded default of ``make run``), end to end through a real App."""

from __future__ import annotations

import tomllib
from pathlib import Path

import anyio
import pytest

from argbridge.config.settings import load_settings
from argbridge.errors import ConfigError
from argbridge.runtime import App
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)

DEFAULT = Path(__file__).resolve().parents[3] / "config" / "default.toml"


async def test_default_config_streams_simulated_arga_runs_and_argus_sample(tmp_path):
    data = tomllib.loads(DEFAULT.read_text())
    data["state_dir"] = str(tmp_path / "state")
    data["http"]["port"] = free_port()
    data["sources"]["arga"]["poll_interval"] = "50ms"
    data["sources"]["arga"]["simulate"]["tick"] = "20ms"
    data["sources"]["argus-sample"]["interval"] = "10ms"
    settings = load_settings(None, **data)
    app = App(settings, handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        await app.ready.wait()
        journal = app.journal
        with anyio.fail_after(40):
            while True:
                types = {r.event.type for r in await journal.read_after(0, 10_000)}
                if {
                    "arga.validation.run.complete",
                    "arga.demorun.done",
                    "argus.incident.created",
                } <= types:
                    break
                await journal.wait_for_events(journal.last_seq)
        assert "arga.validation.step_result" in types
        assert app.health()["source:arga"].ready
        app.request_shutdown()
    lines = (tmp_path / "state" / "events.jsonl").read_text().splitlines()
    assert len(lines) > 10


def test_api_key_is_required_without_simulate():
    with pytest.raises(ConfigError) as exc:
        load_settings(None, sources={"a": {"type": "arga"}})
    assert "sources.a" in str(exc.value) and "api_key" in str(exc.value)
    load_settings(None, sources={"a": {"type": "arga", "simulate": {}}})
