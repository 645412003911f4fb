"""A work queue of object keys: what makes a controller level-triggered and one-object-one-sequence.

Informer handlers only put keys (`namespace/name`) here; workers take a key, read the object's
current state from a cache and reconcile it. The queue keeps the guarantees client-go's
workqueue keeps, in asyncio:

- a key added while it waits is stored once (ten changes of one pod, one sync);
- a key added while a worker holds it is handed out again only after that worker's `done`, so two
  workers never reconcile one object at once, and the last change is never missed;
- failures are retried per key with exponential back-off (`add_rate_limited`: 5 ms doubling up to
  a cap, as client-go's default), and `forget` resets the count once a sync succeeds;
- `add_after` delays a key (requeue a pod when its grace period ends), keeping the earliest time.

`run_workers` is the standard worker loop around a `sync(key)` coroutine.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from orchestrator.apiclient import ApiError

log = logging.getLogger(__name__)

DEFAULT_BASE_DELAY = 0.005
DEFAULT_MAX_DELAY = 1000.0  # client-go's DefaultControllerRateLimiter caps at 1000 s too

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class QueueShutDown(Exception):
    """`get()` on a queue that was shut down: the worker should return."""


class WorkQueueMetrics:
    """The workqueue_* metrics client-go exports, labelled by queue name: create one per registry
    and share it among the queues of a process (registry None: collected nowhere, for tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw: dict[str, Any] = {"registry": registry}
        self.depth = Gauge("workqueue_depth", "Keys waiting to be processed", ["name"], **kw)
        self.adds = Counter("workqueue_adds", "Keys added (before de-duplication)", ["name"], **kw)
        self.retries = Counter("workqueue_retries", "Keys re-added after a failed sync", ["name"], **kw)
        self.queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "Time a key waits before a worker takes it",
            ["name"],
            buckets=_LATENCY_BUCKETS,
            **kw,
        )
        self.work_duration = Histogram(
            "workqueue_work_duration_seconds",
            "Time a worker holds a key (the sync latency)",
            ["name"],
            buckets=_LATENCY_BUCKETS,
            **kw,
        )


@dataclass(order=True)
class _Delayed:
    ready_at: float
    key: Hashable = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class WorkQueue:
    """De-duplicating, rate-limited, delaying queue of keys for one event loop."""

    def __init__(
        self,
        name: str = "",
        *,
        base_delay: float = DEFAULT_BASE_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        metrics: WorkQueueMetrics | None = None,
    ) -> None:
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()  # queued or to be re-queued on done
        self._processing: set[Hashable] = set()
        self._added_at: dict[Hashable, float] = {}
        self._started_at: dict[Hashable, float] = {}
        self._failures: dict[Hashable, int] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        self._delayed: list[_Delayed] = []  # heap; stale entries marked cancelled
        self._delayed_by_key: dict[Hashable, _Delayed] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._shutting_down = False
        self._metrics = metrics

    # --- plain queue ------------------------------------------------------------------------

    def add(self, key: Hashable) -> None:
        """Queue a key (once, however often it is added before a worker takes it)."""
        if self._shutting_down:
            return
        if key in self._dirty:
            return
        if self._metrics:
            self._metrics.adds.labels(self.name).inc()
        self._dirty.add(key)
        self._added_at.setdefault(key, time.monotonic())
        if key in self._processing:
            return  # handed out again on done()
        self._queue.append(key)
        self._update_depth()
        self._wake_one()

    async def get(self) -> Hashable:
        """The next key, which the caller now holds until `done(key)`; QueueShutDown once shut down."""
        while not self._queue:
            if self._shutting_down:
                raise QueueShutDown(self.name)
            fut = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut in self._getters:
                    self._getters.remove(fut)
                elif self._queue:
                    self._wake_one()  # pass on the wake-up this getter took
                raise
        if self._shutting_down:
            raise QueueShutDown(self.name)
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        now = time.monotonic()
        added = self._added_at.pop(key, None)
        self._started_at[key] = now
        if self._metrics and added is not None:
            self._metrics.queue_duration.labels(self.name).observe(now - added)
        self._update_depth()
        return key

    def done(self, key: Hashable) -> None:
        """The caller is finished with `key`; if it was added meanwhile, it is queued again."""
        if key not in self._processing:
            return
        self._processing.discard(key)
        started = self._started_at.pop(key, None)
        if self._metrics and started is not None:
            self._metrics.work_duration.labels(self.name).observe(time.monotonic() - started)
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._update_depth()
            self._wake_one()

    def __len__(self) -> int:
        """Keys waiting for a worker (not those being processed or delayed)."""
        return len(self._queue)

    def len(self) -> int:
        return len(self._queue)

    @property
    def processing(self) -> frozenset[Hashable]:
        return frozenset(self._processing)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shutdown(self) -> None:
        """Stop handing out keys: waiting and later `get()` calls raise QueueShutDown; adds are
        ignored. Keys being processed may still be `done`."""
        self._shutting_down = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._delayed.clear()
        self._delayed_by_key.clear()
        self._queue.clear()
        self._update_depth()
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)

    # --- delays and retries ------------------------------------------------------------------

    def add_after(self, key: Hashable, delay: float) -> None:
        """Queue `key` after `delay` seconds (at once if delay <= 0). Of several pending delays of
        one key the earliest wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        ready_at = time.monotonic() + delay
        pending = self._delayed_by_key.get(key)
        if pending is not None:
            if pending.ready_at <= ready_at:
                return
            pending.cancelled = True
        entry = _Delayed(ready_at, key)
        self._delayed_by_key[key] = entry
        heapq.heappush(self._delayed, entry)
        self._arm_timer()

    def when(self, key: Hashable) -> float:
        """The back-off of the next retry of `key` (and count this failure)."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return min(self.base_delay * 2.0 ** min(failures, 64), self.max_delay)

    def add_rate_limited(self, key: Hashable) -> None:
        """Queue `key` again after its per-key exponential back-off."""
        if self._shutting_down:
            return
        if self._metrics:
            self._metrics.retries.labels(self.name).inc()
        self.add_after(key, self.when(key))

    def forget(self, key: Hashable) -> None:
        """The key synced: its next failure starts the back-off from the base again."""
        self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    # --- internals -----------------------------------------------------------------------------

    def _wake_one(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _update_depth(self) -> None:
        if self._metrics:
            self._metrics.depth.labels(self.name).set(len(self._queue))

    def _arm_timer(self) -> None:
        while self._delayed and self._delayed[0].cancelled:
            heapq.heappop(self._delayed)
        if not self._delayed:
            return
        loop = asyncio.get_running_loop()
        first = self._delayed[0].ready_at
        if self._timer is not None:
            if self._timer_at == first:
                return
            self._timer.cancel()
        delay = max(0.0, first - time.monotonic())
        self._timer_at = first
        self._timer = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        now = time.monotonic()
        while self._delayed and (self._delayed[0].cancelled or self._delayed[0].ready_at <= now):
            entry = heapq.heappop(self._delayed)
            if entry.cancelled:
                continue
            del self._delayed_by_key[entry.key]
            self.add(entry.key)
        if self._delayed:
            self._arm_timer()


SyncFn = Callable[[Any], Awaitable[None]]


async def run_workers(queue: WorkQueue, sync: SyncFn, n: int = 1) -> None:
    """Run `n` workers that take keys from `queue` and `await sync(key)` until the queue shuts
    down: a failed sync is logged and retried with back-off, a good one resets the key's back-off,
    and the key is always handed back with `done`. Cancelling this cancels the workers."""

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except QueueShutDown:
                return
            try:
                await sync(key)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                # Conflicts and vanished objects are routine for a controller: one line, no traceback.
                log.info("%s: sync of %s failed, will retry: %s", queue.name or "queue", key, exc)
                queue.add_rate_limited(key)
            except Exception:
                log.exception("%s: sync of %s failed, will retry", queue.name or "queue", key)
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
            finally:
                queue.done(key)

    async with asyncio.TaskGroup() as tg:
        for _ in range(max(1, n)):
            tg.create_task(worker())
