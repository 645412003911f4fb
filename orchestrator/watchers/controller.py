"""The controller shape every grove control loop shares: informers -> keys -> WorkQueue -> sync(key).

A controller is a name and a `sync(key)` coroutine. `Controller.watch(informer, key_fn)` makes the
informer's add/update/delete handlers put keys on the controller's queue — the object's own key,
or the key of whatever should react to it (a pod's ReplicaSet: `owner_key("ReplicaSet")`). Workers
then call `sync(key)`, which reads the current state from informer caches and takes one step
toward the desired state; it must be safe to run twice, and nothing may depend on seeing every
event (kubernetes/sample-controller's shape, level-triggered). The queue guarantees one worker per
key at a time and retries failures with back-off.

`InformerFactory` shares one informer per resource (and scope) among the controllers of a process,
so five controllers that read pods cost one list and one watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

from orchestrator.apiclient import ApiClient, Obj

from .informer import IndexFn, Informer, object_key
from .queue import DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY, WorkQueue, WorkQueueMetrics, run_workers

log = logging.getLogger(__name__)

# Maps an object to the key(s) to reconcile because of it (None: nothing to do).
KeyFn = Callable[[Obj], "Iterable[str] | str | None"]
SyncFn = Callable[[str], Awaitable[None]]


def owner_key(kind: str, api_version: str | None = None) -> KeyFn:
    """A KeyFn mapping an object to its controlling owner's key when the owner is a `kind`
    (e.g. pods to their ReplicaSet's `namespace/name`); objects without one map to nothing."""

    def key_fn(obj: Obj) -> str | None:
        meta = obj.get("metadata") or {}
        for ref in meta.get("ownerReferences") or ():
            if not ref.get("controller") or ref.get("kind") != kind:
                continue
            if api_version is not None and ref.get("apiVersion") != api_version:
                continue
            ns = meta.get("namespace")
            return f"{ns}/{ref['name']}" if ns else ref["name"]
        return None

    return key_fn


def _keys(fn: KeyFn, obj: Obj) -> tuple[str, ...]:
    try:
        keys = fn(obj)
    except Exception:
        log.exception("key function %r failed on %s", fn, object_key(obj))
        return ()
    if keys is None:
        return ()
    return (keys,) if isinstance(keys, str) else tuple(keys)


async def wait_synced(*informers: Informer, timeout: float | None = None) -> None:
    """Wait until every informer has its first list (TimeoutError after `timeout` seconds)."""
    await asyncio.wait_for(asyncio.gather(*(i.wait_synced() for i in informers)), timeout)


class Controller:
    """A sync function, a work queue, and the informer handlers that feed it."""

    def __init__(
        self,
        name: str,
        sync: SyncFn,
        *,
        workers: int = 1,
        metrics: WorkQueueMetrics | None = None,
        base_delay: float = DEFAULT_BASE_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        self.name = name
        self.sync = sync
        self.workers = workers
        self.queue = WorkQueue(name, base_delay=base_delay, max_delay=max_delay, metrics=metrics)
        self._informers: list[Informer] = []

    def watch(self, informer: Informer, key_fn: KeyFn = object_key) -> None:
        """Enqueue `key_fn(obj)` whenever an object of `informer` is added, changed or deleted
        (on a change, the keys of the old and the new version: an orphaned pod wakes its old owner)."""
        if informer not in self._informers:
            self._informers.append(informer)

        def on_add(obj: Obj) -> None:
            for key in _keys(key_fn, obj):
                self.queue.add(key)

        def on_update(old: Obj, new: Obj) -> None:
            keys = _keys(key_fn, new)
            for key in keys:
                self.queue.add(key)
            if old is not new:
                for key in _keys(key_fn, old):
                    if key not in keys:
                        self.queue.add(key)

        informer.add_handler(on_add, on_update, on_add)

    def enqueue(self, key: Hashable) -> None:
        self.queue.add(key)

    def enqueue_after(self, key: Hashable, delay: float) -> None:
        self.queue.add_after(key, delay)

    async def run(self) -> None:
        """Wait for the watched informers' caches, then run the workers until cancelled.
        (The informers themselves run elsewhere, e.g. started by an InformerFactory.)"""
        try:
            await wait_synced(*self._informers)
            log.info("%s: caches synced, starting %d worker(s)", self.name, self.workers)
            await run_workers(self.queue, self.sync, self.workers)
        finally:
            self.queue.shutdown()


class InformerFactory:
    """One shared informer per (resource, namespace, selectors) for all controllers of a process."""

    def __init__(self, client: ApiClient, **informer_options: Any) -> None:
        self.client = client
        self.informer_options = informer_options
        self._informers: dict[tuple[Any, ...], Informer] = {}
        self._tasks: dict[tuple[Any, ...], asyncio.Task[None]] = {}

    def informer(
        self,
        group: str,
        version: str,
        resource: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: dict[str, IndexFn] | None = None,
    ) -> Informer:
        """The shared informer for this scope (created on first use); indexers are added to it."""
        key = (group, version, resource, namespace, label_selector, field_selector)
        inf = self._informers.get(key)
        if inf is None:
            inf = Informer(
                self.client, group, version, resource,
                namespace=namespace, label_selector=label_selector, field_selector=field_selector,
                **self.informer_options,
            )  # fmt: skip
            self._informers[key] = inf
        for name, fn in (indexers or {}).items():
            try:
                inf.add_indexer(name, fn)
            except ValueError:
                pass  # another consumer asked for it already; an indexer name means one function
        return inf

    def start(self) -> None:
        """Start every informer not running yet (call again after asking for more)."""
        for key, inf in self._informers.items():
            task = self._tasks.get(key)
            if task is None or task.done():
                self._tasks[key] = asyncio.create_task(inf.run(), name=f"informer {inf.resource}")

    async def wait_synced(self, timeout: float | None = None) -> None:
        await wait_synced(*self._informers.values(), timeout=timeout)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
