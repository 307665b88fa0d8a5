"""The daemon: one anyio task group supervising the journal, sinks, sources and services.

Start-up order: state dir checked writable, its lock taken (one daemon per state dir,
see :mod:`argbridge.statelock`) and every listener bound (else
:class:`~argbridge.errors.StartupError` or :class:`~argbridge.statelock.StateDirLocked`,
nothing started) → journal open → sink workers started (in cluster mode also the
:class:`~argbridge.cluster.node.ClusterNode`: the events-topic producer beside them) →
sources and services started → :attr:`App.ready` set. ``SIGHUP`` re-reads the config
file (:meth:`App.reload`, diff in :mod:`argbridge.reload`): each component runs in its
own cancel scope, so sources, sinks and routes are added, stopped or rebuilt one by one,
and inbound webhook routes go through a dispatch map that a reload swaps in one step.

Shutdown (SIGTERM/SIGINT or :meth:`App.request_shutdown`): stop intake (sources and
services are cancelled, so webhooks get no new 2xx), let each sink worker finish its
in-flight batch within ``runtime.drain_timeout``, close sinks (bounded), close the
journal, return (exit 0). A second signal skips the drain. A component that raises is
logged, counted and restarted with backoff; it never takes the daemon down.

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

import contextlib
import ctypes
import gc
import os
import platform
import signal
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from argbridge.backoff import Backoff
from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.cluster.delivery import CLUSTER_FED, build_delivery
from argbridge.cluster.member import ControlMember
from argbridge.cluster.node import ClusterNode, journal_sinks
from argbridge.cluster.pull import adopt
from argbridge.config import load_settings
from argbridge.config.endpoints import endpoints
from argbridge.config.settings import Settings, SinkConfig, SourceConfig
from argbridge.errors import ConfigError, StartupError
from argbridge.http.asgi import Request, Response, problem
from argbridge.http.server import Planes
from argbridge.journal import Journal, migrate
from argbridge.logging import get_logger, register_secrets
from argbridge.memory import TrimPolicy, give_back
from argbridge.metrics import Metrics
from argbridge.registry import build_sink, build_source, sink_journal
from argbridge.reload import ConfigDiff, LoadedConfig, diff, effective
from argbridge.router import Router
from argbridge.sinks.base import Health, Sink, SinkContext, SinkWorker, WorkerRole
from argbridge.sources.base import ServesHttp, Source, SourceContext
from argbridge.statelock import StateDirLock, StateDirLocked

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


def prepare_state_dir(path: Path) -> None:
    """Create ``state_dir`` and prove it writable; else :class:`StartupError` naming it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise StartupError(f"state_dir {path} cannot be written: {exc.strerror or exc}") from None


@dataclass
class _Handle:
    """A running component's cancel scope, and an event set once its task ended."""

    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


HttpHandler = Callable[[Request], Awaitable[Response]]


class App:
    """One argbridge daemon."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        metrics: Metrics | None = None,
        handle_signals: bool = True,
        config_path: str | Path | None = None,
    ) -> None:
        self.settings = settings
        #: The file SIGHUP re-reads (``None``: nothing to reload from).
        self.config_path = Path(config_path) if config_path is not None else None
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.handle_signals = handle_signals
        self.log = get_logger(component="runtime")
        self.ready = anyio.Event()
        self.stopping = anyio.Event()
        self.stopped = anyio.Event()
        self._journal: Journal | None = None
        #: Cluster mode's components (``None`` unless ``cluster.enabled``).
        self.cluster: ClusterNode | None = None
        #: Cluster mode's control-topic member: who follows which run (``None``: off).
        self.control_member: ControlMember | None = None
        self.router = Router.from_settings(settings)
        self.sinks: dict[str, Sink] = {}
        self.workers: dict[str, WorkerRole] = {}
        self.sources: dict[str, Source] = {}
        self.source_contexts: dict[str, SourceContext] = {}
        self.services: list[tuple[str, Service]] = list(DEFAULT_SERVICES)
        self._force = False
        self.loaded = LoadedConfig.of(self.config_path, clock.time())
        self.reloads = 0
        #: The outcome of the last reload (``None``: none yet), for ``argbridge status``.
        self.last_reload: dict[str, Any] | None = None
        self._reload_lock = anyio.Lock()
        self._handles: dict[str, _Handle] = {}
        self._outer: anyio.abc.TaskGroup | None = None
        self._workers_tg: anyio.abc.TaskGroup | None = None
        self._intake_tg: anyio.abc.TaskGroup | None = None
        #: Inbound routes of sources (webhooks), by ``(method, path)``: the listener's
        #: router dispatches through this map, so a reload swaps handlers atomically.
        self._http_handlers: dict[tuple[str, str], tuple[str, HttpHandler]] = {}
        self._http_routes: set[tuple[str, str]] = set()
        register_secrets(_secret_values(settings))
        #: Every listener (webhook, control, metrics), bound in :meth:`run` before anything
        #: else starts; :attr:`http` is the public webhook listener, :attr:`control` the
        #: control API's Unix socket (either ``None`` when disabled).
        self.planes = Planes(self, settings)
        self.http = self.planes.webhook
        self.control = self.planes.control
        for listener in self.planes.listeners():
            self.services.append((listener.name, listener.serve))

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise RuntimeError("the journal is not open yet")
        return self._journal

    @property
    def internal_workers(self) -> Mapping[str, WorkerRole]:
        """Sink workers the daemon runs for itself (cluster mode's events producer)."""
        return self.cluster.workers() if self.cluster is not None else {}

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
        if self.cluster is not None:
            out.update(self.cluster.health())
        return out

    async def run(self) -> None:
        """Run until shutdown; returns normally after a graceful stop.

        Fails fast with :class:`StartupError` (before READY=1, before any source or sink
        starts) when the state dir cannot be written or a listener cannot bind.
        """
        with contextlib.ExitStack() as held:
            try:
                prepare_state_dir(self.settings.state_dir)
                # One daemon per state dir: a second one stops here, naming the holder's
                # pid, before it tries the first one's (busy) addresses.
                held.enter_context(StateDirLock(self.settings.state_dir))
                self.planes.bind()
            except (StartupError, StateDirLocked):
                self.stopped.set()
                raise
            try:
                await self._run_bound()
            finally:
                self.planes.close()

    async def _run_bound(self) -> None:
        s = self.settings
        if migrate.needs_migration(s.state_dir):
            await anyio.to_thread.run_sync(self._migrate_journal)
        journal = Journal(
            s.state_dir / "journal",
            sinks=journal_sinks(s),
            max_backlog_events=s.journal.max_backlog_events,
            max_backlog_bytes=s.journal.max_backlog_bytes,
            resume_ratio=s.journal.resume_ratio,
            retain_delivered=s.journal.retain_delivered,
            dedupe_window=s.journal.dedupe_window,
            max_group_commit=s.journal.max_group_commit,
            fsync_acks=s.journal.fsync_acks,
            group_linger=s.journal.group_linger,
            compression=s.journal.compression,
            clock=self.clock,
        )
        try:
            async with journal:
                self._journal = journal
                self.metrics.watch_journal(journal)
                if s.cluster.enabled:
                    self.cluster = ClusterNode(
                        s, journal.for_sink(), self.metrics, self.clock, seq_of=journal.log.seq_of
                    )
                    await self.cluster.open()
                    self.control_member = ControlMember(
                        s.cluster,
                        instance_id=self.cluster.instance_id,
                        events=self.cluster.events,
                        journal_seq=lambda: journal.last_seq,
                        metrics=self.metrics,
                        clock=self.clock,
                    )
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
                self.log.info("daemon.endpoints", endpoints=endpoints(s))
                await self._run_components()
        finally:
            self.stopped.set()
        self.log.info("daemon.stopped")

    def _migrate_journal(self) -> None:
        """A v1 (SQLite) journal in the state dir becomes LevelDB (see journal.migrate)."""
        self.log.info("journal.migration_started", state_dir=str(self.settings.state_dir))

        def progress(what: str, done: int, total: int) -> None:
            self.log.info("journal.migrating", table=what, done=done, total=total)

        migrate.migrate(self.settings.state_dir, progress)
        self.log.info("journal.migrated", kept=migrate.V1_NAME + migrate.KEPT_SUFFIX)

    def _build(self) -> None:
        s = self.settings
        for name, cfg in s.sinks.items():
            self._make_sink(name, cfg, s)
        for name, source_cfg in s.sources.items():
            self._make_source(name, source_cfg, s)

    def _make_sink(self, name: str, cfg: SinkConfig, s: Settings) -> WorkerRole:
        if self.cluster is not None and cfg.type in CLUSTER_FED:
            # Cluster mode: fed from the events topic, one delivery per event cluster-wide.
            sink, consumer = build_delivery(
                name,
                cfg,
                s,
                self.journal.for_sink(),
                self.metrics,
                self.clock,
                self.router,
                events_acked=self.cluster.events,
                instance_id=self.cluster.instance_id,
            )
            self.sinks[name], self.workers[name] = sink, consumer
            return consumer
        ctx = SinkContext(name, sink_journal(cfg, self.journal), self.metrics, self.clock)
        self.sinks[name] = build_sink(cfg, ctx, s)
        worker = self.workers[name] = SinkWorker(
            self.sinks[name],
            ctx,
            self.router,
            batch_size=cfg.batch_size,
            batch_bytes=cfg.batch_bytes,
            linger=cfg.read_linger,
            backoff=Backoff(base=cfg.retry_initial, cap=cfg.retry_max),
        )
        return worker

    def _build_source(self, name: str, cfg: SourceConfig, s: Settings) -> Source:
        source = build_source(name, cfg, s)
        if self.control_member is not None:  # cluster mode: pull sources have one owner
            source = adopt(source, cfg.type, self.control_member)
        return source

    def _make_source(self, name: str, cfg: SourceConfig, s: Settings) -> None:
        source = self._build_source(name, cfg, s)
        ctx = SourceContext(
            name,
            self.journal.for_source(),
            self.metrics,
            self.clock,
            type_prefix=s.type_prefix,
            acks=self.cluster.webhook_acks if self.cluster is not None else None,
        )
        # Sources that serve HTTP (inbound webhooks) get their routes on our listener.
        self._install_routes(name, source, ctx)
        self.sources[name] = source
        self.source_contexts[name] = ctx

    def _install_routes(self, name: str, source: Source, ctx: SourceContext) -> None:
        if not isinstance(source, ServesHttp) or self.http is None:
            return
        for method, path, handler in source.routes(ctx):
            key = (method.upper(), path)
            self._http_handlers[key] = (name, handler)
            if key not in self._http_routes:
                self._http_routes.add(key)
                self.http.router.add(method, path, self._dispatcher(key))

    def _uninstall_routes(self, name: str) -> None:
        for key in [k for k, (owner, _) in self._http_handlers.items() if owner == name]:
            del self._http_handlers[key]

    def _dispatcher(self, key: tuple[str, str]) -> HttpHandler:
        async def dispatch(request: Request) -> Response:
            entry = self._http_handlers.get(key)
            if entry is None:  # the source was removed by a reload
                detail = "no webhook source is configured here"
                return problem(404, "Unknown webhook source", detail)
            return await entry[1](request)

        return dispatch

    def _spawn(
        self,
        tg: anyio.abc.TaskGroup | None,
        name: str,
        kind: str,
        fn: Callable[..., Awaitable[None]],
        *args: Any,
    ) -> None:
        assert tg is not None
        handle = self._handles[name] = _Handle()
        tg.start_soon(self._run_handle, handle, name, kind, fn, *args, name=name)

    async def _run_handle(
        self, handle: _Handle, name: str, kind: str, fn: Callable[..., Awaitable[None]], *args: Any
    ) -> None:
        try:
            with handle.scope:
                await self._supervise(name, kind, fn, *args)
        finally:
            handle.done.set()

    async def _run_components(self) -> None:
        rt = self.settings.runtime
        async with anyio.create_task_group() as outer:
            self._outer = outer
            if self.handle_signals:
                # Started (handlers installed) before anything says "ready": a SIGTERM
                # right after daemon.ready must drain, not kill the process.
                await outer.start(self._watch_signals, name="signals")
            outer.start_soon(self._retention_loop, name="retention")
            outer.start_soon(self._space_loop, name="disk-space")
            if rt.trim_after_burst:
                outer.start_soon(self._memory_loop, name="memory")
            async with anyio.create_task_group() as workers:
                self._workers_tg = workers
                for name, worker in self.workers.items():
                    self._spawn(workers, f"sink:{name}", "sink", worker.run)
                if self.cluster is not None:
                    self._spawn(workers, "cluster", "cluster", self.cluster.run)
                async with anyio.create_task_group() as intake:
                    self._intake_tg = intake
                    for name, source in self.sources.items():
                        self._spawn(
                            intake,
                            f"source:{name}",
                            "source",
                            source.run,
                            self.source_contexts[name],
                        )
                    for name, service in self.services:
                        intake.start_soon(self._supervise, name, "service", service, self)
                    if self.control_member is not None:
                        self._spawn(intake, "cluster:control", "cluster", self.control_member.run)
                    self.ready.set()
                    self.log.info("daemon.ready")
                    await self.stopping.wait()
                    async with self._reload_lock:  # a reload in progress finishes first
                        intake.cancel_scope.cancel()
                self.log.info("shutdown.draining", deadline=rt.drain_timeout)
                for worker in self.workers.values():
                    worker.stop()
                if self.cluster is not None:
                    self.cluster.stop()
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
            if self.cluster is not None:
                with anyio.move_on_after(rt.drain_timeout, shield=True):
                    await self.cluster.aclose()
            outer.cancel_scope.cancel()

    # -- live reload ----------------------------------------------------------------------

    def config_status(self) -> dict[str, Any]:
        """The running config's file, SHA-256 and load time, and the last reload."""
        return {**self.loaded.to_json(), "reloads": self.reloads, "last_reload": self.last_reload}

    async def cluster_status(self) -> dict[str, Any] | None:
        """Cluster mode's part of ``argbridge status`` (``None`` when off): this instance's
        partitions, owned runs and rebalances, and, read from Kafka now, the group's
        members and the runs each instance follows."""
        member = self.control_member
        if member is None:
            return None
        doc: dict[str, Any] = member.status()
        try:
            doc["cluster"] = await member.cluster_view()
        except (Exception, TimeoutError) as exc:  # Kafka unreachable: the local part only
            doc["cluster_error"] = f"{type(exc).__name__}: {exc}"[:300]
        return doc

    async def reload(self) -> bool:
        """Re-read :attr:`config_path` and apply what changed (see :mod:`argbridge.reload`);
        an invalid file is rejected with check-config's errors and the running config
        stays. ``True`` when the new config was applied."""
        await self.ready.wait()
        async with self._reload_lock:
            if self.stopping.is_set():
                return False
            now = self.clock.time()
            if self.config_path is None:
                self.log.warning("config.reload_rejected", errors=["no config file to re-read"])
                return False
            try:
                new = await anyio.to_thread.run_sync(load_settings, self.config_path)
            except ConfigError as exc:
                errors = [f"{k}: {m}" if k else m for k, m in exc.problems]
                self.log.error("config.reload_rejected", path=str(self.config_path), errors=errors)
                self.last_reload = {"at": now, "ok": False, "errors": errors}
                return False
            new, kept = effective(self.settings, new)
            changes = diff(self.settings, new, kept)
            register_secrets(_secret_values(new))
            try:
                await self._apply(new, changes)
            except Exception as exc:  # a component that cannot be built: say so, keep going
                self.log.error("config.reload_failed", error=exc, exc_info=exc)
                self.last_reload = {"at": now, "ok": False, "errors": [str(exc)]}
                return False
            self.reloads += 1
            self.loaded = LoadedConfig.of(self.config_path, now)
            self.last_reload = {"at": now, "ok": True, "changes": changes.to_json()}
            if kept:
                self.log.warning("config.reload_needs_restart", keys=list(kept))
            self.log.info("config.reloaded", sha256=self.loaded.sha256, **changes.to_json())
            return True

    async def _apply(self, new: Settings, changes: ConfigDiff) -> None:
        sinks, sources = changes.sinks, changes.sources
        # Build what replaces a changed webhook source first, so its path never answers
        # 404 or 503 during the swap: the handler map changes in one step.
        replaced: dict[str, tuple[Source, SourceContext]] = {}
        for name in sources.changed:
            source = self._build_source(name, new.sources[name], new)
            ctx = SourceContext(
                name,
                self.journal.for_source(),
                self.metrics,
                self.clock,
                type_prefix=new.type_prefix,
                acks=self.cluster.webhook_acks if self.cluster is not None else None,
            )
            replaced[name] = (source, ctx)
        # Stop what goes away or is rebuilt: sources are cancelled (what they journaled
        # is accepted), sink workers finish their in-flight batch first.
        for name in sources.removed + sources.changed:
            self._uninstall_routes(name)  # and, with no await between, the new ones
            if name in replaced:
                self._install_routes(name, *replaced[name])
            await self._stop_source(name)
        for name in sinks.removed + sinks.changed:
            await self._stop_sink(name)
        if sinks.added or sinks.removed:
            await self.journal.set_sinks(journal_sinks(new))
        self.settings = new
        self.router = Router.from_settings(new)
        for worker in self.workers.values():
            worker.set_router(self.router)
        for name in sinks.added + sinks.changed:
            worker = self._make_sink(name, new.sinks[name], new)
            self._spawn(self._workers_tg, f"sink:{name}", "sink", worker.run)
        for name in sources.added:
            self._make_source(name, new.sources[name], new)
        for name, (source, ctx) in replaced.items():
            self.sources[name], self.source_contexts[name] = source, ctx
        for name in sources.added + sources.changed:
            self._spawn(
                self._intake_tg,
                f"source:{name}",
                "source",
                self.sources[name].run,
                self.source_contexts[name],
            )

    async def _stop_source(self, name: str) -> None:
        handle = self._handles.pop(f"source:{name}", None)
        self.sources.pop(name, None)
        self.source_contexts.pop(name, None)
        if handle is not None:
            handle.scope.cancel()
            with anyio.move_on_after(self.settings.runtime.drain_timeout):
                await handle.done.wait()

    async def _stop_sink(self, name: str) -> None:
        rt = self.settings.runtime
        worker = self.workers[name]
        handle = self._handles.pop(f"sink:{name}", None)
        worker.stop()
        if handle is not None:
            with anyio.move_on_after(rt.drain_timeout):
                await handle.done.wait()
            if not handle.done.is_set():
                self.log.warning("reload.drain_timeout", component=name, in_flight=worker.in_flight)
                handle.scope.cancel()
                await handle.done.wait()
        sink = self.sinks.pop(name)
        del self.workers[name]
        with anyio.move_on_after(rt.drain_timeout, shield=True):
            try:
                await sink.aclose()
            except Exception as exc:
                self.log.warning("sink.close_failed", component=name, error=exc)

    async def _watch_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    # systemctl reload (ExecReload=kill -HUP): re-read the config file.
                    if not self.stopping.is_set() and self._outer is not None:
                        self.log.info("signal.received", signal="SIGHUP")
                        self._outer.start_soon(self.reload, name="reload")
                    continue
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

    async def _space_loop(self) -> None:
        # Intake held for a full disk with nothing queued to retry: space again? (The
        # journal's own retried group commit finds out otherwise.)
        while True:
            await self.clock.sleep(1.0)
            try:
                await self.journal.recheck_space()
            except Exception as exc:
                self.log.warning("journal.recheck_space_failed", error=exc)

    async def _memory_loop(self) -> None:
        # Memory comes back after a burst (argbridge.memory): checked once a second.
        policy = TrimPolicy(burst_events=min(1000, self.journal.max_backlog_events))
        while True:
            await self.clock.sleep(1.0)
            backlog = max(self.journal.stats().backlog_events.values(), default=0)
            if policy.observe(backlog, self.clock.monotonic()):
                started = self.clock.monotonic()
                # In a worker thread: malloc_trim releases the GIL, so the event loop
                # keeps running (inline, a trim of a ~150 MiB heap stalled it ~100 ms;
                # in a thread the loop's worst lag was ~12 ms, the collection's part).
                # The journal first: what its engine lets go of is then trimmed too.
                reopened = await self.journal.release_memory()
                trimmed = await anyio.to_thread.run_sync(give_back)
                took = round(1e3 * (self.clock.monotonic() - started), 1)
                self.log.debug(
                    "memory.trimmed", malloc_trim=trimmed, journal_reopened=reopened, took_ms=took
                )

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
