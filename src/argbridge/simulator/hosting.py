"""The arga source served from the in-process simulator (``simulate`` in its config).

Owns :class:`SimulatedArga`, the :class:`~argbridge.sources.arga.source.LocalUpstream`
the registry hands to an arga source whose ``simulate.enabled`` is on: it serves the
simulator on a free loopback port with the source's key and autoplays runs. The
production source only knows the protocol; the simulator stays out of its imports.
"""

from __future__ import annotations

import anyio
import anyio.abc

from argbridge.config.arga import ArgaSimulateConfig, ArgaSourceConfig
from argbridge.config.settings import Settings
from argbridge.simulator.arga import ArgaSimulator
from argbridge.sources.arga.source import ArgaSource


class SimulatedArga:
    """Serves :class:`ArgaSimulator` and plays runs on it until cancelled."""

    def __init__(self, config: ArgaSimulateConfig) -> None:
        self.config = config
        self.simulator: ArgaSimulator | None = None

    async def run(
        self, api_key: str, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        cfg = self.config
        sim = ArgaSimulator(api_key, heartbeat=cfg.heartbeat)
        self.simulator = sim
        async with anyio.create_task_group() as tg:
            await tg.start(sim.serve)
            tg.start_soon(sim.autoplay, cfg.tick, cfg.steps, cfg.loop)
            task_status.started(sim.base_url)


def simulated_arga_source(name: str, config: ArgaSourceConfig, settings: Settings) -> ArgaSource:
    """An arga source talking to its own simulator (``simulate.enabled``)."""
    assert config.simulate is not None
    return ArgaSource(name, config, settings, upstream=SimulatedArga(config.simulate))
