"""One store stream per resource, shared by every watch of it (kube-apiserver's watch cache).

Without it, a hundred node agents each watching "pods on my node" would be a hundred store
streams carrying every pod event, each decoded again. Here the first watch of a resource starts a
stream of the whole resource (all namespaces) from its resourceVersion; the decoded events go to
every subscriber whose namespace/name they concern, and the most recent ones are kept, so a
watch that starts a little in the past (the usual list-then-watch) is served from memory. A watch
that starts before what the cache holds is served by its own store stream, which answers 410
Expired when the store no longer has that history either.

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
    __slots__ = ("name", "namespace", "since", "sink")

    def __init__(self, sink: EventSink, namespace: str | None, name: str | None, since: int) -> None:
        self.sink = sink
        self.namespace = namespace
        self.name = name
        self.since = since

    def wants(self, ev: StoreEvent) -> bool:
        if ev.rv < self.since:
            return False
        meta = ev.object.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.name is None or meta.get("name") == self.name


class ResourceCache:
    """The shared stream and recent history of one resource."""

    def __init__(self, storage: Storage, res: Resource, since: int, size: int) -> None:
        self.storage = storage
        self.res = res
        self.size = size
        self.history: deque[StoreEvent] = deque()
        self.covered_from = since - 1  # every event after this version is in `history` or still coming
        self.subscribers: set[_Subscriber] = set()
        self.failed = False
        self.task = asyncio.create_task(self._run(since), name=f"watchcache-{res.resource}")

    def covers(self, since: int) -> bool:
        return not self.failed and since - 1 >= self.covered_from

    def subscribe(self, sink: EventSink, namespace: str | None, name: str | None, since: int) -> _Subscriber:
        sub = _Subscriber(sink, namespace, name, since)
        # Replay and registration happen without a suspension point: no event slips between them.
        for ev in self.history:
            if sub.wants(ev) and not sink.push(ev):
                return sub
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        self.subscribers.discard(sub)

    async def _run(self, since: int) -> None:
        try:
            async for ev in self.storage.watch(self.res, None, since):
                self.history.append(ev)
                if len(self.history) > self.size:
                    self.covered_from = self.history.popleft().rv
                dropped = []
                for sub in self.subscribers:
                    if sub.wants(ev) and not sub.sink.push(ev):
                        dropped.append(sub)
                for sub in dropped:
                    self.subscribers.discard(sub)
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
            for sub in list(self.subscribers):
                if end is not None:
                    sub.sink.push(end)
                sub.sink.close()
            self.subscribers.clear()


class WatchCaches:
    """The watch caches of one API server, by resource."""

    def __init__(self, storage: Storage, size: int = 10000) -> None:
        self.storage = storage
        self.size = size
        self._caches: dict[tuple[str, str], ResourceCache] = {}

    async def pump(
        self, res: Resource, namespace: str | None, name: str | None, since: int, sink: EventSink
    ) -> None:
        """Feed the changes after `since` into `sink` until cancelled or the stream ends."""
        cache = self._cache_for(res, since) if self.size > 0 else None
        if cache is not None:
            sub = cache.subscribe(sink, namespace, name, since)
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

    async def stop(self) -> None:
        caches, self._caches = list(self._caches.values()), {}
        for cache in caches:
            cache.task.cancel()
        for cache in caches:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await cache.task

    def stats(self) -> dict[str, Any]:
        return {
            f"{g}/{r}" if g else r: {"subscribers": len(c.subscribers), "history": len(c.history)}
            for (g, r), c in self._caches.items()
        }
