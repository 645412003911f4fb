"""The scheduling queue: which pending pod to try next, and when to try a pod that fit nowhere.

Three places a pod waits, as in kube-scheduler's PriorityQueue:
- *active*: ready to be tried, highest `spec.priority` first, then first come first served;
- *backoff*: failed recently; becomes active when its back-off (1 s doubling per failed
  attempt, capped at 10 s) has passed;
- *unschedulable*: fit nowhere last time and nothing has changed since. It stays parked until
  the cluster changes in a way that could make room (`move_all`: a node added or changed, a pod
  deleted) — then it goes to backoff or active — or until it has waited `unschedulable_timeout`.
So a pod that cannot fit costs nothing while the cluster is quiet, and a burst of cluster events
retries it at most once per back-off period: no busy loop. Pure: time comes from `clock`.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_INITIAL_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 10.0
DEFAULT_UNSCHEDULABLE_TIMEOUT = 300.0


@dataclass
class _Entry:
    key: str
    priority: int = 0
    attempts: int = 0
    last_failure: float = 0.0
    parked_at: float = 0.0
    where: str = ""  # active | backoff | unschedulable | scheduling | deleted


class SchedulingQueue:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        unschedulable_timeout: float = DEFAULT_UNSCHEDULABLE_TIMEOUT,
    ) -> None:
        self.clock = clock
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.unschedulable_timeout = unschedulable_timeout
        self._entries: dict[str, _Entry] = {}
        # Heaps hold (order, seq, key); entries that moved on since are skipped when they surface.
        self._active: list[tuple[int, int, str]] = []
        self._backoff: list[tuple[float, int, str]] = []
        self._unschedulable: dict[str, _Entry] = {}  # in the order they were parked
        self._seq = itertools.count()

    # -- adding and removing -----------------------------------------------------------------

    def add(self, key: str, priority: int = 0) -> None:
        """A pending pod appeared or changed: try it (after its back-off, if it failed before)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(key, priority)
            self._activate(entry)
            return
        entry.priority = priority
        if entry.where == "unschedulable":
            self._requeue(entry)

    def delete(self, key: str) -> None:
        """The pod is gone or was bound: forget it and its failures."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            entry.where = "deleted"
            self._unschedulable.pop(key, None)

    def done(self, key: str) -> None:
        """The pod was scheduled."""
        self.delete(key)

    def unschedulable(self, key: str) -> None:
        """The pod fit nowhere: park it until the cluster changes."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.attempts += 1
        entry.last_failure = entry.parked_at = self.clock()
        entry.where = "unschedulable"
        self._unschedulable.pop(key, None)
        self._unschedulable[key] = entry

    def backoff(self, key: str) -> None:
        """Scheduling or binding the pod failed for another reason (an error): retry later."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.attempts += 1
        entry.last_failure = self.clock()
        self._unschedulable.pop(key, None)
        self._to_backoff(entry)

    def move_all(self) -> int:
        """The cluster changed in a way that may let parked pods fit: retry them all (each
        after what remains of its back-off). Returns how many were moved."""
        parked = list(self._unschedulable.values())
        for entry in parked:
            self._requeue(entry)
        return len(parked)

    # -- taking ------------------------------------------------------------------------------

    def pop(self) -> str | None:
        """The next pod to try (it is then "being scheduled" until done, unschedulable or
        backoff), or None when nothing is ready now."""
        self._flush()
        while self._active:
            _, _, key = heapq.heappop(self._active)
            entry = self._entries.get(key)
            if entry is not None and entry.where == "active":
                entry.where = "scheduling"
                return key
        return None

    def next_ready_in(self) -> float | None:
        """Seconds until a waiting pod becomes ready (0: one is ready now; None: none will be
        without a cluster change or an `add`)."""
        self._flush()
        if self._live_head(self._active, "active"):
            return 0.0
        soonest = None
        if self._live_head(self._backoff, "backoff"):
            soonest = self._backoff[0][0]
        for entry in self._unschedulable.values():
            deadline = entry.parked_at + self.unschedulable_timeout
            soonest = deadline if soonest is None else min(soonest, deadline)
            break  # parked in order: the first is the oldest
        return None if soonest is None else max(0.0, soonest - self.clock())

    def counts(self) -> dict[str, int]:
        """Pods per place: active, backoff, unschedulable (for the pending_pods metric)."""
        out = {"active": 0, "backoff": 0, "unschedulable": 0}
        for entry in self._entries.values():
            if entry.where in out:
                out[entry.where] += 1
        return out

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    # -- internals ---------------------------------------------------------------------------

    def backoff_duration(self, attempts: int) -> float:
        if attempts <= 0:
            return 0.0
        return min(self.initial_backoff * 2 ** (attempts - 1), self.max_backoff)

    def _live_head(self, heap: list, where: str) -> bool:
        while heap:
            entry = self._entries.get(heap[0][2])
            if entry is not None and entry.where == where:
                return True
            heapq.heappop(heap)
        return False

    def _activate(self, entry: _Entry) -> None:
        entry.where = "active"
        self._unschedulable.pop(entry.key, None)
        heapq.heappush(self._active, (-entry.priority, next(self._seq), entry.key))

    def _to_backoff(self, entry: _Entry) -> None:
        entry.where = "backoff"
        self._unschedulable.pop(entry.key, None)
        ready_at = entry.last_failure + self.backoff_duration(entry.attempts)
        heapq.heappush(self._backoff, (ready_at, next(self._seq), entry.key))

    def _requeue(self, entry: _Entry) -> None:
        if self.clock() < entry.last_failure + self.backoff_duration(entry.attempts):
            self._to_backoff(entry)
        else:
            self._activate(entry)

    def _flush(self) -> None:
        now = self.clock()
        while self._live_head(self._backoff, "backoff") and self._backoff[0][0] <= now:
            _, _, key = heapq.heappop(self._backoff)
            self._activate(self._entries[key])
        while self._unschedulable:
            entry = next(iter(self._unschedulable.values()))
            if now - entry.parked_at < self.unschedulable_timeout:
                break
            self._requeue(entry)
