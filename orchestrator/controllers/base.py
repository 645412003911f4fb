"""The frame every grove controller hangs on: a context of shared parts, a work queue, events.

`ControllerContext` is what the controller manager hands each controller: the API client, the
shared `InformerFactory` (one list+watch per resource for the whole process), the event sink,
the work-queue metrics and the options. `BaseController` gives a controller its rate-limited
`WorkQueue` (named after the controller, so `/metrics` shows `workqueue_depth{name="replicaset"}`
and `workqueue_work_duration_seconds{...}` — the sync latency), `enqueue`/`enqueue_after`, and
`run()`: wait until the informers it reads have listed, then run `sync(key)` workers. A
controller is its `sync(key)` and the informer handlers that decide which keys to enqueue.

`WorkloadController` is the shared part of the controllers that own objects of another resource
through controller ownerReferences (ReplicaSet -> pods, DaemonSet -> pods, Deployment ->
ReplicaSets): the informer handlers that map an owned object to its owner's key (and observe
expectations), the claim that adopts matching orphans and releases what stopped matching
(`ControllerRefManager`) and writing the status subresource. `PodOwnerController` adds what
the owners of pods share: expectations and `PodControl` (create and delete pods against them).
`RevisionOwnerController` adds the ControllerRevision history DaemonSets and StatefulSets keep.

`EventSink` records core/v1 Events without holding up a sync: `recorder.event(...)` puts the
event on a bounded queue and one task posts them (the API server folds repeats into a count).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apiclient import (
    CONTROLLERREVISIONS,
    PODS,
    AlreadyExists,
    ApiClient,
    ApiError,
    Conflict,
    GroupVersionResource,
    NotFound,
    Obj,
)
from orchestrator.selectors import SelectorError, selector_from_object
from orchestrator.watchers import (
    IndexFn,
    Informer,
    InformerFactory,
    WorkQueue,
    WorkQueueMetrics,
    run_workers,
    wait_synced,
)

from .expectations import UIDTrackingControllerExpectations
from .revisions import REVISION_HASH_LABEL, matches, plan_history, revision_hash, revisions_to_prune
from .util import (
    adopt_patch,
    being_deleted,
    claim,
    controlled_by,
    controller_ref,
    int_field,
    is_pod_ready,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    new_controller_ref,
    release_patch,
    spec,
    status,
    uid_of,
)

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
    # horizontal pod autoscaler: how often every HPA is evaluated
    horizontal_pod_autoscaler_sync_period: float = 15.0
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


class BaseController(abc.ABC):
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

    @abc.abstractmethod
    async def sync(self, key: Any) -> None:
        """One level-triggered step toward the desired state of `key`; safe to run twice."""

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


# --- what owners of other objects share -----------------------------------------------------------


async def ignore_missing(call: Awaitable[Any]) -> None:
    """Await a write whose object may already be gone (a stale cache): NotFound is done."""
    try:
        await call
    except NotFound:
        pass


def namespace_terminating(err: ApiError) -> bool:
    """A create refused because its namespace is being deleted (every later create fails too)."""
    causes = (err.details or {}).get("causes") or []
    return any(isinstance(c, Mapping) and c.get("reason") == "NamespaceTerminating" for c in causes)


@dataclass
class ControllerRefManager:
    """kube's ControllerRefManager: claim objects of `owned` for owners of one kind — keep what
    the owner controls and still matches, adopt matching orphans (after a fresh read shows the
    owner undeleted: RecheckDeletionTimestamp), release controlled objects that stopped matching."""

    client: ApiClient
    owner_gvr: GroupVersionResource
    owned_gvr: GroupVersionResource
    api_version: str
    kind: str

    async def claim(
        self,
        owner: Mapping[str, Any],
        candidates: list[Obj],
        match: Callable[[Mapping[str, Any]], bool],
    ) -> list[Obj]:
        """The objects `owner` controls once the claim is done: owned ones, then adopted ones."""
        decided = claim(owner, candidates, match)
        adopted: list[Obj] = []
        if decided.adopt and await self.can_adopt(owner):
            ref = new_controller_ref(owner, self.api_version, self.kind)
            for obj in decided.adopt:
                patched = await self._patch(obj, adopt_patch(obj, ref))
                if patched is not None:
                    adopted.append(patched)
        for obj in decided.release:
            await self._patch(obj, release_patch(obj, uid_of(owner)))
        return [*decided.owned, *adopted]  # type: ignore[list-item]

    async def can_adopt(self, owner: Mapping[str, Any]) -> bool:
        try:
            fresh = await self.client.get(*self.owner_gvr, name_of(owner), namespace=namespace_of(owner))
        except NotFound:
            return False
        return uid_of(fresh) == uid_of(owner) and not being_deleted(fresh)

    async def _patch(self, obj: Mapping[str, Any], patch: Obj) -> Obj | None:
        try:
            return await self.client.patch(
                *self.owned_gvr, name_of(obj), patch, namespace=namespace_of(obj), patch_type="strategic"
            )
        except NotFound:
            return None


class WorkloadController(BaseController):
    """A controller of objects that own objects of another resource through a controller
    ownerReference. A subclass names `kind`/`api_version`, `owner_gvr` and `owned_gvr`; this
    class makes the two informers (`owners`, and `owned` indexed by controller uid and orphans by
    namespace) and hooks their handlers: every owner change enqueues the owner, every owned
    change enqueues the owner(s) it belongs or may belong to.

    `expectations` (when set) are lowered as the owned objects the controller made or deleted
    show up; `wake_on_pod_ready` requeues an owner minReadySeconds after one of its pods turns
    ready, so availability is counted without waiting for another event.
    """

    kind = ""
    api_version = ""
    owner_gvr: GroupVersionResource
    owned_gvr: GroupVersionResource
    owner_indexers: dict[str, IndexFn] | None = None
    wake_on_pod_ready = False
    expectations: UIDTrackingControllerExpectations | None = None

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.ref_manager = ControllerRefManager(
            ctx.client, self.owner_gvr, self.owned_gvr, self.api_version, self.kind
        )
        self.owners = self.informer(self.owner_gvr, indexers=self.owner_indexers)
        self.owned = self.informer(
            self.owned_gvr,
            indexers={
                BY_CONTROLLER_UID: index_by_controller_uid,
                ORPHANS_BY_NAMESPACE: index_orphans_by_namespace,
            },
        )
        self.owners.add_handler(self.enqueue_obj, lambda old, cur: self.enqueue_obj(cur), self.owner_deleted)
        self.owned.add_handler(self.owned_added, self.owned_updated, self.owned_deleted)

    # --- from an owned object to its owners ------------------------------------------------------

    def resolve_owner(self, namespace: str, ref: Mapping[str, Any] | None) -> Obj | None:
        """resolveControllerRef: the cached owner a controller reference names (same uid)."""
        if ref is None or ref.get("kind") != self.kind:
            return None
        owner = self.owners.get(f"{namespace}/{ref.get('name')}")
        return owner if owner is not None and uid_of(owner) == ref.get("uid") else None

    def owners_selecting(self, obj: Mapping[str, Any]) -> list[Obj]:
        """Owners in the object's namespace whose (non-empty) selector matches its labels."""
        labels = labels_of(obj)
        out = []
        for owner in self.owners.list(namespace_of(obj)):
            try:
                sel = selector_from_object(spec(owner).get("selector"))
            except SelectorError:
                continue
            if not sel.empty and sel.matches(labels):
                out.append(owner)
        return out

    def owners_of(self, obj: Mapping[str, Any]) -> list[Obj]:
        """The owner controlling `obj`, or for an orphan every owner that may adopt it."""
        ref = controller_ref(obj)
        if ref is None:
            return self.owners_selecting(obj)
        owner = self.resolve_owner(namespace_of(obj), ref)
        return [owner] if owner is not None else []

    def owner_deleted(self, owner: Obj) -> None:
        key = key_of(owner)
        if self.expectations is not None:
            self.expectations.delete(key)
        self.enqueue(key)

    # --- owned-object handlers ---------------------------------------------------------------------

    def owned_added(self, obj: Obj) -> None:
        if being_deleted(obj):
            self.owned_deleted(obj)
            return
        ref = controller_ref(obj)
        if ref is not None:
            owner = self.resolve_owner(namespace_of(obj), ref)
            if owner is not None:
                key = key_of(owner)
                if self.expectations is not None:
                    self.expectations.creation_observed(key)
                self.enqueue(key)
            return
        for owner in self.owners_selecting(obj):
            self.enqueue_obj(owner)

    def owned_updated(self, old: Obj, cur: Obj) -> None:
        if meta(old).get("resourceVersion") == meta(cur).get("resourceVersion"):
            return
        labels_changed = labels_of(old) != labels_of(cur)
        if being_deleted(cur):
            self.owned_deleted(cur)
            if labels_changed:
                self.owned_deleted(old)
            return
        cur_ref, old_ref = controller_ref(cur), controller_ref(old)
        ref_changed = (cur_ref or {}).get("uid") != (old_ref or {}).get("uid")
        if ref_changed and old_ref is not None:
            owner = self.resolve_owner(namespace_of(old), old_ref)
            if owner is not None:
                self.enqueue_obj(owner)
        if cur_ref is not None:
            owner = self.resolve_owner(namespace_of(cur), cur_ref)
            if owner is not None:
                self.enqueue_obj(owner)
                min_ready = int_field(spec(owner), "minReadySeconds")
                if self.wake_on_pod_ready and min_ready > 0 and not is_pod_ready(old) and is_pod_ready(cur):
                    self.enqueue_after(key_of(owner), float(min_ready) + 1.0)
            return
        if labels_changed or ref_changed:
            for owner in self.owners_selecting(cur):
                self.enqueue_obj(owner)

    def owned_deleted(self, obj: Obj) -> None:
        owner = self.resolve_owner(namespace_of(obj), controller_ref(obj))
        if owner is None:
            return
        key = key_of(owner)
        if self.expectations is not None:
            self.expectations.deletion_observed_of(key, key_of(obj))
        self.enqueue(key)

    # --- claiming, status -----------------------------------------------------------------------

    async def claim_owned(
        self,
        owner: Mapping[str, Any],
        match: Callable[[Mapping[str, Any]], bool],
        only: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> list[Obj]:
        """Claim the candidates — objects `owner` controls and orphans of its namespace, those
        `only` keeps (e.g. active pods) — with `match` deciding what belongs to it."""
        candidates = self.owned.by_index(BY_CONTROLLER_UID, uid_of(owner)) + self.owned.by_index(
            ORPHANS_BY_NAMESPACE, namespace_of(owner)
        )
        if only is not None:
            candidates = [c for c in candidates if only(c)]
        return await self.ref_manager.claim(owner, candidates, match)

    async def write_status(self, owner: Obj, new_status: Mapping[str, Any]) -> Obj:
        """PUT the status subresource (the caller decided it changed); the updated owner, or the
        cached one when it is gone."""
        updated = await update_status_with_retry(self.client, self.owner_gvr, owner, new_status)
        return updated or owner

    async def record_hash_collision(self, owner: Obj, taken: str) -> None:
        """A name made from the template hash is taken by an object that is not ours: bump
        status.collisionCount, so the next hash (and name) differs."""
        st = dict(status(owner))
        st["collisionCount"] = int_field(st, "collisionCount") + 1
        log.info(
            "%s: hash collision on %s; collisionCount now %d", key_of(owner), taken, st["collisionCount"]
        )
        await self.write_status(owner, st)

    def wake_when_available(self, owner: Mapping[str, Any], waiting: bool) -> None:
        """Pods ready but not yet ready for minReadySeconds: look again when they may be."""
        min_ready = int_field(spec(owner), "minReadySeconds")
        if min_ready > 0 and waiting:
            self.enqueue_after(key_of(owner), float(min_ready))


class PodControl:
    """Create and delete an owner's pods against its expectations (kube's PodControl plus the
    expectation bookkeeping every pod owner repeats): expect first, then act, and lower the
    expectation for every creation or deletion that will never show up in the cache."""

    def __init__(
        self,
        client: ApiClient,
        expectations: UIDTrackingControllerExpectations,
        recorder: EventRecorder,
        initial_batch: int = 1,
    ) -> None:
        self.client = client
        self.expectations = expectations
        self.recorder = recorder
        self.initial_batch = initial_batch

    async def sync_pods(
        self,
        key: str,
        owner: Obj,
        creations: int,
        next_body: Callable[[], Obj],
        victims: list[Mapping[str, Any]],
    ) -> None:
        """Create `creations` pods (bodies from `next_body`, which may raise ValueError for a bad
        template) in slow-start batches, then delete `victims`; raise the first error."""
        if not creations and not victims:
            return
        self.expectations.expect(key, creations, [key_of(p) for p in victims])
        errors: list[ApiError] = []
        ns = namespace_of(owner)

        async def create_one() -> None:
            try:
                body = next_body()
            except ValueError as exc:
                raise ApiError(422, "Invalid", str(exc)) from None
            try:
                pod = await self.client.create(*PODS, body, namespace=ns)
            except ApiError as exc:
                if namespace_terminating(exc):
                    return  # every create fails now; the namespace is going away
                self.recorder.warning(owner, "FailedCreate", f"Error creating: {exc.message}")
                raise
            self.recorder.normal(owner, "SuccessfulCreate", f"Created pod: {name_of(pod)}")

        if creations:
            successes, err = await slow_start_batch(creations, self.initial_batch, create_one)
            for _ in range(creations - successes):  # failed or never tried: they will not show up
                self.expectations.creation_observed(key)
            if err is not None:
                if not isinstance(err, ApiError):
                    raise err
                errors.append(err)

        async def delete_one(pod: Mapping[str, Any]) -> None:
            try:
                await self.client.delete(*PODS, name_of(pod), namespace=namespace_of(pod))
            except ApiError as exc:
                self.expectations.deletion_observed_of(key, key_of(pod))
                if not isinstance(exc, NotFound):
                    self.recorder.warning(owner, "FailedDelete", f"Error deleting: {exc.message}")
                    errors.append(exc)
                return
            self.recorder.normal(owner, "SuccessfulDelete", f"Deleted pod: {name_of(pod)}")

        await asyncio.gather(*(delete_one(p) for p in victims))
        if errors:
            raise errors[0]


class PodOwnerController(WorkloadController):
    """A WorkloadController whose owned objects are pods (ReplicaSet, DaemonSet): it tracks
    expectations, creates and deletes through `pod_control`, and wakes on pod readiness."""

    owned_gvr = PODS
    wake_on_pod_ready = True
    component = ""
    initial_batch = 1

    def __init__(self, ctx: ControllerContext) -> None:
        self.expectations = UIDTrackingControllerExpectations()
        super().__init__(ctx)
        self.pod_informer = self.owned
        self.recorder = ctx.recorder(self.component)
        self.pod_control = PodControl(self.client, self.expectations, self.recorder, self.initial_batch)


class RevisionOwnerController(PodOwnerController):
    """A PodOwnerController that keeps its template history as ControllerRevisions (DaemonSet,
    StatefulSet): the revision informer and claim, and kube's constructHistory, dedupCurHistories
    and cleanupHistory as I/O around the pure decisions of `revisions`.

    Pods name their revision in the `controller-revision-hash` label; `pod_revision_label(rev)`
    says which value that is (the revision's hash for DaemonSets, its name for StatefulSets)."""

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.revision_informer = self.informer(
            CONTROLLERREVISIONS,
            indexers={
                BY_CONTROLLER_UID: index_by_controller_uid,
                ORPHANS_BY_NAMESPACE: index_orphans_by_namespace,
            },
        )
        self.revision_refs = ControllerRefManager(
            self.client, self.owner_gvr, CONTROLLERREVISIONS, self.api_version, self.kind
        )
        self.revision_informer.add_handler(
            self._revision_changed, lambda old, cur: self._revision_changed(cur), self._revision_changed
        )

    def pod_revision_label(self, rev: Mapping[str, Any]) -> str:
        return revision_hash(rev)

    def _revision_changed(self, rev: Obj) -> None:
        for owner in self.owners_of(rev):
            self.enqueue_obj(owner)

    async def construct_history(self, owner: Obj) -> tuple[Obj, list[Obj]] | None:
        """constructHistory: claim the owner's ControllerRevisions and make exactly one of them
        current, at the top of the history. The current revision and the old ones; None when
        revisions were relabelled (their events bring the owner back)."""
        try:
            sel = selector_from_object(spec(owner).get("selector"))
        except SelectorError:
            sel = None
        candidates = self.revision_informer.by_index(BY_CONTROLLER_UID, uid_of(owner))
        candidates += self.revision_informer.by_index(ORPHANS_BY_NAMESPACE, namespace_of(owner))
        revisions = await self.revision_refs.claim(
            owner, candidates, lambda r: sel is not None and not sel.empty and sel.matches(labels_of(r))
        )
        ref = new_controller_ref(owner, self.api_version, self.kind)
        plan = plan_history(owner, revisions, ref)
        if plan.label:
            for rev in plan.label:
                await ignore_missing(self.client.update(*CONTROLLERREVISIONS, rev))
            return None
        if plan.create is not None:
            current = await self._create_revision(owner, plan.create)
        elif plan.current is not None and plan.renumber is not None:
            current = await self.client.update(
                *CONTROLLERREVISIONS, {**plan.current, "revision": plan.renumber}
            )
        else:
            current = plan.current or {}
        for dup in plan.duplicates:
            await self._dedup(owner, dup, current)
        return current, plan.old

    async def _create_revision(self, owner: Obj, rev: Obj) -> Obj:
        """Create the current revision; a name taken by ours with the same data is a stale cache,
        by anything else a hash collision: bump status.collisionCount (a new name) and retry."""
        ns = namespace_of(owner)
        try:
            return await self.client.create(*CONTROLLERREVISIONS, rev, namespace=ns)
        except AlreadyExists:
            existing = await self.client.get(*CONTROLLERREVISIONS, name_of(rev), namespace=ns)
        if controlled_by(existing, uid_of(owner)) and matches(owner, existing):
            return existing
        await self.record_hash_collision(owner, name_of(rev))
        raise AlreadyExists(
            409, "AlreadyExists", f"controllerrevision {name_of(rev)!r} exists (hash collision)"
        )

    async def _dedup(self, owner: Obj, dup: Obj, keep: Mapping[str, Any]) -> None:
        """dedupCurHistories: pods of a duplicate current revision move to the kept one, then the
        duplicate goes."""
        dup_label, keep_label = self.pod_revision_label(dup), self.pod_revision_label(keep)
        for pod in self.pod_informer.by_index(BY_CONTROLLER_UID, uid_of(owner)):
            if labels_of(pod).get(REVISION_HASH_LABEL) == dup_label:
                patch = {"metadata": {"labels": {REVISION_HASH_LABEL: keep_label}}}
                await ignore_missing(
                    self.client.patch(*PODS, name_of(pod), patch, namespace=namespace_of(pod))
                )
        await ignore_missing(
            self.client.delete(*CONTROLLERREVISIONS, name_of(dup), namespace=namespace_of(dup))
        )

    async def prune_history(
        self, owner: Mapping[str, Any], old: list[Obj], pods: Iterable[Mapping[str, Any]] = ()
    ) -> None:
        """cleanupHistory: delete the oldest `old` revisions beyond revisionHistoryLimit, never
        one a pod of `pods` still runs."""
        for rev in revisions_to_prune(owner, old, pods):
            await ignore_missing(
                self.client.delete(*CONTROLLERREVISIONS, name_of(rev), namespace=namespace_of(rev))
            )
