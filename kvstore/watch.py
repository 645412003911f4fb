"""Watch hub: wakes the watchers an event concerns; the watchers read the events from history.

A watcher never holds a private buffer of events. It keeps the next index it wants, scans the
replicated history from there (under the state lock) and, when it has seen everything, sleeps
until the hub says something under its key changed. So a slow stream reader cannot make the hub
drop or reorder events: it only falls behind, and if it falls out of the history window it gets
etcd's 401 "event index cleared" and resumes with a fresh list — exactly what etcd users expect.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections import defaultdict

from .tree import Event


class Waiter:
    __slots__ = ("key", "recursive", "wake")

    def __init__(self, key: str, recursive: bool):
        self.key = key
        self.recursive = recursive
        self.wake = asyncio.Event()


class WatchHub:
    def __init__(self) -> None:
        self._by_key: dict[str, set[Waiter]] = defaultdict(set)
        self.count = 0

    def add(self, w: Waiter) -> None:
        self._by_key[w.key].add(w)
        self.count += 1

    def remove(self, w: Waiter) -> None:
        ws = self._by_key.get(w.key)
        if ws is not None and w in ws:
            ws.discard(w)
            self.count -= 1
            if not ws:
                del self._by_key[w.key]

    def publish(self, events: list[Event]) -> None:
        """Called in the event loop, in commit order, after the events are in the history."""
        by_key = self._by_key
        if not by_key:
            return
        for ev in events:
            key = ev.key
            path = key
            # The key itself and every ancestor directory (recursive watchers there).
            while True:
                ws = by_key.get(path)
                if ws:
                    for w in ws:
                        w.wake.set()
                if path == "/":
                    break
                path = posixpath.dirname(path)
            if ev.dir_deleted:
                prefix = key + "/"
                for wkey, ws in by_key.items():
                    if wkey.startswith(prefix):
                        for w in ws:
                            w.wake.set()

    def wake_all(self) -> None:
        for ws in self._by_key.values():
            for w in ws:
                w.wake.set()
