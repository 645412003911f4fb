"""The frame every grove controller hangs on: a context of shared parts, a work queue, events.

`ControllerContext` is what the controller manager hands each controller: the API client, the
shared `InformerFactory` (one list+watch per resource for the whole process), the event sink,
the work-queue metrics and the options. `BaseController` gives a controller its rate-limited
`WorkQueue` (named after the controller, so `/metrics` shows `workqueue_depth{name="replicaset"}`
and `workqueue_work_duration_seconds{...}` — the sync latency), `enqueue`/`enqueue_after`, and
`run()`: wait until the informers it reads have listed, then run `sync(key)` workers. A
controller is its `sync(key)` and the informer handlers that decide which keys to enqueue.

`EventSink` records core/v1 Events without holding up a sync: `recorder.event(...)` puts the
event on a bounded queue and one task posts them (the API server folds repeats into a count).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apiclient import ApiClient, ApiError, Conflict, GroupVersionResource, NotFound, Obj
from orchestrator.watchers import (
    IndexFn,
    Informer,
    InformerFactory,
    WorkQueue,
    WorkQueueMetrics,
    run_workers,
    wait_synced,
)

from .util import controller_ref, key_of

log = logging.getLogger(__name__)


@dataclass
class ControllerOptions:
    """Flags of the controller manager that controllers read (kube's names and defaults)."""

    # node lifecycle
    node_monitor_period: float = 5.0
    node_monitor_grace_period: float = 40.0
    node_startup_grace_period: float = 60.0
    # endpoints: how long to batch pod changes before writing Endpoints (0: at once)
    endpoint_updates_batch_period: float = 0.0
    # namespace deletion retries when content remains
    namespace_sync_period: float = 300.0
    # garbage collector: resources it never collects
    gc_ignored_resources: tuple[str, ...] = ("events", "events.events.k8s.io")
    # workers per controller
    concurrent_syncs: dict[str, int] = field(default_factory=dict)

    def workers(self, name: str, default: int) -> int:
        return max(1, int(self.concurrent_syncs.get(name, default)))


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventRecord:
    involved: Mapping[str, Any]
    type: str
    reason: str
    message: str
    component: str


class EventSink:
    """A bounded queue of events and the task that posts them."""

    def __init__(self, client: ApiClient, host: str | None = None, capacity: int = 2000) -> None:
        self.client = client
        self.host = host or socket.gethostname()
        self._queue: asyncio.Queue[EventRecord] = asyncio.Queue(capacity)
        self.dropped = 0
        self.sent = 0

    def recorder(self, component: str) -> EventRecorder:
        return EventRecorder(self, component)

    def put(self, record: EventRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            log.debug("event queue full; dropping %s %s", record.reason, record.message)

    async def run(self) -> None:
        while True:
            rec = await self._queue.get()
            try:
                await self.client.create_event(
                    dict(rec.involved),
                    rec.reason,
                    rec.message,
                    type=rec.type,
                    component=rec.component,
                    host=self.host,
                )
                self.sent += 1
            except ApiError as exc:
                log.debug("cannot record event %s on %s: %s", rec.reason, key_of(rec.involved), exc)

    async def flush(self, timeout: float = 2.0) -> None:
        """Post what is queued (best effort) — e.g. before the process exits."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._queue.empty():
                    rec = self._queue.get_nowait()
                    with contextlib.suppress(ApiError):
                        await self.client.create_event(
                            dict(rec.involved), rec.reason, rec.message, type=rec.type, component=rec.component,
                            host=self.host,
                        )  # fmt: skip


class EventRecorder:
    """record.EventRecorder for one component (e.g. `replicaset-controller`)."""

    def __init__(self, sink: EventSink | None, component: str) -> None:
        self.sink = sink
        self.component = component

    def event(self, obj: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        if self.sink is None:
            return
        meta = obj.get("metadata") or {}
        involved = {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", ""),
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if meta.get(k)},
        }
        self.sink.put(EventRecord(involved, type, reason, message, self.component))

    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, "Normal", reason, message)

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, "Warning", reason, message)


# --- the context and the base class -------------------------------------------------------------


@dataclass
class ControllerContext:
    client: ApiClient
    factory: InformerFactory
    events: EventSink | None = None
    metrics: WorkQueueMetrics | None = None
    options: ControllerOptions = field(default_factory=ControllerOptions)
    clock: Callable[[], float] = time.time  # wall clock: object timestamps are wall-clock times

    def recorder(self, component: str) -> EventRecorder:
        return EventRecorder(self.events, component)


def index_by_controller_uid(obj: Obj) -> str | None:
    """Objects by the uid of their controlling owner (kind-agnostic, rename-proof)."""
    ref = controller_ref(obj)
    return str(ref.get("uid")) if ref is not None and ref.get("uid") else None


def index_orphans_by_namespace(obj: Obj) -> str | None:
    """Objects without a controlling owner, by namespace: the candidates for adoption."""
    if controller_ref(obj) is not None:
        return None
    return (obj.get("metadata") or {}).get("namespace") or ""


def index_by_uid(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("uid") or None


BY_CONTROLLER_UID = "byControllerUID"
ORPHANS_BY_NAMESPACE = "orphansByNamespace"
BY_NAMESPACE = "byNamespace"
BY_NODE = "byNode"
BY_UID = "byUID"


class BaseController:
    """A named sync(key) with its work queue and the informers it must wait for."""

    name = "controller"
    default_workers = 1

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.workers = ctx.options.workers(self.name, self.default_workers)
        self.queue = WorkQueue(self.name, metrics=ctx.metrics)
        self._informers: list[Informer] = []
        if ctx.metrics is not None:
            # Export every controller's series from the start, not from its first key.
            m = ctx.metrics
            m.depth.labels(self.name).set(0)
            for metric in (m.adds, m.retries, m.queue_duration, m.work_duration):
                metric.labels(self.name)

    def informer(
        self,
        gvr: GroupVersionResource,
        *,
        namespace: str | None = None,
        indexers: dict[str, IndexFn] | None = None,
    ) -> Informer:
        inf = self.ctx.factory.informer(*gvr, namespace=namespace, indexers=indexers)
        if inf not in self._informers:
            self._informers.append(inf)
        return inf

    def now(self) -> float:
        return self.ctx.clock()

    def enqueue(self, key: Hashable) -> None:
        self.queue.add(key)

    def enqueue_after(self, key: Hashable, delay: float) -> None:
        self.queue.add_after(key, delay)

    def enqueue_obj(self, obj: Mapping[str, Any]) -> None:
        self.queue.add(key_of(obj))

    async def sync(self, key: Any) -> None:  # pragma: no cover - every controller has its own
        raise NotImplementedError

    async def run(self) -> None:
        """Wait for the caches this controller reads, then run its workers until cancelled."""
        try:
            await wait_synced(*self._informers)
            log.info("%s: caches synced, starting %d worker(s)", self.name, self.workers)
            await run_workers(self.queue, self.sync, self.workers)
        finally:
            self.queue.shutdown()


async def update_status_with_retry(
    client: ApiClient,
    gvr: GroupVersionResource,
    obj: Mapping[str, Any],
    new_status: Mapping[str, Any],
) -> Obj | None:
    """PUT the status subresource from the cached object; on a conflict read the object afresh
    and try once more (kube's statusUpdateRetries). None when the object is gone."""
    body = {**obj, "status": dict(new_status)}
    try:
        return await client.update_status(*gvr, body)
    except NotFound:
        return None
    except Conflict:
        meta = obj.get("metadata") or {}
        try:
            fresh = await client.get(*gvr, meta.get("name"), namespace=meta.get("namespace"))
        except NotFound:
            return None
        fresh["status"] = dict(new_status)
        return await client.update_status(*gvr, fresh)


async def slow_start_batch(
    count: int, initial: int, fn: Callable[[], Any]
) -> tuple[int, BaseException | None]:
    """kube's slowStartBatch: call `fn` in batches of 1, 2, 4, ... concurrently and stop after a
    batch with a failure, so a quota or a terminating namespace costs one error, not hundreds.
    Returns (successes, first error)."""
    remaining = count
    successes = 0
    batch = min(remaining, initial)
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for err in errors:
            if isinstance(err, asyncio.CancelledError):
                raise err
        successes += batch - len(errors)
        if errors:
            return successes, errors[0]
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None
