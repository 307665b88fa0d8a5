"""The ``arga`` source: follows Arga validation runs (results SSE) and demo runs (WebSocket).

Owns the set of followed runs and everything shared by their streams: the HTTP client
(bearer key, read timeout above the heartbeat, no proxies from the environment), the
cap on open streams (``max_streams``, default 10 as the vendor documents; a stream
holds a slot only while connected, never while backing off), one follower task per run
(so one connection attempt at a time per run), discovery (static ``runs``/``demo_runs``,
polling, :meth:`ArgaSource.follow` from the control API, :meth:`ArgaSource.start_run`
for ``argbridge start``) and its readiness. The followers
(:mod:`~argbridge.sources.arga.results`, :mod:`~argbridge.sources.arga.demorun`) get the
narrow services they use (:class:`~argbridge.sources.arga.api.ArgaApi`, slots, policy,
alert), never the source.

A refused or missing run is an alert on that run (the followers' alert is a
:class:`~argbridge.sources.arga.refusals.RunAlerter`), remembered per key in the
journal's state: it is not followed again (a restart, discovery, the config's list)
until ``argbridge follow RUN_ID`` (:meth:`ArgaSource.follow` from the control API)
retries it. The source is not ready only when the key is refused: the run listing
answers 401/403 (discovery's :class:`~argbridge.sources.follower.AuthAlerter` alert), or,
with discovery off, every followed run was refused.

With ``simulate`` the registry hands the source a :class:`LocalUpstream` (the
in-process Arga simulator, :mod:`argbridge.simulator.hosting`) that it starts and then
talks to over real loopback HTTP/SSE/WebSocket; this module never imports the simulator.

Runs being followed are persisted (``journal`` state ``arga:<source>:following``) so a
restarted daemon resumes them, each from its stored ``Last-Event-ID``.

In cluster mode (:meth:`ArgaSource.attach_cluster`) the source follows nothing by itself:
discovery, the config's lists, :meth:`ArgaSource.follow` and :meth:`ArgaSource.start_run`
ask the cluster for the run (a hint on the control topic, :mod:`argbridge.cluster`), and
the control-topic member hands this source the runs of its partitions
(:meth:`ArgaSource.own`, :meth:`ArgaSource.disown`), each with a
:class:`~argbridge.cluster.lease.RunLease` that is the follower's position store (the
record's position in, acked positions out) and records how the run ended.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.abc
import httpx
import orjson

from argbridge.cluster.lease import RunLease
from argbridge.cluster.records import RunId
from argbridge.cluster.roles import ControlPublisher
from argbridge.config.arga import ArgaSourceConfig, StreamKind
from argbridge.config.settings import Settings
from argbridge.errors import ClusterError, SourceError
from argbridge.logging import register_secret
from argbridge.reconnect import EVENT_STREAM, ReconnectPolicy, content_type_essence
from argbridge.sinks.base import Health
from argbridge.sources.arga.api import ArgaApi
from argbridge.sources.arga.demorun import DemoRunFollower
from argbridge.sources.arga.discovery import Discovery
from argbridge.sources.arga.refusals import Refusals, RunAlerter, key_fingerprint
from argbridge.sources.arga.results import ResultsFollower
from argbridge.sources.base import SourceContext
from argbridge.sources.follower import AuthAlerter, StreamSlots
from argbridge.sources.state import StateStore

KINDS: tuple[StreamKind, ...] = ("validation", "demo")
#: Finished runs remembered (status for the control API; ``follow`` ignores them);
#: older ones are forgotten, so a year of runs does not accumulate in memory.
FINISHED_MEMORY = 1024


@dataclass
class FollowedRun:
    """One run the source follows (or followed): ``status`` is ``following``, ``done``
    or the reason it stopped (``auth_failed``, ``not_found``, ``bad_content_type``…)."""

    kind: StreamKind
    run_id: str
    origin: str
    status: str = "following"
    finished: anyio.Event = field(default_factory=anyio.Event)

    def to_json(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "run_id": self.run_id,
            "origin": self.origin,
            "status": self.status,
        }


class LocalUpstream(Protocol):
    """An upstream served in this process (the simulator): ``run`` serves it with
    ``api_key`` as its credential, reports its base URL through ``task_status`` once it
    listens, and serves until cancelled."""

    async def run(
        self, api_key: str, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None: ...


class ArgaSource:
    """See the module docstring."""

    def __init__(
        self,
        name: str,
        config: ArgaSourceConfig,
        settings: Settings,
        *,
        upstream: LocalUpstream | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.settings = settings
        self.upstream = upstream
        self.base_url = config.base_url
        #: The base URL events point at (the real API even when simulated).
        self.public_base_url = config.base_url
        self.api_key = (
            config.api_key.get_secret_value() if config.api_key else secrets.token_urlsafe(24)
        )
        register_secret(self.api_key)
        #: Runs refused or missing (remembered across restarts, per key).
        self.refusals = Refusals(name, key_fingerprint(self.api_key))
        self.runs: dict[tuple[str, str], FollowedRun] = {}
        self.started = anyio.Event()
        self.slots = StreamSlots(config.max_streams)
        self.api: ArgaApi | None = None
        self.discovery: Discovery | None = None
        self._alerter: AuthAlerter | None = None
        self._run_alerter: RunAlerter | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._ctx: SourceContext | None = None
        #: Cluster mode: where runs are asked for, and the runs owned here by record key.
        self.cluster: ControlPublisher | None = None
        self._owned: dict[str, tuple[anyio.CancelScope, FollowedRun]] = {}

    def attach_cluster(self, publisher: ControlPublisher) -> None:
        """Cluster mode: ask ``publisher`` for runs instead of following them."""
        self.cluster = publisher

    # -- shared services for the followers ---------------------------------------------

    def new_policy(self) -> ReconnectPolicy:
        r = self.config.reconnect
        return ReconnectPolicy(initial=r.initial, cap=r.max, factor=r.factor)

    @property
    def open_slots(self) -> int:
        return self.slots.open

    def _running(self) -> tuple[ArgaApi, SourceContext, RunAlerter]:
        if self.api is None or self._ctx is None or self._run_alerter is None:
            raise SourceError(f"source {self.name} is not running")
        return self.api, self._ctx, self._run_alerter

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        cfg = self.config
        # A restart by the supervisor starts clean; the persisted list resumes the runs.
        self.runs = {}
        self.slots = StreamSlots(cfg.max_streams)
        async with anyio.create_task_group() as outer:
            if self.upstream is not None:
                url: str = await outer.start(self.upstream.run, self.api_key)
                self.base_url = self.public_base_url = url
                ctx.log.info("arga.simulator_started", url=url)
            self._alerter = AuthAlerter(ctx, base_url=self.public_base_url)
            self._run_alerter = RunAlerter(ctx, self.refusals, base_url=self.public_base_url)
            timeout = httpx.Timeout(
                connect=cfg.connect_timeout, read=cfg.read_timeout, write=30.0, pool=None
            )
            # In cluster mode the instance names itself (the vendor's logs, the attempt log
            # of the tests' fake).
            extra = (
                {"x-argbridge-instance": self.cluster.instance_id}
                if self.cluster is not None
                else {}
            )
            async with httpx.AsyncClient(
                base_url=self.base_url,
                headers={
                    "authorization": f"Bearer {self.api_key}",
                    "user-agent": "argbridge",
                    **extra,
                },
                timeout=timeout,
                trust_env=False,
                limits=httpx.Limits(
                    max_connections=cfg.max_streams + 8, max_keepalive_connections=8
                ),
            ) as client:
                self.api = ArgaApi(
                    client, self.base_url, self.public_base_url, self.api_key, cfg.websocket, extra
                )
                self.discovery = Discovery(self.api, cfg, ctx, self._discovered, self._alerter)
                try:
                    async with anyio.create_task_group() as tg:
                        self._tg = tg
                        dropped = await self.refusals.load(ctx.journal)
                        if dropped:  # the key changed: every run gets a new chance
                            ctx.log.info("arga.refusals_cleared", runs=dropped)
                        await self._resume(ctx)
                        if cfg.poll_interval > 0 and (cfg.discover_validation or cfg.discover_demo):
                            tg.start_soon(self.discovery.forever)
                        self.started.set()
                        await anyio.sleep_forever()
                finally:
                    self._tg = None
                    self.api = None
                    if self.cluster is not None:
                        # Owned runs died with the task group: the member hands them
                        # to this source again once it runs (a restart sets started).
                        self._owned.clear()
                        self.started = anyio.Event()
                        self.cluster.source_stopped(self.name)
            outer.cancel_scope.cancel()

    async def _resume(self, ctx: SourceContext) -> None:
        raw = await ctx.journal.get_state(self._state_key)
        # In cluster mode the control topic knows the followed runs, not this instance.
        saved = orjson.loads(raw) if raw and self.cluster is None else []
        for item in saved:
            await self.follow(item["run_id"], item["kind"], origin=item.get("origin", "resumed"))
        for run_id in self.config.runs:
            await self.follow(run_id, "validation", origin="config")
        for run_id in self.config.demo_runs:
            await self.follow(run_id, "demo", origin="config")

    @property
    def _state_key(self) -> str:
        return f"arga:{self.name}:following"

    async def _save(self) -> None:
        if self._ctx is None:
            return
        active = [r.to_json() for r in self.runs.values() if r.status == "following"]
        await self._ctx.journal.set_state(self._state_key, orjson.dumps(active).decode())

    # -- following -----------------------------------------------------------------------

    async def _discovered(self, run_id: str, kind: str, *, origin: str) -> bool:
        return await self.follow(run_id, kind, origin=origin)

    async def follow(
        self, run_id: str, kind: str, *, origin: str = "control", force: bool = False
    ) -> bool:
        """Follow ``run_id`` (``kind``: ``validation`` or ``demo``); ``False`` when it is
        already followed, already finished and ``force`` is off, or was refused or
        missing before and ``origin`` is not ``control`` (only ``argbridge follow``
        retries a refused run, on purpose)."""
        if kind not in KINDS:
            raise ValueError(f"unknown stream kind {kind!r} (validation or demo)")
        if not run_id or "/" in run_id:
            raise ValueError("run id must be a non-empty path segment")
        if self._tg is None or self._ctx is None:
            raise SourceError(f"source {self.name} is not running")
        if self.cluster is not None:
            run = RunId(self.name, kind, run_id)
            try:
                await self.cluster.request(run, origin, force=force or origin == "control")
            except ClusterError as exc:
                if origin == "control":
                    raise
                # Discovery and the config list ask again at the next poll or start.
                self._ctx.log.warning("arga.cluster_request_failed", run_id=run_id, error=str(exc))
                return False
            return True
        key = (kind, run_id)
        current = self.runs.get(key)
        if current is not None and (current.status == "following" or not force):
            return False
        if self.refusals.get(kind, run_id) is not None:
            if origin != "control":
                return False
            await self.refusals.forget(self._ctx.journal, kind, run_id)
        state = FollowedRun("validation" if kind == "validation" else "demo", run_id, origin)
        self.runs[key] = state
        await self._save()
        self._tg.start_soon(self._follow_task, state, None, name=f"arga:{kind}:{run_id}")
        self._ctx.log.info("arga.following", stream_kind=kind, run_id=run_id, origin=origin)
        return True

    async def _follow_task(self, state: FollowedRun, initial: httpx.Response | None) -> None:
        try:
            await self._run_follower(state, initial, None)
        finally:
            state.finished.set()
            self._forget_finished()
        with anyio.CancelScope(shield=True):
            await self._save()

    async def _run_follower(
        self, state: FollowedRun, initial: httpx.Response | None, store: StateStore | None
    ) -> None:
        """Run the run's follower until it ends; its end in ``state.status``. ``store``:
        where the follower keeps its position (default: the journal's state)."""
        api, ctx, alert = self._running()
        follower: ResultsFollower | DemoRunFollower
        if state.kind == "validation":
            follower = ResultsFollower(
                api,
                ctx,
                state.run_id,
                policy=self.new_policy(),
                slots=self.slots,
                alert=alert,
                initial=initial,
                state=store,
            )
        else:
            follower = DemoRunFollower(
                api,
                ctx,
                state.run_id,
                policy=self.new_policy(),
                slots=self.slots,
                alert=alert,
                state=store,
            )
        try:
            state.status = await follower.run()
        except Exception as exc:
            state.status = "error"
            ctx.metrics.errors.labels(ctx.name, "source", "follower_crashed").inc()
            ctx.log.error("arga.follower_crashed", run_id=state.run_id, error=exc, exc_info=exc)

    # -- cluster mode: the runs the control-topic member hands this source ---------------

    async def own(self, lease: RunLease) -> None:
        """Follow the run of ``lease`` (its record's position is the resume point)."""
        if self._tg is None:
            raise SourceError(f"source {self.name} is not running")
        run = lease.record.run
        kind: StreamKind = "validation" if run.stream == "validation" else "demo"
        state = FollowedRun(kind, run.id, lease.record.origin or "cluster")
        self.runs[(kind, run.id)] = state
        scope = anyio.CancelScope()
        self._owned[lease.key] = (scope, state)
        self._tg.start_soon(self._owned_task, state, lease, scope, name=f"arga:{kind}:{run.id}")
        self._running()[1].log.info(
            "arga.following",
            stream_kind=kind,
            run_id=run.id,
            origin="cluster",
            position=lease.record.position,
        )

    async def _owned_task(
        self, state: FollowedRun, lease: RunLease, scope: anyio.CancelScope
    ) -> None:
        try:
            with scope:
                await self._run_follower(state, None, lease)
                await lease.finish(state.status)
        finally:
            if scope.cancel_called and state.status == "following":
                state.status = "handed_over"
            state.finished.set()
            self._forget_finished()

    async def disown(self, key: str) -> None:
        """Stop following the run of record ``key`` (another instance takes it over)."""
        entry = self._owned.pop(key, None)
        if entry is None:
            return
        scope, state = entry
        scope.cancel()
        await state.finished.wait()

    def _forget_finished(self) -> None:
        """Keep only the newest :data:`FINISHED_MEMORY` finished runs."""
        finished = [key for key, run in self.runs.items() if run.status != "following"]
        for key in finished[: max(0, len(finished) - FINISHED_MEMORY)]:
            del self.runs[key]

    async def start_run(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /validate/url-run`` or ``/validate/pr-run``, follow the SSE response it
        returns (or the run id of a JSON response) and keep following the run."""
        if kind not in ("url-run", "pr-run"):
            raise ValueError("kind must be url-run or pr-run")
        if self._tg is None:
            raise SourceError(f"source {self.name} is not running")
        result: dict[str, Any] = await self._tg.start(self._start_task, kind, body)
        return result

    async def _start_task(
        self,
        kind: str,
        body: dict[str, Any],
        *,
        task_status: anyio.abc.TaskStatus[dict[str, Any]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        api, ctx, _ = self._running()
        try:
            async with api.client.stream("POST", f"/validate/{kind}", json=body) as response:
                ctype = content_type_essence(response.headers.get("content-type"))
                if response.status_code != 200:
                    raw = await response.aread()
                    task_status.started(_upstream_error(response.status_code, raw))
                    return
                if ctype == "application/json":
                    data = orjson.loads(await response.aread())
                    run_id = str(data.get("run_id") or "")
                    if not run_id:
                        task_status.started({"error": 502, "detail": "Arga returned no run_id"})
                        return
                    await self.follow(run_id, "validation", origin=kind, force=True)
                    task_status.started(
                        {
                            "run_id": run_id,
                            "session_id": data.get("session_id"),
                            "status": data.get("status"),
                        }
                    )
                    return
                run_id = response.headers.get("x-run-id") or ""
                if ctype != EVENT_STREAM or not run_id:
                    task_status.started(
                        {"error": 502, "detail": f"unexpected start response ({ctype or '-'})"}
                    )
                    return
                if self.cluster is not None:
                    # The owner of the run's record follows it (from its start).
                    await self.follow(run_id, "validation", origin=kind, force=True)
                    task_status.started(
                        {
                            "run_id": run_id,
                            "session_id": response.headers.get("x-session-id"),
                            "status": "started",
                        }
                    )
                    return
                state = FollowedRun("validation", run_id, kind)
                self.runs[("validation", run_id)] = state
                await self._save()
                task_status.started(
                    {
                        "run_id": run_id,
                        "session_id": response.headers.get("x-session-id"),
                        "status": "started",
                    }
                )
                ctx.log.info("arga.following", stream_kind="validation", run_id=run_id, origin=kind)
                await self._follow_task(state, response)
        except (httpx.TransportError, orjson.JSONDecodeError) as exc:
            task_status.started({"error": 502, "detail": f"Arga unreachable: {type(exc).__name__}"})

    def health(self) -> Health:
        following = sum(1 for r in self.runs.values() if r.status == "following")
        detail = (
            f"{following} run(s) followed, {self.open_slots}/{self.config.max_streams} streams open"
        )
        if self.refusals.runs:
            detail += f", {len(self.refusals.runs)} run(s) refused or missing"
        cfg = self.config
        discovery = cfg.poll_interval > 0 and (cfg.discover_validation or cfg.discover_demo)
        refused = self.refusals.key_refused(
            {k: r.status for k, r in self.runs.items()},
            discovery=discovery,
            listing=self.discovery.refused if self.discovery is not None else None,
        )
        if refused is not None:
            return Health(False, f"Arga refused the API key: {refused}; {detail}")
        return Health(self.api is not None, detail if self.api else "starting")


def _upstream_error(status: int, raw: bytes) -> dict[str, Any]:
    detail = ""
    try:
        body = orjson.loads(raw)
        if isinstance(body, dict):
            detail = str(body.get("detail") or "")
    except orjson.JSONDecodeError:
        pass
    return {"error": status, "detail": detail[:300] or f"Arga answered HTTP {status}"}
