"""One store stream per resource, shared by every watch of it (kube-apiserver's watch cache).

Without it, a hundred node agents each watching "pods on my node" would be a hundred store
streams carrying every pod event, each decoded again. Here the first watch of a resource starts a
stream of the whole resource (all namespaces) from its resourceVersion; the decoded events go to
every subscriber whose namespace/name they concern, and the most recent ones are kept, so a
watch that starts a little in the past (the usual list-then-watch) is served from memory. A watch
that starts before what the cache holds is served by its own store stream, which answers 410
Expired when the store no longer has that history either. The objects this server writes are
handed over by the write path (`written`), so their events need not decode the store's JSON
again for the watchers that look into objects (selectors, tables, metadata-only watches).

A subscriber that cannot keep up is not allowed to hold memory without bound: its watch ends
(cleanly, as kube-apiserver ends slow watchers) and the client resumes from the last version it
saw. Store streams never lose events (`kvstore.client.watch_stream` resumes across member
failures), so neither does a watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from orchestrator.resources import Resource

from . import errors
from .storage import Storage, StoreEvent

log = logging.getLogger("grove.apiserver")

Item = StoreEvent | errors.ApiError | None  # None: the stream ended
# The most recent events of a cache that keep their decoded objects, for the watchers still
# working through them. Few: what is kept decoded is most of the server's working set, and
# allocating and freeing objects in memory the CPU cache has lost costs more than decoding.
DECODED_EVENTS = 256
WRITTEN_OBJECTS = 1024  # objects this server wrote whose events have not come back yet


class EventSink:
    """The events waiting for one watch response. `push` never blocks (the shared cache must not
    wait for one slow client); `put` does (a private store stream can simply slow down)."""

    def __init__(self, limit: int = 4096) -> None:
        self.items: deque[Item] = deque()
        self.limit = limit
        self.closed = False
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def push(self, item: Item) -> bool:
        """Queue an item; False (and the watch ends) when the client is too far behind."""
        if self.closed:
            return False
        if len(self.items) >= self.limit:
            self.close()
            return False
        self.items.append(item)
        self._ready.set()
        return True

    async def put(self, item: Item) -> None:
        while len(self.items) >= self.limit and not self.closed:
            self._space.clear()
            await self._space.wait()
        if not self.closed:
            self.items.append(item)
            self._ready.set()

    def close(self) -> None:
        """End the watch after what is queued (the client re-watches from its last version)."""
        if not self.closed:
            self.closed = True
            self.items.append(None)
            self._ready.set()

    async def take(self, timeout: float, max_items: int = 256) -> list[Item] | None:
        """Up to `max_items` queued items; None when nothing came within `timeout` seconds."""
        if not self.items:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        batch = []
        while self.items and len(batch) < max_items:
            batch.append(self.items.popleft())
        if len(self.items) < self.limit // 2:
            self._space.set()
        return batch


class _Subscriber:
    __slots__ = ("name", "namespace", "node", "since", "sink")

    def __init__(
        self, sink: EventSink, namespace: str | None, name: str | None, since: int, node: str | None = None
    ) -> None:
        self.sink = sink
        self.namespace = namespace
        self.name = name
        self.since = since
        self.node = node  # only pods on (or leaving) this node, by spec.nodeName

    def wants(self, ev: StoreEvent) -> bool:
        if ev.rv < self.since:
            return False
        if self.namespace is not None and ev.namespace != self.namespace:
            return False
        if self.name is not None and ev.name != self.name:
            return False
        return self.node is None or self.node in _nodes_of(ev)


def _node_name(obj: dict[str, Any] | None) -> str:
    spec = obj.get("spec") if obj is not None else None
    return (spec.get("nodeName") or "") if isinstance(spec, dict) else ""


def _nodes_of(ev: StoreEvent) -> tuple[str, str]:
    """The node a pod is on after the change and before it (a pod leaving a node concerns it)."""
    return _node_name(ev.object), _node_name(ev.old)


class ResourceCache:
    """The shared stream and recent history of one resource."""

    def __init__(self, storage: Storage, res: Resource, since: int, size: int) -> None:
        self.storage = storage
        self.res = res
        self.size = size
        self.history: deque[StoreEvent] = deque()
        self.covered_from = since - 1  # every event after this version is in `history` or still coming
        self.subscribers: set[_Subscriber] = set()
        # Watches of the pods of one node (every node agent has one): found by the pod's node
        # instead of asking each of a thousand watches whether it wants an event.
        self.by_node: dict[str, set[_Subscriber]] = {}
        # The latest stored state of each object changed since the cache started: (rv, JSON).
        self.latest: dict[tuple[str | None, str], tuple[int, str]] = {}
        # Objects this server just wrote, by resourceVersion: (namespace, name, object, the
        # object it replaced or None). Their events take them instead of decoding the store's JSON.
        self.written: dict[int, tuple[str | None, str, dict[str, Any], dict[str, Any] | None]] = {}
        self.last_rv = since - 1
        # The events that may still keep decoded objects (the last DECODED_EVENTS), by version.
        self.recent: dict[int, StoreEvent] = {}
        self.failed = False
        self.task = asyncio.create_task(self._run(since), name=f"watchcache-{res.resource}")

    def covers(self, since: int) -> bool:
        return not self.failed and since - 1 >= self.covered_from

    def subscribe(
        self, sink: EventSink, namespace: str | None, name: str | None, since: int, node: str | None = None
    ) -> _Subscriber:
        sub = _Subscriber(sink, namespace, name, since, node)
        # Replay and registration happen without a suspension point: no event slips between them.
        for ev in self.history:
            if sub.wants(ev) and not sink.push(ev):
                return sub
        if node is None:
            self.subscribers.add(sub)
        else:
            self.by_node.setdefault(node, set()).add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        if sub.node is None:
            self.subscribers.discard(sub)
            return
        subs = self.by_node.get(sub.node)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.by_node[sub.node]

    def remember_written(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        rv = int(meta["resourceVersion"])
        ns = meta.get("namespace") if self.res.namespaced else None
        entry = (ns, meta["name"], obj, old)
        if rv <= self.last_rv:
            # Its event came back first; its watchers have likely not looked at it yet.
            ev = self.recent.get(rv)
            if ev is not None:
                self._attach(ev, entry)
            return
        self.written[rv] = entry
        if len(self.written) > WRITTEN_OBJECTS:
            del self.written[next(iter(self.written))]

    def _take_written(self, ev: StoreEvent) -> None:
        found = self.written.pop(ev.rv, None)
        if found is not None:
            self._attach(ev, found)

    @staticmethod
    def _attach(ev: StoreEvent, found: tuple[str | None, str, dict[str, Any], dict[str, Any] | None]) -> None:
        if found[0] != ev.namespace or found[1] != ev.name or ev.type == "DELETED":
            return
        old = found[3]
        if old is not None and old["metadata"].get("resourceVersion") != str(ev.old_rv):
            old = None
        ev.attach(found[2], old)

    def _deliver(self, ev: StoreEvent) -> None:
        dropped = [sub for sub in self.subscribers if sub.wants(ev) and not sub.sink.push(ev)]
        if self.by_node:
            now, before = _nodes_of(ev)
            for node in (now, before) if before != now else (now,):
                for sub in self.by_node.get(node, ()):
                    if sub.wants(ev) and not sub.sink.push(ev):
                        dropped.append(sub)
        for sub in dropped:
            self.unsubscribe(sub)

    async def _run(self, since: int) -> None:
        try:
            async for ev in self.storage.watch(self.res, None, since):
                self.last_rv = ev.rv
                if self.written:
                    self._take_written(ev)
                self.recent[ev.rv] = ev
                if len(self.recent) > DECODED_EVENTS:
                    del self.recent[next(iter(self.recent))]
                self.history.append(ev)
                if len(self.history) > self.size:
                    self.covered_from = self.history.popleft().rv
                if len(self.history) > DECODED_EVENTS:
                    # Only recent events keep their decoded objects for the watchers still
                    # working through them; older ones decode again if a new watch replays them.
                    self.history[-DECODED_EVENTS - 1].forget_decoded()
                if ev.type == "DELETED":
                    self.latest.pop((ev.namespace, ev.name), None)
                else:
                    self.latest[(ev.namespace, ev.name)] = (ev.rv, ev.value)
                self._deliver(ev)
            end: errors.ApiError | None = None
        except asyncio.CancelledError:
            end = None
            raise
        except errors.ApiError as exc:
            end = exc
        except Exception as exc:
            log.exception("watch cache of %s failed", self.res.resource)
            end = errors.internal(f"watch of {self.res.resource} failed: {exc}")
        finally:
            self.failed = True
            for sub in [*self.subscribers, *(s for subs in self.by_node.values() for s in subs)]:
                if end is not None:
                    sub.sink.push(end)
                sub.sink.close()
            self.subscribers.clear()
            self.by_node.clear()
            self.latest.clear()
            self.written.clear()
            self.recent.clear()


class WatchCaches:
    """The watch caches of one API server, by resource."""

    def __init__(self, storage: Storage, size: int = 10000) -> None:
        self.storage = storage
        self.size = size
        self._caches: dict[tuple[str, str], ResourceCache] = {}

    async def pump(
        self,
        res: Resource,
        namespace: str | None,
        name: str | None,
        since: int,
        sink: EventSink,
        node: str | None = None,
    ) -> None:
        """Feed the changes after `since` into `sink` until cancelled or the stream ends; with
        `node`, only changes of pods on that node or leaving it (a hint: the watch still filters)."""
        cache = self._cache_for(res, since) if self.size > 0 else None
        if cache is not None:
            sub = cache.subscribe(sink, namespace, name, since, node)
            try:
                await asyncio.Future()  # until the watch response ends and cancels this
            finally:
                cache.unsubscribe(sub)
        try:
            async for ev in self.storage.watch(res, namespace, since, name):
                await sink.put(ev)
                if sink.closed:
                    return
            await sink.put(None)
        except errors.ApiError as exc:
            sink.push(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("watch of %s failed", res.resource)
            sink.push(errors.internal(f"watch of {res.resource} failed: {exc}"))

    def _cache_for(self, res: Resource, since: int) -> ResourceCache | None:
        key = (res.group, res.resource)
        cache = self._caches.get(key)
        if cache is not None and cache.failed:
            cache = None
        if cache is None:
            cache = self._caches[key] = ResourceCache(self.storage, res, since, self.size)
            return cache
        return cache if cache.covers(since) else None

    def written(self, res: Resource, obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        """An object this server has just stored (with its new resourceVersion) and, for an update,
        the one it replaced: the resource's cache hands them to the change's event instead of
        decoding the store's JSON again. Neither may be changed afterwards."""
        cache = self._caches.get((res.group, res.resource))
        if cache is not None and not cache.failed and (cache.subscribers or cache.by_node):
            cache.remember_written(obj, old)

    def decoded(self, res: Resource, namespace: str | None, name: str, rv: int) -> dict[str, Any] | None:
        """The object at version `rv` as a recent event already holds it decoded (shared: the
        caller must not change it), or None."""
        cache = self._caches.get((res.group, res.resource))
        ev = cache.recent.get(rv) if cache is not None else None
        if ev is None or ev.name != name or ev.namespace != (namespace if res.namespaced else None):
            return None
        return ev.decoded()

    def latest(self, res: Resource, namespace: str | None, name: str) -> tuple[int, str] | None:
        """(resourceVersion, stored JSON) of an object as the shared stream last saw it, if it saw
        it change: a hint for a read-modify-write, which the store's compare-and-swap confirms."""
        cache = self._caches.get((res.group, res.resource))
        if cache is None or cache.failed:
            return None
        return cache.latest.get((namespace if res.namespaced else None, name))

    async def stop(self) -> None:
        caches, self._caches = list(self._caches.values()), {}
        for cache in caches:
            cache.task.cancel()
        for cache in caches:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await cache.task

    def stats(self) -> dict[str, Any]:
        return {
            f"{g}/{r}" if g else r: {
                "subscribers": len(c.subscribers) + sum(len(subs) for subs in c.by_node.values()),
                "history": len(c.history),
            }
            for (g, r), c in self._caches.items()
        }
