"""The scheduler process: watch pending pods, decide with the framework, bind through `pods/binding`.

One pod informer (every pod not Succeeded/Failed) feeds two things: pods bound to a node go into
the snapshot (confirming assumptions), pending pods whose `schedulerName` is ours go on the
scheduling queue. A node informer keeps the snapshot's nodes. Informer handlers only update the
snapshot and the queue; one loop pops a pod, decides synchronously (no await between reading
the snapshot and assuming the result, so decisions never race), assumes it and starts the bind
in the background — up to `bind_concurrency` binds in flight, which is what lets a burst of pods
go out at the API server's pace rather than one round trip each. A bound pod's watch event reuses
the record parsed when it was scheduled (`PodInfo.rebound`). A pod that fits nowhere gets a
FailedScheduling event and `PodScheduled=False/Unschedulable` with the summary, and waits in
the queue until a node is added or changes or a pod goes away. The informers run on standby
replicas too, so a standby that wins the Lease starts with a warm cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from orchestrator.apiclient import NAMESPACES, NODES, PODS, ApiClient, ApiError, ClientConfig, NotFound, Obj
from orchestrator.leaderelection import LeaderElector, LeaseConfig
from orchestrator.scheduler.assume import AssumeCache
from orchestrator.scheduler.framework import FitError, Framework
from orchestrator.scheduler.queue import SchedulingQueue
from orchestrator.scheduler.snapshot import PodInfo, Snapshot, pod_key
from orchestrator.watchers import Informer

log = logging.getLogger(__name__)

COMPONENT = "default-scheduler"
SCHEDULER_NAMES = ("default-scheduler", "grove-scheduler")
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


@dataclass
class SchedulerOptions:
    scheduler_names: tuple[str, ...] = SCHEDULER_NAMES
    percentage_of_nodes_to_score: int = 0  # 0: kube's adaptive default
    bind_concurrency: int = 64
    assumed_pod_ttl: float = 30.0
    initial_backoff: float = 1.0
    max_backoff: float = 10.0
    unschedulable_timeout: float = 300.0
    record_scheduled_events: bool = True
    seed: int | None = None


class SchedulerMetrics:
    """kube-scheduler's own metric names, so dashboards built for it read these."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "scheduler_schedule_attempts",
            "Scheduling attempts by result (scheduled, unschedulable, error)",
            ["result", "profile"],
            registry=registry,
        )
        self.attempt_duration = Histogram(
            "scheduler_scheduling_attempt_duration_seconds",
            "Time to decide where a pod goes (filters, scores, pick)",
            ["result", "profile"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
            registry=registry,
        )
        self.binding_duration = Histogram(
            "scheduler_binding_duration_seconds",
            "Time of a pods/binding request",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.pending = Gauge("scheduler_pending_pods", "Pending pods by queue", ["queue"], registry=registry)
        self.leader = Gauge(
            "leader_election_master_status",
            "1 while this replica holds the lease",
            ["name"],
            registry=registry,
        )
        self.events_dropped = Counter(
            "scheduler_events_dropped", "Events not sent because too many were waiting", registry=registry
        )


def _assigned(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("spec") or {}).get("nodeName"))


def _scheduling_view(obj: Mapping[str, Any]) -> tuple[Any, Any]:
    """What of a pending pod can change a scheduling decision (status updates cannot)."""
    meta = obj.get("metadata") or {}
    kept = {
        k: v
        for k, v in meta.items()
        if k not in ("resourceVersion", "managedFields", "generation", "finalizers")
    }
    return kept, obj.get("spec")


def _node_view(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a node scheduling reads; heartbeats that change none of it are ignored."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ready = next((c.get("status") for c in status.get("conditions") or () if c.get("type") == "Ready"), None)
    return (
        meta.get("labels"),
        spec.get("taints"),
        spec.get("unschedulable"),
        status.get("allocatable") or status.get("capacity"),
        ready,
    )


class EventRecorder:
    """Sends Events in the background, a few at a time; when too many wait, new ones are
    dropped (as client-go's broadcaster does) so events never slow scheduling down."""

    def __init__(
        self,
        client: ApiClient,
        component: str,
        max_pending: int = 1000,
        workers: int = 4,
        on_drop: Any = None,
    ) -> None:
        self.client = client
        self.component = component
        self.workers = workers
        self.on_drop = on_drop
        self._queue: asyncio.Queue[tuple[Obj, str, str, str, str]] = asyncio.Queue(max_pending)

    def record(self, obj: Obj, type: str, reason: str, message: str, action: str) -> None:
        try:
            self._queue.put_nowait((obj, type, reason, message, action))
        except asyncio.QueueFull:
            if self.on_drop is not None:
                self.on_drop()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(self.workers):
                tg.create_task(self._worker())

    async def _worker(self) -> None:
        while True:
            obj, type, reason, message, action = await self._queue.get()
            ref = {"apiVersion": "v1", "kind": "Pod", "metadata": obj.get("metadata") or {}}
            try:
                await self.client.create_event(
                    ref, reason, message, type=type, component=self.component, action=action
                )
            except ApiError as exc:
                log.debug("event %s for %s not recorded: %s", reason, pod_key(obj), exc)
            except Exception:
                log.exception("event %s for %s not recorded", reason, pod_key(obj))


class Scheduler:
    """Informers, queue, snapshot and framework of one scheduler replica."""

    def __init__(
        self,
        client: ApiClient,
        options: SchedulerOptions | None = None,
        registry: CollectorRegistry | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.client = client
        self.options = options or SchedulerOptions()
        self.clock = clock
        self.registry = registry or CollectorRegistry()
        self.metrics = SchedulerMetrics(self.registry)
        self.names = frozenset(self.options.scheduler_names)
        self.snapshot = Snapshot()
        self.cache = AssumeCache(self.snapshot, ttl=self.options.assumed_pod_ttl)
        self.queue = SchedulingQueue(
            clock=clock,
            initial_backoff=self.options.initial_backoff,
            max_backoff=self.options.max_backoff,
            unschedulable_timeout=self.options.unschedulable_timeout,
        )
        self.framework = Framework(
            rng=random.Random(self.options.seed),
            percentage_of_nodes_to_score=self.options.percentage_of_nodes_to_score,
        )
        self.pods = Informer(client, *PODS, field_selector=ACTIVE_PODS)
        self.nodes = Informer(client, *NODES)
        self.namespaces = Informer(client, *NAMESPACES)
        self.pods.add_handler(self._on_pod_add, self._on_pod_update, self._on_pod_delete)
        self.nodes.add_handler(self._on_node_add, self._on_node_update, self._on_node_delete)
        self.namespaces.add_handler(
            self.snapshot.set_namespace,
            lambda old, new: self.snapshot.set_namespace(new),
            lambda obj: self.snapshot.remove_namespace((obj.get("metadata") or {}).get("name", "")),
        )
        self.recorder = EventRecorder(client, COMPONENT, on_drop=self.metrics.events_dropped.inc)
        self._wake = asyncio.Event()
        self._bind_slots = asyncio.Semaphore(max(1, self.options.bind_concurrency))
        self._status_slots = asyncio.Semaphore(8)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_expire = 0.0
        for where in ("active", "backoff", "unschedulable"):
            self.metrics.pending.labels(where).set_function(lambda where=where: self.queue.counts()[where])

    # --- informers ------------------------------------------------------------------------------

    async def run_informers(self) -> None:
        """List and watch pods, nodes and namespaces until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for informer in (self.nodes, self.namespaces, self.pods):
                tg.create_task(informer.run())

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(
            asyncio.gather(self.nodes.wait_synced(), self.pods.wait_synced(), self.namespaces.wait_synced()),
            timeout,
        )

    @property
    def synced(self) -> bool:
        return self.nodes.has_synced and self.pods.has_synced and self.namespaces.has_synced

    def _responsible(self, obj: Mapping[str, Any]) -> bool:
        spec = obj.get("spec") or {}
        meta = obj.get("metadata") or {}
        return (
            (spec.get("schedulerName") or "default-scheduler") in self.names
            and not spec.get("schedulingGates")
            and not meta.get("deletionTimestamp")
        )

    def _enqueue(self, obj: Mapping[str, Any]) -> None:
        self.queue.add(pod_key(obj), int((obj.get("spec") or {}).get("priority") or 0))
        self._wake.set()

    def _cluster_changed(self) -> None:
        if self.queue.move_all():
            self._wake.set()

    def _placed_info(self, key: str, obj: Obj) -> PodInfo:
        """The record of a bound pod: the one already placed (assumed, or an earlier version)
        carried over when only binding or status changed, parsed afresh otherwise."""
        known = self.snapshot.get_pod(key)
        info = known.rebound(obj) if known is not None else None
        return info if info is not None else PodInfo.from_pod(obj)

    def _on_pod_add(self, obj: Obj) -> None:
        if _assigned(obj):
            key = pod_key(obj)
            self.queue.delete(key)
            self.cache.pod_placed(self._placed_info(key, obj))
        elif self._responsible(obj):
            self._enqueue(obj)

    def _on_pod_update(self, old: Obj, new: Obj) -> None:
        key = pod_key(new)
        if _assigned(new):
            if not _assigned(old):
                self.queue.delete(key)
            self.cache.pod_placed(self._placed_info(key, new))
        elif not self._responsible(new):
            self.queue.delete(key)
        elif key not in self.queue or _scheduling_view(old) != _scheduling_view(new):
            self._enqueue(new)

    def _on_pod_delete(self, obj: Obj) -> None:
        key = pod_key(obj)
        self.queue.delete(key)
        if self.snapshot.get_pod(key) is not None:
            self.cache.pod_gone(key)
            self._cluster_changed()

    def _on_node_add(self, obj: Obj) -> None:
        self.snapshot.set_node(obj)
        self._cluster_changed()

    def _on_node_update(self, old: Obj, new: Obj) -> None:
        if _node_view(old) != _node_view(new):
            self.snapshot.set_node(new)
            self._cluster_changed()

    def _on_node_delete(self, obj: Obj) -> None:
        self.snapshot.remove_node(str((obj.get("metadata") or {}).get("name", "")))

    # --- scheduling -----------------------------------------------------------------------------

    async def schedule_loop(self) -> None:
        """Schedule pending pods until cancelled (what the leader runs)."""
        log.info("scheduling pods (scheduler names: %s)", ", ".join(sorted(self.names)))
        self.queue.move_all()  # what a standby parked may fit now
        try:
            while True:
                await self._bind_slots.acquire()
                key = self.queue.pop()
                if key is None:
                    self._bind_slots.release()
                    await self._idle()
                    continue
                if not self.schedule_one(key):
                    self._bind_slots.release()
                await asyncio.sleep(0)  # let watch events and binds in
        finally:
            self._expire_assumed(force=True)

    async def _idle(self) -> None:
        self._expire_assumed()
        wait = self.queue.next_ready_in()
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), 1.0 if wait is None else min(wait, 1.0))

    def _expire_assumed(self, force: bool = False) -> None:
        now = self.clock()
        if force or now - self._last_expire >= 1.0:
            self._last_expire = now
            for key in self.cache.expire(now):
                log.warning("assumed pod %s expired: its bind never showed up in the watch", key)

    def schedule_one(self, key: str) -> bool:
        """Decide for one pod; True when a bind was started (it then owns a bind slot)."""
        obj = self.pods.get(key)
        if obj is None or _assigned(obj) or not self._responsible(obj):
            self.queue.delete(key)
            return False
        if self.cache.is_assumed(key):
            self.queue.delete(key)  # its bind is in flight; a failed bind queues it again
            return False
        profile = str((obj.get("spec") or {}).get("schedulerName") or COMPONENT)
        start = time.perf_counter()
        try:
            pod = PodInfo.from_pod(obj)
            result = self.framework.schedule(pod, self.snapshot)
        except FitError as err:
            self.metrics.attempts.labels("unschedulable", profile).inc()
            self.metrics.attempt_duration.labels("unschedulable", profile).observe(
                time.perf_counter() - start
            )
            self.queue.unschedulable(key)
            self._report_unschedulable(obj, str(err))
            return False
        except Exception:
            log.exception("scheduling %s failed", key)
            self.metrics.attempts.labels("error", profile).inc()
            self.queue.backoff(key)
            return False
        self.metrics.attempts.labels("scheduled", profile).inc()
        self.metrics.attempt_duration.labels("scheduled", profile).observe(time.perf_counter() - start)
        self.cache.assume(pod, result.node)
        self._spawn(self._bind(obj, pod, result.node))
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _bind(self, obj: Obj, pod: PodInfo, node: str) -> None:
        key = pod.key
        start = time.perf_counter()
        try:
            await self.client.bind(pod.namespace, pod.name, node, uid=pod.uid or None)
        except ApiError as exc:
            self.cache.forget(key)
            if isinstance(exc, NotFound):
                self.queue.delete(key)
                return
            log.info("binding %s to %s failed: %s", key, node, exc)
            self.queue.add(key, pod.priority)
            self.queue.backoff(key)
            self._wake.set()
            self.recorder.record(obj, "Warning", "FailedScheduling", f"Binding rejected: {exc}", "Binding")
            return
        except BaseException:
            self.cache.forget(key)
            self.queue.add(key, pod.priority)
            self.queue.backoff(key)
            raise
        finally:
            self._bind_slots.release()
            self.metrics.binding_duration.observe(time.perf_counter() - start)
        self.cache.finish_binding(key, self.clock())
        self.queue.done(key)
        if self.options.record_scheduled_events:
            message = f"Successfully assigned {key} to {node}"
            self.recorder.record(obj, "Normal", "Scheduled", message, "Binding")

    def _report_unschedulable(self, obj: Obj, message: str) -> None:
        log.info("%s: %s", pod_key(obj), message)
        self.recorder.record(obj, "Warning", "FailedScheduling", message, "Scheduling")
        current = next(
            (c for c in (obj.get("status") or {}).get("conditions") or () if c.get("type") == "PodScheduled"),
            None,
        )
        if (
            current is not None
            and current.get("status") == "False"
            and current.get("reason") == "Unschedulable"
            and current.get("message") == message
        ):
            return  # already says so: no write
        self._spawn(self._patch_condition(obj, message, current))

    async def _patch_condition(self, obj: Obj, message: str, current: Mapping[str, Any] | None) -> None:
        meta = obj.get("metadata") or {}
        since = (
            current.get("lastTransitionTime")
            if current is not None and current.get("status") == "False"
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        )
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": since,
        }
        async with self._status_slots:
            try:
                await self.client.patch(
                    *PODS,
                    meta.get("name", ""),
                    {"status": {"conditions": [condition]}},
                    namespace=meta.get("namespace"),
                    patch_type="strategic",
                    subresource="status",
                )
            except ApiError as exc:
                if not isinstance(exc, NotFound):
                    log.info("cannot update PodScheduled of %s: %s", pod_key(obj), exc)

    async def drain(self) -> None:
        """Wait for binds and status writes in flight (for a clean stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


# --- the process ---------------------------------------------------------------------------------


def default_identity() -> str:
    """client-go's convention: hostname plus a unique suffix."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


async def start_metrics(scheduler: Scheduler, host: str, port: int) -> web.AppRunner:
    """Serve /metrics (Prometheus), /healthz and /readyz (caches synced); OSError if the port is
    taken. Stop it with `await runner.cleanup()`."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(scheduler.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return (
            web.Response(text="ok")
            if scheduler.synced
            else web.Response(status=503, text="caches not synced")
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def run_scheduler(
    server: str | ClientConfig,
    options: SchedulerOptions | None = None,
    lease: LeaseConfig | None = None,
    metrics_address: tuple[str, int] | None = None,
) -> None:
    """The whole process: informers, metrics, and scheduling — behind leader election when a
    `lease` is given. Runs until cancelled; a leader releases its Lease on the way out."""
    async with ApiClient(server, user_agent="grove-scheduler") as client:
        scheduler = Scheduler(client, options)
        runner = None if metrics_address is None else await start_metrics(scheduler, *metrics_address)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(scheduler.run_informers(), name="informers")
                tg.create_task(scheduler.recorder.run(), name="events")
                await scheduler.wait_synced()
                log.info("caches synced: %d nodes, %d pods", len(scheduler.snapshot), len(scheduler.pods))
                if lease is None:
                    tg.create_task(scheduler.schedule_loop(), name="schedule")
                else:
                    gauge = scheduler.metrics.leader.labels(lease.name)
                    elector = LeaderElector(client, lease, on_change=lambda leading: gauge.set(int(leading)))
                    log.info("waiting to lead %s/%s as %s", lease.namespace, lease.name, lease.identity)
                    tg.create_task(elector.run(scheduler.schedule_loop), name="leader-election")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(scheduler.drain(), 5)
            if runner is not None:
                await runner.cleanup()
