"""The daemon: one anyio task group supervising the journal, sinks, sources and services.

Start-up order: journal open → sink workers started → sources and services started →
:attr:`App.ready` set. Shutdown (SIGTERM/SIGINT or :meth:`App.request_shutdown`): stop
intake (sources and services are cancelled, so webhooks get no new 2xx), let each sink
worker finish its in-flight batch within ``runtime.drain_timeout``, close sinks (bounded),
close the journal, return (exit 0). A second signal skips the drain. A component that
raises is logged, counted and restarted with backoff; it never takes the daemon down.

Once the components are built, everything start-up allocated (imports, pydantic models,
clients) is moved out of the garbage collector's sight (:func:`freeze_startup_heap`,
once per process): a full (generation 2) collection of that heap took ~42 ms, several
times per run under bench/bench_webhooks.py, and was what its p99 latency measured
(p99 40 ms → 23 ms, gen-2 time 202 ms → 2 ms per 8 s run). The collector's thresholds
come from ``runtime.gc_thresholds`` (:func:`tune_collector`; Python's own by default),
and glibc malloc keeps freed MiB-sized buffers instead of handing them back to the
kernel (:func:`tune_malloc`; it was 0.5 page faults per event a Kafka sink drained,
~6% of its CPU).
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from argbridge.backoff import Backoff
from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.config.settings import Settings
from argbridge.http.server import HttpServer
from argbridge.journal import Journal
from argbridge.logging import get_logger, register_secrets
from argbridge.memory import TrimPolicy, give_back
from argbridge.metrics import Metrics
from argbridge.registry import build_sink, build_source
from argbridge.router import Router
from argbridge.sinks.base import Health, Sink, SinkContext, SinkWorker
from argbridge.sources.base import Source, SourceContext

Service = Callable[["App"], Awaitable[None]]
#: Services (the HTTP server, systemd notify…) register themselves here at import time
#: or are added per app with :meth:`App.add_service`.
DEFAULT_SERVICES: list[tuple[str, Service]] = []


_frozen = False


def freeze_startup_heap() -> None:
    """Collect the start-up garbage, then exempt what survives from future collections
    (:func:`gc.freeze`), so full collections under load only walk what the daemon
    allocates while running. Once per process: later calls do nothing."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()


def tune_collector(thresholds: tuple[int, int, int]) -> None:
    """Apply ``runtime.gc_thresholds`` (every daemon start; the benchmarks call this too,
    so they measure what the daemon runs)."""
    gc.set_threshold(*thresholds)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


def tune_malloc(trim_threshold: int, mmap_threshold: int) -> list[str]:
    """Apply ``runtime.malloc_trim_threshold``/``malloc_mmap_threshold`` with glibc's
    ``mallopt`` (``0`` in either: neither); returns the settings applied.

    Nothing happens off glibc, or when the operator set ``MALLOC_TRIM_THRESHOLD_`` or
    ``MALLOC_MMAP_THRESHOLD_``: setting either one disables glibc's adaptive thresholds,
    so the two are only ever set together. (Setting only the trim threshold sent every
    allocation over 128 KiB to mmap: 2.6 page faults per event drained to Kafka.)
    """
    if platform.libc_ver()[0] != "glibc" or any(
        name in os.environ for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
    ):
        return []
    if not trim_threshold or not mmap_threshold:
        return []
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return []
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = []
    for param, value, name in (
        (_M_MMAP_THRESHOLD, mmap_threshold, "mmap_threshold"),
        (_M_TRIM_THRESHOLD, trim_threshold, "trim_threshold"),
    ):
        if mallopt(param, value) == 1:
            applied.append(f"{name}={value}")
    return applied


def _secret_values(obj: Any) -> list[str]:
    """Every SecretStr value in the settings tree (to mask them in logs)."""
    from pydantic import BaseModel, SecretStr

    found: list[str] = []
    if isinstance(obj, SecretStr):
        found.append(obj.get_secret_value())
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            found.extend(_secret_values(getattr(obj, name)))
    elif isinstance(obj, dict):
        for v in obj.values():
            found.extend(_secret_values(v))
    elif isinstance(obj, list | tuple):
        for v in obj:
            found.extend(_secret_values(v))
    return found


class App:
    """One argbridge daemon."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        metrics: Metrics | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.handle_signals = handle_signals
        self.log = get_logger(component="runtime")
        self.ready = anyio.Event()
        self.stopping = anyio.Event()
        self.stopped = anyio.Event()
        self._journal: Journal | None = None
        self.router = Router(settings.routes, list(settings.sinks))
        self.sinks: dict[str, Sink] = {}
        self.workers: dict[str, SinkWorker] = {}
        self.sources: dict[str, Source] = {}
        self.source_contexts: dict[str, SourceContext] = {}
        self.services: list[tuple[str, Service]] = list(DEFAULT_SERVICES)
        self._force = False
        register_secrets(_secret_values(settings))
        self.http: HttpServer | None = None
        if settings.http.enabled:
            self.http = HttpServer(self)
            self.services.append(("http", self.http.serve))

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise RuntimeError("the journal is not open yet")
        return self._journal

    def add_service(self, name: str, service: Service) -> None:
        self.services.append((name, service))

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown (idempotent)."""
        if not self.stopping.is_set():
            self.log.info("shutdown.requested")
            self.stopping.set()

    def health(self) -> dict[str, Health]:
        """Readiness per component (``journal``, ``sink:NAME``, ``source:NAME``)."""
        out: dict[str, Health] = {}
        journal = self._journal
        disk_full = journal.pause.holds.get("disk_full") if journal is not None else None
        if disk_full is not None:
            # The alert: /readyz fails and says why (the journal also logged it).
            out["journal"] = Health(False, f"paused (disk full): {disk_full}")
        else:
            out["journal"] = Health(
                journal is not None and not journal.closed,
                "paused (backpressure)"
                if journal is not None and journal.pause.is_paused
                else "open",
            )
        for name, sink in self.sinks.items():
            worker = self.workers[name]
            h = sink.health()
            if not worker.started:
                h = Health(False, worker.last_error or "starting")
            out[f"sink:{name}"] = h
        for name, source in self.sources.items():
            out[f"source:{name}"] = source.health()
        return out

    async def run(self) -> None:
        """Run until shutdown; returns normally after a graceful stop."""
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        journal = Journal(
            s.state_dir / "journal.db",
            sinks=list(s.sinks),
            max_backlog_events=s.journal.max_backlog_events,
            max_backlog_bytes=s.journal.max_backlog_bytes,
            resume_ratio=s.journal.resume_ratio,
            retain_delivered=s.journal.retain_delivered,
            dedupe_window=s.journal.dedupe_window,
            max_group_commit=s.journal.max_group_commit,
            lazy_ack_sync=not s.journal.fsync_acks,
            background_checkpoints=True,
            clock=self.clock,
        )
        try:
            async with journal:
                self._journal = journal
                self.metrics.watch_journal(journal)
                self._build()
                tune_collector(s.runtime.gc_thresholds)
                malloc = tune_malloc(
                    s.runtime.malloc_trim_threshold, s.runtime.malloc_mmap_threshold
                )
                freeze_startup_heap()
                self.log.info(
                    "daemon.starting",
                    gc_thresholds=list(s.runtime.gc_thresholds),
                    malloc=malloc or "glibc defaults",
                    state_dir=str(s.state_dir),
                    sources=list(self.sources),
                    sinks=list(self.sinks),
                    last_seq=journal.last_seq,
                )
                await self._run_components()
        finally:
            self.stopped.set()
        self.log.info("daemon.stopped")

    def _build(self) -> None:
        s = self.settings
        for name, cfg in s.sinks.items():
            ctx = SinkContext(name, self.journal, self.metrics, self.clock)
            sink = build_sink(cfg, ctx, s)
            self.sinks[name] = sink
            self.workers[name] = SinkWorker(
                sink,
                ctx,
                self.router,
                batch_size=cfg.batch_size,
                batch_bytes=cfg.batch_bytes,
                linger=cfg.read_linger,
                backoff=Backoff(base=cfg.retry_initial, cap=cfg.retry_max),
            )
        for name, source_cfg in s.sources.items():
            self.sources[name] = build_source(name, source_cfg, s)
            self.source_contexts[name] = SourceContext(
                name, self.journal, self.metrics, self.clock, type_prefix=s.type_prefix
            )
            # Sources that serve HTTP (inbound webhooks) get their routes on our listener.
            routes = getattr(self.sources[name], "routes", None)
            if routes is not None and self.http is not None:
                for method, path, handler in routes(self.source_contexts[name]):
                    self.http.router.add(method, path, handler)

    async def _run_components(self) -> None:
        rt = self.settings.runtime
        async with anyio.create_task_group() as outer:
            if self.handle_signals:
                outer.start_soon(self._watch_signals, name="signals")
            outer.start_soon(self._retention_loop, name="retention")
            outer.start_soon(self._checkpoint_loop, name="checkpoint")
            if rt.trim_after_burst:
                outer.start_soon(self._memory_loop, name="memory")
            async with anyio.create_task_group() as workers:
                for name, worker in self.workers.items():
                    workers.start_soon(self._supervise, f"sink:{name}", "sink", worker.run)
                async with anyio.create_task_group() as intake:
                    for name, source in self.sources.items():
                        intake.start_soon(
                            self._supervise,
                            f"source:{name}",
                            "source",
                            source.run,
                            self.source_contexts[name],
                        )
                    for name, service in self.services:
                        intake.start_soon(self._supervise, name, "service", service, self)
                    self.ready.set()
                    self.log.info("daemon.ready")
                    await self.stopping.wait()
                    intake.cancel_scope.cancel()
                self.log.info("shutdown.draining", deadline=rt.drain_timeout)
                for worker in self.workers.values():
                    worker.stop()
                workers.cancel_scope.deadline = anyio.current_time() + (
                    0 if self._force else rt.drain_timeout
                )
            if workers.cancel_scope.cancel_called:
                in_flight = {n: w.in_flight for n, w in self.workers.items() if w.in_flight}
                self.log.warning("shutdown.drain_timeout", in_flight=in_flight)
            for name, sink in self.sinks.items():
                with anyio.move_on_after(rt.drain_timeout, shield=True):
                    try:
                        await sink.aclose()
                    except Exception as exc:
                        self.log.warning("sink.close_failed", component=name, error=exc)
            outer.cancel_scope.cancel()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self.stopping.is_set():
                    self.log.warning("shutdown.forced", signal=signal.Signals(signum).name)
                    self._force = True
                    continue
                self.log.info("signal.received", signal=signal.Signals(signum).name)
                self.request_shutdown()

    async def _retention_loop(self) -> None:
        while True:
            await self.clock.sleep(30.0)
            try:
                deleted = await self.journal.run_retention()
                if deleted:
                    self.log.debug("journal.retention", deleted=deleted)
            except Exception as exc:
                self.log.warning("journal.retention_failed", error=exc)

    async def _checkpoint_loop(self) -> None:
        # The journal's WAL is checkpointed here, off the commit path (see Journal).
        while True:
            await self.clock.sleep(1.0)
            self.journal.recheck_space()  # intake held for a full disk: space again?
            try:
                await self.journal.checkpoint()
            except Exception as exc:
                self.log.warning("journal.checkpoint_failed", error=exc)

    async def _memory_loop(self) -> None:
        # Memory comes back after a burst (argbridge.memory): checked once a second.
        policy = TrimPolicy(burst_events=min(1000, self.journal.max_backlog_events))
        while True:
            await self.clock.sleep(1.0)
            backlog = max(self.journal.stats().backlog_events.values(), default=0)
            if policy.observe(backlog, self.clock.monotonic()):
                trimmed = give_back()
                self.log.debug("memory.trimmed", malloc_trim=trimmed)

    async def _supervise(
        self, name: str, kind: str, fn: Callable[..., Awaitable[None]], *args: Any
    ) -> None:
        rt = self.settings.runtime
        backoff = Backoff(base=rt.restart_initial, cap=rt.restart_max)
        while True:
            started = self.clock.monotonic()
            try:
                await fn(*args)
                return
            except Exception as exc:
                if self.stopping.is_set():
                    return
                self.metrics.restarts.labels(name, kind).inc()
                if self.clock.monotonic() - started > 60:
                    backoff.reset()
                delay = backoff.next_delay()
                self.log.error(
                    "component.crashed",
                    component=name,
                    kind=kind,
                    error=exc,
                    restart_in=round(delay, 3),
                    exc_info=exc,
                )
                await self.clock.sleep(delay)
